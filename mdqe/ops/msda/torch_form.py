"""impl="torch": MSDeformAttn with `F.grid_sample` (differentiable; the training path and the
fallback of impl="auto"). Shapes as in `mdqe.ops.msda`.

While exporting (`mdqe.tracing.exporting`) level sizes and offsets stay traced values (Slice /
Reshape from `spatial_shapes`); eagerly they are read on the host once per call and
`level_start_index` is checked against them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ...tracing import exporting
from .checks import level_start_message


def ms_deform_attn_torch(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """value [N, S, M, D], spatial_shapes [L, 2], level_start_index [L], sampling_locations
    [N, Lq, M, L, P, 2], attention_weights [N, Lq, M, L, P] -> [N, Lq, M*D] (grid_sample form)."""
    N, S, M, D = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    grids = 2.0 * sampling_locations - 1.0
    # [N, Lq, M, L, P] -> [N*M, 1, Lq, L, P]: one weight per sampled point
    weights = attention_weights.permute(0, 2, 1, 3, 4).reshape(N * M, 1, Lq, L, P)
    out = None
    tracing = exporting()
    if not tracing:
        # one host read for all levels (free for CPU tensors; one sync instead of several per level on CUDA)
        sizes, starts = _host_levels(spatial_shapes, level_start_index)
    expected_start = 0
    for lvl in range(L):
        if tracing:
            h, w = spatial_shapes[lvl, 0], spatial_shapes[lvl, 1]
            start = level_start_index[lvl]
            v = value[:, start:start + h * w]
        else:
            (h, w), start = sizes[lvl], starts[lvl]    # host values this form reads anyway
            if start != expected_start:
                raise ValueError(level_start_message(lvl, start, expected_start))
            expected_start += h * w
            v = value.narrow(1, start, h * w)
        # [N, HW, M, D] -> [N*M, D, H, W]
        v = v.permute(0, 2, 3, 1).reshape(N * M, D, h, w)
        # [N, Lq, M, P, 2] -> [N*M, Lq, P, 2]
        g = grids[:, :, :, lvl].permute(0, 2, 1, 3, 4).reshape(N * M, Lq, P, 2)
        # samples that contribute nothing (non-finite, or no bilinear corner inside the map) get a grid
        # point far outside (grid_sample then reads nothing) and weight 0: exactly 0, as in the C++ core
        loc = sampling_locations[:, :, :, lvl].permute(0, 2, 1, 3, 4).reshape(N * M, Lq, P, 2)
        valid = _valid_samples(loc, h, w)                                          # [N*M, Lq, P]
        g = torch.where(valid.unsqueeze(-1), g, torch.full_like(g, -4.0))
        wl = weights[..., lvl, :]                                                  # [N*M, 1, Lq, P]
        wl = torch.where(valid.unsqueeze(1), wl, torch.zeros_like(wl))
        sampled = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)  # [N*M, D, Lq, P]
        # accumulate level by level: no [N*M, D, Lq, L, P] intermediate
        term = (sampled * wl).sum(-1)  # [N*M, D, Lq]
        out = term if out is None else out + term
    return out.reshape(N, M * D, Lq).transpose(1, 2).contiguous()


def _host_levels(spatial_shapes, level_start_index):
    """([(H_l, W_l)], [start_l]) as Python ints, read in one device-to-host copy."""
    if spatial_shapes.device == level_start_index.device:
        flat = torch.cat([spatial_shapes.reshape(-1), level_start_index.reshape(-1).to(spatial_shapes.dtype)]).tolist()
    else:
        flat = spatial_shapes.reshape(-1).tolist() + level_start_index.reshape(-1).tolist()
    L = spatial_shapes.shape[0]
    return [(flat[2 * i], flat[2 * i + 1]) for i in range(L)], flat[2 * L:]


def _valid_samples(loc, h, w):
    """[..., 2] normalised locations (x, y) -> bool [...]: the sample is finite and at least one of
    its bilinear corners lies inside the h x w map, i.e. the pixel coordinate p = loc * size - 0.5
    (float32, as the C++ core computes it) satisfies -1 < p < size (msda_corners_at, msda_core.h)."""
    loc = loc.float()
    px = loc[..., 0] * w - 0.5
    py = loc[..., 1] * h - 0.5
    # written so that NaN compares false
    return (px > -1.0) & (py > -1.0) & (px < w) & (py < h)
