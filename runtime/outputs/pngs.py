"""Optional per-instance mask PNGs: ``<output>/masks/track_<id>/<frame:06d>.png`` (0/255), written atomically."""
from __future__ import annotations

import os

import cv2
import numpy as np

from ..atomic import write_bytes


class MaskPngWriter:
    def __init__(self, output_dir: str):
        self.root = os.path.join(output_dir, "masks")
        self.count = 0

    def write(self, frame: int, track_id: int, mask: np.ndarray) -> None:
        ok, buf = cv2.imencode(".png", mask.astype(np.uint8) * 255)
        if not ok:
            raise RuntimeError("PNG encoding failed")
        write_bytes(os.path.join(self.root, f"track_{track_id:04d}", f"{frame:06d}.png"), buf.tobytes())
        self.count += 1
