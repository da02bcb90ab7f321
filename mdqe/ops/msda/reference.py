"""Slow, obviously-right reference for MSDeformAttn (one sample, head, level, point at a time).

Contract (docs/INTERFACES.md section 2): bilinear sampling with align_corners=False, i.e. the
continuous pixel coordinate of a normalised location `loc` on a map of width W is `loc * W - 0.5`;
the four neighbouring pixels are weighted bilinearly, and a neighbour outside the map contributes 0.
Numpy only (no torch). Reusable by every implementation's tests:
`from mdqe.ops.msda.reference import ms_deform_attn_reference`.
"""
from __future__ import annotations

import math

import numpy as np


def _as_np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def bilinear_zero_pad(fmap: np.ndarray, x: float, y: float) -> np.ndarray:
    """fmap [H, W, D]; (x, y) in pixel units (pixel centres at integers) -> [D]."""
    H, W, D = fmap.shape
    x0, y0 = math.floor(x), math.floor(y)
    out = np.zeros(D, dtype=np.float64)
    for yy, wy in ((y0, 1.0 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1.0 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < H and 0 <= xx < W:
                out += wy * wx * fmap[yy, xx]
    return out


def ms_deform_attn_reference(value, spatial_shapes, level_start_index, sampling_locations,
                             attention_weights) -> np.ndarray:
    """value [N,S,M,D], spatial_shapes [L,2], level_start_index [L], sampling_locations [N,Lq,M,L,P,2],
    attention_weights [N,Lq,M,L,P] (torch or numpy) -> float64 numpy [N, Lq, M*D]."""
    value = _as_np(value).astype(np.float64)
    shapes = _as_np(spatial_shapes).astype(np.int64)
    starts = _as_np(level_start_index).astype(np.int64)
    loc = _as_np(sampling_locations).astype(np.float64)
    attn = _as_np(attention_weights).astype(np.float64)
    N, S, M, D = value.shape
    _, Lq, _, L, P, _ = loc.shape
    out = np.zeros((N, Lq, M, D), dtype=np.float64)
    for n in range(N):
        for m in range(M):
            for lvl in range(L):
                H, W = int(shapes[lvl, 0]), int(shapes[lvl, 1])
                s = int(starts[lvl])
                fmap = value[n, s:s + H * W, m].reshape(H, W, D)
                for q in range(Lq):
                    for p in range(P):
                        x = loc[n, q, m, lvl, p, 0] * W - 0.5
                        y = loc[n, q, m, lvl, p, 1] * H - 0.5
                        out[n, q, m] += attn[n, q, m, lvl, p] * bilinear_zero_pad(fmap, x, y)
    return out.reshape(N, Lq, M * D)
