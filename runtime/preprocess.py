"""Frame preprocessing (numpy + OpenCV): resize, normalise, pad (INTERFACES.md section 5).

The resize rule (``resized_size``, ``padded_size``) is part of the exported-model contract and
lives in ``runtime.contract``: scale so the shorter side becomes ``shorter_side`` unless the
longer side would then exceed ``max_size``; pad right/bottom with zeros (after normalisation) to
a multiple of ``size_divisibility``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import cv2
import numpy as np

from .contract import PreprocessSpec, padded_size, resized_size  # the resize rule lives in the contract


@dataclass(frozen=True)
class FrameGeometry:
    """Sizes of one frame through preprocessing, all (height, width)."""
    original: Tuple[int, int]   # decoded frame
    resized: Tuple[int, int]    # after the resize rule (valid image area)
    padded: Tuple[int, int]     # model input size (multiple of size_divisibility)


def geometry_for(height: int, width: int, spec: PreprocessSpec) -> FrameGeometry:
    """FrameGeometry for a decoded frame of size ``height`` x ``width``."""
    rh, rw = resized_size(height, width, spec.shorter_side, spec.max_size)
    return FrameGeometry((height, width), (rh, rw), padded_size(rh, rw, spec.size_divisibility))


class Preprocessor:
    """Turns decoded BGR uint8 frames [H0,W0,3] into model input [3,Hp,Wp] float32.

    All frames of a video share the geometry of the first frame; later frames
    of another size (a folder of mixed images) are first resized to it.
    """

    def __init__(self, spec: PreprocessSpec):
        self.spec = spec
        self.geometry: FrameGeometry | None = None
        self._mean = np.asarray(spec.mean, np.float32).reshape(1, 1, 3)
        self._inv_std = (1.0 / np.asarray(spec.std, np.float32)).reshape(1, 1, 3)

    def __call__(self, frame_bgr: np.ndarray) -> np.ndarray:
        """Preprocess one frame; returns a C-contiguous float32 array [3, Hp, Wp]."""
        if frame_bgr.ndim != 3 or frame_bgr.shape[2] != 3 or frame_bgr.dtype != np.uint8:
            raise ValueError(f"expected a BGR uint8 frame [H,W,3], got {frame_bgr.dtype} {frame_bgr.shape}")
        h0, w0 = frame_bgr.shape[:2]
        if self.geometry is None:
            self.geometry = geometry_for(h0, w0, self.spec)
        g = self.geometry
        if (h0, w0) != g.original:
            frame_bgr = cv2.resize(frame_bgr, (g.original[1], g.original[0]), interpolation=cv2.INTER_LINEAR)
        rh, rw = g.resized
        img = frame_bgr if (rh, rw) == (h0, w0) else cv2.resize(frame_bgr, (rw, rh), interpolation=cv2.INTER_LINEAR)
        if self.spec.color == "RGB":
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        x = (img.astype(np.float32) - self._mean) * self._inv_std
        out = np.zeros((3, g.padded[0], g.padded[1]), np.float32)
        out[:, :rh, :rw] = x.transpose(2, 0, 1)
        return out
