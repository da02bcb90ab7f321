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

from typing import Dict

import numpy as np

from ..model_dir import ModelSpec


class Backend:
    """Base class; subclasses set ``kind`` and implement ``encode``/``decode``."""

    kind = "base"

    def __init__(self, spec: ModelSpec):
        self.spec = spec

    def encode(self, images: np.ndarray) -> Dict[str, np.ndarray]:  # pragma: no cover - interface
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
