"""Small building blocks shared by the model: MLP, sine position encoding, box helpers."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class MLP(nn.Module):
    """`num_layers` Linear layers with GELU between them. [..., in_dim] -> [..., out_dim]."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.gelu(x)
        return x


def sine_position_encoding(n: int, h: int, w: int, dim: int, like: torch.Tensor,
                           temperature: float = 10000.0) -> torch.Tensor:
    """Normalised 2-D sine encoding of an unpadded map (DETR style, scale 2*pi).

    Returns [n, dim, h, w]: the first dim/2 channels encode y, the rest x;
    within each half channels alternate sin/cos. `h`, `w` may be symbolic sizes.
    """
    half = dim // 2
    eps = 1e-6
    scale = 2 * math.pi
    ys = (torch.arange(h, device=like.device, dtype=like.dtype) + 1.0) / (h + eps) * scale  # [h]
    xs = (torch.arange(w, device=like.device, dtype=like.dtype) + 1.0) / (w + eps) * scale  # [w]
    idx = torch.arange(half, device=like.device, dtype=like.dtype)
    dim_t = temperature ** (2 * torch.div(idx, 2, rounding_mode="floor") / half)              # [half]
    py = ys[:, None] / dim_t                                                                   # [h, half]
    px = xs[:, None] / dim_t                                                                   # [w, half]
    py = torch.stack((py[:, 0::2].sin(), py[:, 1::2].cos()), dim=2).flatten(1)               # [h, half]
    px = torch.stack((px[:, 0::2].sin(), px[:, 1::2].cos()), dim=2).flatten(1)               # [w, half]
    pos = torch.cat((py[:, None, :].expand(-1, px.shape[0], -1),
                     px[None, :, :].expand(py.shape[0], -1, -1)), dim=2)                      # [h, w, dim]
    return pos.permute(2, 0, 1).unsqueeze(0).expand(n, -1, -1, -1)


def pixel_centres(h, w, like: torch.Tensor) -> torch.Tensor:
    """Normalised (x, y) centres of the cells of an h x w map, row-major. -> [h*w, 2]."""
    ys = (torch.arange(h, device=like.device, dtype=like.dtype) + 0.5) / h
    xs = (torch.arange(w, device=like.device, dtype=like.dtype) + 0.5) / w
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx.reshape(-1), gy.reshape(-1)), dim=-1)


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """logit(x) with x clamped to [0, 1] and both terms clamped at eps."""
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def box_cxcywh_to_xyxy(b: torch.Tensor) -> torch.Tensor:
    """[..., 4] (cx, cy, w, h) -> [..., 4] (x0, y0, x1, y1)."""
    cx, cy, w, h = b.unbind(-1)
    return torch.stack((cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h), dim=-1)


def box_xyxy_to_cxcywh(b: torch.Tensor) -> torch.Tensor:
    """[..., 4] (x0, y0, x1, y1) -> [..., 4] (cx, cy, w, h)."""
    x0, y0, x1, y1 = b.unbind(-1)
    return torch.stack(((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0), dim=-1)
