"""Mask postprocessing: stride-4 logits -> binary masks at the original frame size -> RLE."""
from __future__ import annotations

import warnings
from typing import List, Sequence

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from .preprocess import FrameGeometry


class MaskPostprocessor:
    """Turn stride-``stride`` mask logits [h,w] (valid area) into uint8 masks [H0,W0].

    As the authors do: upsample the logits x stride (bilinear), crop to the
    resized image area, resize (bilinear) to the original frame size, then
    threshold sigmoid > 0.5 (logit > 0).
    """

    def __init__(self, geometry: FrameGeometry, stride: int = 4):
        self.g = geometry
        self.stride = stride

    def valid_hw(self):
        """(h, w) of the valid (unpadded) area at mask resolution."""
        rh, rw = self.g.resized
        s = self.stride
        return (rh + s - 1) // s, (rw + s - 1) // s

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        h, w = logits.shape
        s = self.stride
        rh, rw = self.g.resized
        H0, W0 = self.g.original
        up = cv2.resize(np.ascontiguousarray(logits, np.float32), (w * s, h * s), interpolation=cv2.INTER_LINEAR)
        up = up[:rh, :rw]
        if (rh, rw) != (H0, W0):
            up = cv2.resize(up, (W0, H0), interpolation=cv2.INTER_LINEAR)
        return (up > 0).astype(np.uint8)


def encode_rles(masks: Sequence[np.ndarray]) -> List[dict]:
    """RLE-encode binary masks [H,W] (uint8) with pycocotools; ``counts`` as utf-8 str."""
    if not masks:
        return []
    stack = np.asfortranarray(np.stack(masks, axis=-1).astype(np.uint8))
    rles = mask_utils.encode(stack)
    out = []
    for r in rles:
        out.append({"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("utf-8")})
    return out


def decode_rle(rle: dict) -> np.ndarray:
    """Inverse of encode_rles for one mask: uint8 [H,W]."""
    r = {"size": rle["size"], "counts": rle["counts"].encode("utf-8") if isinstance(rle["counts"], str) else rle["counts"]}
    with warnings.catch_warnings():   # pycocotools' numpy-2 `copy=` DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(r)
