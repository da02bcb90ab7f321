"""Export form "onnx" (the default): pure ONNX, no GridSample and no custom node.

Per level the four bilinear corners of every sampling point are read with ONE ``Gather`` (axis 0)
from ``value`` viewed as ``[N*S*M, D]`` rows, weighted by (bilinear weight x attention weight, 0 for
a corner outside the map: zero padding, pixel = loc * size - 0.5 as align_corners=False) and summed.
Eagerly it computes the op's numbers (tests compare it with the torch form).
"""
from __future__ import annotations

import torch

from .level_sizes import level_sizes


def ms_deform_attn_gather_form(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """Bilinear MSDeformAttn with Gather, written for tracing (the default pure-ONNX form).

    value [N, S, M, D] is read as rows ``[Z + N*S*M + Z, D]`` (Z zero rows before and after): the
    row of (frame n, pixel s, head m) is ``Z + (n*S + s)*M + m``. Per level l (size h x w from
    `level_sizes_hint` or the values of `spatial_shapes`; offset = running sum of h*w, i.e.
    `level_start_index` by its definition): x = loc_x * w - 0.5, y = loc_y * h - 0.5; a point with
    x <= -1, y <= -1, x >= w or y >= h (or NaN) contributes nothing; else its corners
    (y0,x0) (y0,x0+1) (y0+1,x0) (y0+1,x0+1) get weight attn * bilinear weight, 0 for a corner
    outside the map (zero padding). One Gather reads the ``[N, Lq, M, 4P, D]`` corner rows (a corner
    outside the map addresses at most w+1 pixels outside its level: a row of a neighbouring level or
    of the zero pad, read with weight 0) and a MatMul with the ``[N, Lq, M, 1, 4P]`` weights sums
    them. Index arithmetic is int64 (exact in fp16 graphs too) and done once per point, the four
    corners being fixed row offsets (0, 1, w, w+1) * M. Returns [N, Lq, M*D].
    """
    del level_start_index
    N, S = value.shape[0], value.shape[1]
    M, D = int(value.shape[2]), int(value.shape[3])
    Lq = sampling_locations.shape[1]
    L, P = int(sampling_locations.shape[3]), int(sampling_locations.shape[4])
    sizes = level_sizes(spatial_shapes, L)
    pad_pixels = 2
    for _, w in sizes:
        pad_pixels = pad_pixels + w                                             # >= max w + 1
    rows = value.reshape(-1, D)                                                 # [N*S*M, D]
    pad = torch.zeros_like(rows[:1]).expand(pad_pixels * M, D)
    rows = torch.cat((pad, rows, pad), 0)                                       # [Z + N*S*M + Z, D]
    base = ((torch.arange(N, device=value.device).reshape(-1, 1, 1, 1) * S) * M
            + torch.arange(M, device=value.device).reshape(1, 1, M, 1) + pad_pixels * M)   # [N, 1, M, 1]
    out = None
    start = 0
    for lvl in range(L):
        h, w = sizes[lvl]
        loc = sampling_locations[:, :, :, lvl]                                  # [N, Lq, M, P, 2]
        x = loc[..., 0] * w - 0.5                                               # [N, Lq, M, P]
        y = loc[..., 1] * h - 0.5
        inside = (x > -1) & (y > -1) & (x < w) & (y < h)                        # False for NaN
        zero = torch.zeros_like(x)
        x = torch.where(inside, x, zero)        # a sample with no corner inside (or non-finite) reads
        y = torch.where(inside, y, zero)        # pixel (0, 0) with weight exactly 0 (mdqe.ops.msda semantics)
        x0f, y0f = torch.floor(x), torch.floor(y)
        fx, fy = x - x0f, y - y0f
        # per-axis weights, 0 for a column / row outside the map
        gx = torch.where(x0f >= 0, 1 - fx, zero)
        fx = torch.where(x0f < w - 1, fx, zero)
        gy = torch.where(y0f >= 0, 1 - fy, zero)
        fy = torch.where(y0f < h - 1, fy, zero)
        a = torch.where(inside, attention_weights[:, :, :, lvl], zero)          # [N, Lq, M, P]
        ay0, ay1 = a * gy, a * fy
        cw = torch.stack((ay0 * gx, ay0 * fx, ay1 * gx, ay1 * fx), dim=-1)     # [N, Lq, M, P, 4]
        p0 = y0f.long() * w + x0f.long()                                        # pixel of corner (y0, x0)
        idx0 = (p0 + start) * M + base                                          # [N, Lq, M, P]
        offsets = torch.stack((w * 0, w * 0 + 1, w + 0, w + 1)) * M             # rows of the 4 corners
        idx = (idx0.unsqueeze(-1) + offsets).reshape(N, Lq, M, 4 * P)
        corners = rows[idx]                                                     # Gather: [N, Lq, M, 4P, D]
        term = torch.matmul(cw.reshape(N, Lq, M, 1, 4 * P), corners)            # [N, Lq, M, 1, D]
        out = term if out is None else out + term
        start = start + h * w
    return out.reshape(N, Lq, M * D)
