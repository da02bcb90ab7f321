"""The backend interface (INTERFACES.md section 6).

A backend runs the two exported graphs:

- ``encode(images [N,3,H,W] float32) -> dict`` with ``memory [N,S,C]``,
  ``spatial_shapes [L,2]`` int64, ``level_start_index [L]`` int64,
  ``mask_features [N,Dm,H/4,W/4]``, ``query_feat [N,Q,C]``,
  ``query_points [N,Q,2]``, ``query_embed [N,Q,E]`` (numpy arrays);
- ``decode(feats) -> dict`` where ``feats`` holds the same names with the
  per-frame ones stacked for the T frames of one clip (leading dim T); it
  returns ``pred_logits [Q,C]``, ``pred_boxes [Q,T,4]``, ``pred_masks
  [Q,T,h,w]`` (logits) and ``pred_embeds [Q,E]`` as float32 numpy arrays.
"""
from __future__ import annotations

from typing import Optional, Dict

import numpy as np

from ..contract import ModelSpec


def valid_hw_or_full(images: np.ndarray, valid_hw: Optional[np.ndarray]) -> np.ndarray:
    """valid_hw as int64 [N, 2], or every frame of images [N, 3, H, W] fully valid when None."""
    n, _, H, W = images.shape
    if valid_hw is None:
        return np.tile(np.array([[H, W]], np.int64), (n, 1))
    v = np.asarray(valid_hw, dtype=np.int64).reshape(-1, 2)
    if v.shape[0] != n or (v < 1).any() or (v[:, 0] > H).any() or (v[:, 1] > W).any():
        raise ValueError(f"valid_hw {v.tolist()} does not fit {n} frames of {H}x{W}")
    return v


class Backend:
    """Base class; subclasses set ``kind`` and implement ``encode``/``decode``."""

    kind = "base"

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    def encode(self, images: np.ndarray, valid_hw: Optional[np.ndarray] = None
               ) -> Dict[str, np.ndarray]:  # pragma: no cover - interface
        """images [N, 3, H, W] float32 (normalised, padded bottom/right), valid_hw [N, 2] int64 the valid
        (unpadded) height and width of each frame (None = unpadded) -> the encoder outputs plus
        ``valid_hw`` itself (a per-frame decoder input, kept by the clip buffer)."""
        raise NotImplementedError

    def decode(self, feats: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> Dict[str, str]:
        """Human-readable facts for reports: backend kind, device, providers..."""
        return {"backend": self.kind, "device": "cpu"}

    def close(self) -> None:
        """Release sessions/engines (optional)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
