"""Optional per-instance mask PNGs: ``<output>/masks/track_<id>/<frame:06d>.png`` (0/255).

PNGs are written into a staging folder ``<output>/.masks-*/`` while the video runs; ``commit()``
puts it in place of ``masks/`` at the end (an older run's ``masks/`` is replaced as a whole, never
mixed with this run's files); ``abort()`` removes it.
"""
from __future__ import annotations

import os
import shutil
import tempfile

import cv2
import numpy as np

from ..atomic import current_umask, write_bytes


class MaskPngWriter:
    def __init__(self, output_dir: str):
        self.final = os.path.join(output_dir, "masks")
        os.makedirs(output_dir, exist_ok=True)
        self.root = tempfile.mkdtemp(prefix=".masks-", dir=output_dir)
        self.count = 0

    def write(self, frame: int, track_id: int, mask: np.ndarray) -> None:
        ok, buf = cv2.imencode(".png", mask.astype(np.uint8) * 255)
        if not ok:
            raise RuntimeError("PNG encoding failed")
        write_bytes(os.path.join(self.root, f"track_{track_id:04d}", f"{frame:06d}.png"), buf.tobytes())
        self.count += 1

    def commit(self) -> None:
        """Replace ``masks/`` with this run's PNGs."""
        os.chmod(self.root, 0o777 & ~current_umask())
        if os.path.lexists(self.final):
            old = os.path.join(os.path.dirname(self.final), ".masks-old")  # a leftover name (runtime.output_dir)
            shutil.rmtree(old, ignore_errors=True)
            os.replace(self.final, old) if os.path.isdir(self.final) else os.remove(self.final)
            shutil.rmtree(old, ignore_errors=True)
        os.replace(self.root, self.final)

    def abort(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
