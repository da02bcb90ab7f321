"""Ring buffer of the last T frames' encoder features; assembles decoder inputs.

Each frame is encoded once (``encode`` with N=1); its per-frame tensors
(leading dim 1) are kept here until the frame leaves the window. A clip is
the concatenation of the buffered frames along dim 0 ([T,...]); shared
tensors (spatial_shapes, level_start_index) come from the newest frame.
"""
from __future__ import annotations

from collections import deque
from typing import Dict

import numpy as np

from .contract import DECODER_INPUTS, PER_FRAME_FEATURES


class FeatureRing:
    def __init__(self, num_frames: int):
        self.T = num_frames
        self._frames: deque = deque(maxlen=num_frames)

    def __len__(self) -> int:
        return len(self._frames)

    def push(self, feats: Dict[str, np.ndarray]) -> None:
        """Add one encoded frame (per-frame tensors with leading dim 1, valid_hw included: backends
        return it with the encoder outputs). The oldest frame drops out."""
        missing = [n for n in DECODER_INPUTS if n not in feats]
        if missing:
            raise KeyError(f"encoder output lacks {missing}")
        item = {}
        for n in DECODER_INPUTS:
            a = feats[n]
            if n in PER_FRAME_FEATURES and a.shape[0] != 1:
                raise ValueError(f"push one frame at a time: {n} has leading dim {a.shape[0]}")
            item[n] = a
        self._frames.append(item)

    def clip(self, last: int = 0) -> Dict[str, np.ndarray]:
        """Decoder inputs for the buffered frames (only the newest ``last`` ones if > 0), padded to T
        by repeating the last frame (videos shorter than T; the truncated last clip of T-1
        frames). Per-frame tensors [T,...]."""
        if not self._frames:
            raise ValueError("no frames buffered")
        frames = list(self._frames)
        if last > 0:
            frames = frames[-last:]
        frames += [frames[-1]] * (self.T - len(frames))
        out = {n: np.concatenate([f[n] for f in frames], axis=0) for n in PER_FRAME_FEATURES}
        out["spatial_shapes"] = frames[-1]["spatial_shapes"]
        out["level_start_index"] = frames[-1]["level_start_index"]
        return out
