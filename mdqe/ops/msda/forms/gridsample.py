"""Export form "gridsample": pure ONNX with, per level, a dynamic ``Slice`` of ``value``, ``Reshape``
to ``[N*M, D, H_l, W_l]`` and ``GridSample`` (bilinear, zeros, align_corners=0; opset >= 16),
weighted sum over levels and points. Eagerly it computes the op's numbers.
"""
from __future__ import annotations

import torch

from .level_sizes import level_sizes


def ms_deform_attn_gridsample_form(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """grid_sample form written for tracing: level sizes and offsets stay traced values (dynamic
    Slice / Reshape in the graph), only M, D, L, P (fixed by the weights) are Python ints.
    Level sizes come from `level_sizes_hint` when one is active, else from the values of
    `spatial_shapes`. `level_start_index` must be the exclusive cumulative sum of H_l*W_l (the op's
    definition; true for every caller in the model, including TCA's t*H*W): the offsets are
    recomputed as running sums (no CumSum in shape computations)."""
    del level_start_index
    M, D = int(value.shape[2]), int(value.shape[3])
    L, P = int(sampling_locations.shape[3]), int(sampling_locations.shape[4])
    Lq = sampling_locations.shape[1]
    sizes = level_sizes(spatial_shapes, L)
    grids = 2.0 * sampling_locations - 1.0                                   # [N, Lq, M, L, P, 2]
    # [N, Lq, M, L, P, 2] -> [N, M, L, Lq, P, 2] -> [N*M, L, Lq, P, 2]
    grids = grids.permute(0, 2, 3, 1, 4, 5).reshape(-1, L, Lq, P, 2)
    locs = sampling_locations.permute(0, 2, 3, 1, 4, 5).reshape(-1, L, Lq, P, 2)   # [N*M, L, Lq, P, 2]
    value_t = value.permute(0, 2, 3, 1)                                       # [N, M, D, S]
    sampled, valids = [], []
    start = 0
    for lvl in range(L):
        h, w = sizes[lvl]
        v = value_t[..., start:start + h * w]                                   # dynamic Slice
        start = start + h * w
        v = v.reshape(-1, D, h, w)                                             # [N*M, D, H_l, W_l]
        # a sample with no corner inside the map (or non-finite) contributes exactly 0, whatever its
        # weight (mdqe.ops.msda semantics): grid point far outside, weight 0
        px = locs[:, lvl, ..., 0] * w - 0.5
        py = locs[:, lvl, ..., 1] * h - 0.5
        valid = (px > -1) & (py > -1) & (px < w) & (py < h)                     # [N*M, Lq, P]
        g = torch.where(valid.unsqueeze(-1), grids[:, lvl], torch.full_like(grids[:, lvl], -4.0))
        sampled.append(torch.nn.functional.grid_sample(
            v, g, mode="bilinear", padding_mode="zeros", align_corners=False))  # [N*M, D, Lq, P]
        valids.append(valid)
    stacked = torch.stack(sampled, dim=-2)                                     # [N*M, D, Lq, L, P]
    w_ = attention_weights.permute(0, 2, 1, 3, 4).reshape(-1, 1, Lq, L, P)    # [N*M, 1, Lq, L, P]
    valid = torch.stack(valids, dim=-2).unsqueeze(1)                           # [N*M, 1, Lq, L, P]
    w_ = torch.where(valid, w_, torch.zeros_like(w_))
    out = (stacked * w_).sum(dim=(-1, -2))                                     # [N*M, D, Lq]
    return out.reshape(-1, M * D, Lq).transpose(1, 2)                          # [N, Lq, M*D]
