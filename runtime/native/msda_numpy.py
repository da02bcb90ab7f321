"""MSDeformAttn in numpy: the fallback kernel of the ONNX Runtime custom op (runtime/native/ort_ops.py)
when libmdqe_msda.so is not built. Torch-free; vectorised over everything but the levels."""
from __future__ import annotations

import numpy as np


def ms_deform_attn_numpy(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """Reference MSDeformAttn in numpy (slow path). Shapes as in docs/INTERFACES.md section 2;
    bilinear sampling, align_corners=False (pixel = loc * size - 0.5), zero padding.
    Computes in float32 (float64 accumulation per level) and returns float32 [N, Lq, M*D]."""
    value = np.asarray(value, dtype=np.float32)
    loc = np.asarray(sampling_locations, dtype=np.float32)
    aw = np.asarray(attention_weights, dtype=np.float32)
    shapes = np.asarray(spatial_shapes).astype(np.int64)
    starts = np.asarray(level_start_index).astype(np.int64)
    N, S, M, D = value.shape
    _, Lq, _, L, P, _ = loc.shape
    out = np.zeros((N, Lq, M, D), dtype=np.float64)
    n_idx = np.arange(N)[:, None, None, None]
    m_idx = np.arange(M)[None, None, :, None]
    for lvl in range(L):
        h, w = int(shapes[lvl, 0]), int(shapes[lvl, 1])
        s0 = int(starts[lvl])
        v = value[:, s0:s0 + h * w].reshape(N, h, w, M, D)
        x = loc[:, :, :, lvl, :, 0].astype(np.float64) * w - 0.5          # [N, Lq, M, P]
        y = loc[:, :, :, lvl, :, 1].astype(np.float64) * h - 0.5
        x0, y0 = np.floor(x), np.floor(y)
        fx, fy = x - x0, y - y0
        x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
        a = aw[:, :, :, lvl, :].astype(np.float64)                          # [N, Lq, M, P]
        for dy, dx, cw in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                           (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
            xi, yi = x0 + dx, y0 + dy
            inside = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            xc, yc = np.clip(xi, 0, w - 1), np.clip(yi, 0, h - 1)
            g = v[n_idx, yc, xc, m_idx]                                      # [N, Lq, M, P, D]
            wgt = np.where(inside, cw * a, 0.0)[..., None]
            out += (g * wgt).sum(axis=3)
    return out.reshape(N, Lq, M * D).astype(np.float32)
