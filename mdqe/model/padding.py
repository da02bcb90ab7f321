"""Padding masks, as the authors' code derives them (github.com/MinghanLi/MDQE_CVPR2023).

Frames are padded bottom/right (to a multiple of 32). `valid_hw` [N, 2] int64 holds each frame's
valid (unpadded) height and width in pixels. Per feature level (strides 8/16/32 for the backbone
levels, `mdqe.py` MaskedBackbone.mask_out_padding) ceil(h / stride) rows and ceil(w / stride)
columns are valid; every extra level (stride 64) takes the stride-32 mask resized with
nearest interpolation (`models/mdqe.py` forward_deformable_enc). Masks here are True = VALID
(the authors store the complement). All of it works on symbolic sizes while exporting.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

BACKBONE_STRIDES = (8, 16, 32)


def full_valid_hw(images: torch.Tensor) -> torch.Tensor:
    """[N, 2] int64: every pixel of images [N, 3, H, W] valid."""
    hw = torch._shape_as_tensor(images)[-2:].to(torch.int64) if torch.jit.is_tracing() else \
        torch.tensor(tuple(images.shape[-2:]), dtype=torch.int64, device=images.device)
    return hw.view(1, 2).expand(images.shape[0], 2)


def _nearest_1d(v: torch.Tensor, size) -> torch.Tensor:
    """[N, n] float 0/1 -> [N, size], F.interpolate(mode='nearest') (the 2-D nearest resize of a
    separable mask is the product of the two 1-D resizes)."""
    return F.interpolate(v[:, None, :], size=size, mode="nearest")[:, 0, :]


def level_valid(valid_hw: torch.Tensor, level_sizes: Sequence[Tuple[int, int]]
                ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Per level (rows [N, h_l], cols [N, w_l]) float 0/1 validity: the level mask is rows x cols."""
    out = []
    vh, vw = valid_hw[:, 0:1], valid_hw[:, 1:2]
    for lvl, (h, w) in enumerate(level_sizes):
        if lvl < len(BACKBONE_STRIDES):
            s = BACKBONE_STRIDES[lvl]
            ar_h = torch.arange(h, device=valid_hw.device, dtype=torch.int64)
            ar_w = torch.arange(w, device=valid_hw.device, dtype=torch.int64)
            rows = (ar_h[None, :] < torch.div(vh + (s - 1), s, rounding_mode="floor")).to(torch.float32)
            cols = (ar_w[None, :] < torch.div(vw + (s - 1), s, rounding_mode="floor")).to(torch.float32)
        else:
            r32, c32 = out[len(BACKBONE_STRIDES) - 1]
            rows, cols = _nearest_1d(r32, h), _nearest_1d(c32, w)
        out.append((rows, cols))
    return out


def flat_valid(valid: List[Tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """[N, S] bool, levels flattened row-major and concatenated (the memory layout)."""
    return torch.cat([(r[:, :, None] * c[:, None, :]).flatten(1) for r, c in valid], 1) > 0.5


def masked_sine_position_encoding(rows: torch.Tensor, cols: torch.Tensor, dim: int,
                                  temperature: float = 10000.0) -> torch.Tensor:
    """The authors' PositionEmbeddingSine(normalize=True) on a padded map, in closed form.

    rows [N, h], cols [N, w] float 0/1 validity prefixes -> [N, dim, h, w]. Theirs: y = cumsum of the
    valid mask down the rows divided by its last value (+1e-6), times 2*pi (x likewise), i.e.
    y[r, c] = min(r + 1, vh) * valid_col(c) / (vh * valid_col(c) + 1e-6) * 2*pi, integers exact in
    float32, so this equals their cumsum bit for bit; padded columns get y = 0 (sin 0, cos 1).
    """
    N, h = rows.shape
    w = cols.shape[1]
    half = dim // 2
    eps = 1e-6
    scale = 2 * math.pi
    vh = rows.sum(1, keepdim=True)                                                   # [N, 1]
    vw = cols.sum(1, keepdim=True)
    ar_h = torch.arange(h, device=rows.device, dtype=torch.float32)[None] + 1.0       # [1, h]
    ar_w = torch.arange(w, device=rows.device, dtype=torch.float32)[None] + 1.0
    ycum = torch.minimum(ar_h, vh)[:, :, None] * cols[:, None, :]                    # [N, h, w]
    xcum = torch.minimum(ar_w, vw)[:, None, :] * rows[:, :, None]                    # [N, h, w]
    y = ycum / (vh[:, :, None] * cols[:, None, :] + eps) * scale
    x = xcum / (vw[:, :, None] * rows[:, :, None] + eps) * scale
    idx = torch.arange(half, device=rows.device, dtype=torch.float32)
    dim_t = temperature ** (2 * torch.div(idx, 2, rounding_mode="floor") / half)     # [half]
    py = y[..., None] / dim_t
    px = x[..., None] / dim_t
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), dim=4).flatten(3)
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), dim=4).flatten(3)
    return torch.cat((py, px), dim=3).permute(0, 3, 1, 2)


def zero_padded(value: torch.Tensor, valid: Optional[torch.Tensor]) -> torch.Tensor:
    """value [B, S, ...] with the rows of padded tokens (valid [B, S] False) set to 0, as the authors'
    MSDeformAttn does (`value.masked_fill(input_padding_mask[..., None], 0)`) before sampling."""
    if valid is None:
        return value
    v = valid.view(tuple(valid.shape) + (1,) * (value.dim() - valid.dim()))
    return torch.where(v, value, torch.zeros((), dtype=value.dtype, device=value.device))
