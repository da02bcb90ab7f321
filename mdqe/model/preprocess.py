"""Input preprocessing shared by the model, training and the torch backend (mdqe.backend).

Resize rule (docs/INTERFACES.md section 5): scale so the shorter side becomes `shorter_side`, unless the
longer side would then exceed `max_size`, in which case scale so the longer side is `max_size`;
then pad right/bottom to a multiple of `size_divisibility`.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F

from runtime.contract import resized_size

from ..config import get_config


def resize_shape(h: int, w: int, shorter_side: int, max_size: int) -> Tuple[int, int]:
    """(h, w) -> (nh, nw) after the resize rule of docs/INTERFACES.md section 5. One implementation
    serves training, export and the torch-free runtime: runtime.contract.resized_size."""
    return resized_size(h, w, shorter_side, max_size)


def normalize_and_pad(frames, cfg="tiny") -> torch.Tensor:
    """uint8 RGB [T, H, W, 3] (numpy or torch) or float RGB 0..255 [T, 3, H, W]
    -> float32 [T, 3, H', W'], (x - mean) / std, zero-padded right/bottom to a multiple of
    cfg.size_divisibility (padding is 0 after normalisation)."""
    cfg = get_config(cfg)
    x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if x.dim() != 4:
        raise ValueError(f"frames must be [T, H, W, 3] uint8 or [T, 3, H, W] float, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        if x.shape[-1] != 3:
            raise ValueError(f"uint8 frames must be [T, H, W, 3] RGB, got {tuple(x.shape)}")
        x = x.permute(0, 3, 1, 2)
    elif x.shape[1] != 3:
        raise ValueError(f"float frames must be [T, 3, H, W], got {tuple(x.shape)}")
    x = x.to(torch.float32)
    mean = torch.tensor(cfg.pixel_mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg.pixel_std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    d = cfg.size_divisibility
    H, W = x.shape[-2:]
    ph, pw = (-H) % d, (-W) % d
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    return x.contiguous()
