"""Query initialization (paper Sec. 3.2): grid-guided query selection and inter-frame association.

Grid cells (floor partition): for a level-0 map of H0 x W0 and an n x n grid, cell (i, j) covers
rows [floor(i*H0/n), floor((i+1)*H0/n)) and columns [floor(j*W0/n), floor((j+1)*W0/n)).
Every cell is non-empty when H0, W0 >= n; cells differ in size by at most one pixel.
Cell q = i*n + j (row-major). Ties inside a cell go to the first pixel in row-major order.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

from .layers import exporting


def _cell_membership(size, n: int, like: torch.Tensor) -> torch.Tensor:
    """[n, size] bool: pixel p belongs to cell c, floor partition of `size` pixels into n cells."""
    p = torch.arange(size, device=like.device)
    c = torch.arange(n, device=like.device)
    start = torch.div(c * size, n, rounding_mode="floor")
    end = torch.div((c + 1) * size, n, rounding_mode="floor")
    return (p[None, :] >= start[:, None]) & (p[None, :] < end[:, None])


def grid_peak_select(score: torch.Tensor, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Peak of each cell of an n x n grid.

    score [N, H, W] -> (flat index y*W + x [N, n*n] int64, points (x, y) at pixel centres,
    normalised [N, n*n, 2]). Separable: max over each cell's columns, then over its rows.
    """
    N, H, W = score.shape
    if not exporting() and (H < n or W < n):
        raise ValueError(f"grid selection needs a level-0 map of at least {n}x{n}, got {H}x{W}")
    neg = torch.finfo(score.dtype).min
    col_in = _cell_membership(W, n, score)                                   # [n, W]
    s1 = torch.where(col_in[None, None], score[:, :, None, :], neg)           # [N, H, n, W]
    m1, a1 = s1.max(dim=-1)                                                   # [N, H, n]: best column per row and column cell
    row_in = _cell_membership(H, n, score)                                   # [n, H]
    s2 = torch.where(row_in[None, :, :, None], m1[:, None, :, :], neg)       # [N, n, H, n]
    rows = s2.argmax(dim=2)                                                   # [N, n(row cell), n(col cell)]
    cols = a1.gather(1, rows)                                                 # [N, n, n]
    rows, cols = rows.reshape(N, n * n), cols.reshape(N, n * n)
    points = torch.stack(((cols.to(score.dtype) + 0.5) / W, (rows.to(score.dtype) + 0.5) / H), dim=-1)
    return rows * W + cols, points


def _scalar_like(v, ref: torch.Tensor) -> torch.Tensor:
    """A level size (Python int, or a 0-d traced tensor while exporting) as a tensor for min/max."""
    # torch.full: a fill kernel on a GPU, not a blocking host-to-device copy (CUDA-graph capturable)
    return v.to(ref.dtype) if isinstance(v, torch.Tensor) else torch.full((), v, dtype=ref.dtype, device=ref.device)


def sample_level_border(fmap: torch.Tensor, h, w, points: torch.Tensor) -> torch.Tensor:
    """Bilinear sample with border padding (grid_sample(bilinear, border, align_corners=False)
    semantics) written with Gather ops, so exported graphs hold no GridSample.

    fmap [N, h*w, C] (one level, row-major), points [N, Q, 2] normalised (x, y) -> [N, Q, C].
    """
    N, _, C = fmap.shape
    x = points[..., 0] * w - 0.5
    y = points[..., 1] * h - 0.5
    x = torch.minimum(x.clamp(min=0), _scalar_like(w - 1, x))   # border: clip the coordinate
    y = torch.minimum(y.clamp(min=0), _scalar_like(h - 1, y))
    x0f, y0f = x.floor(), y.floor()
    lx, ly = x - x0f, y - y0f
    x0, y0 = x0f.long(), y0f.long()
    x1 = torch.minimum(x0 + 1, _scalar_like(w - 1, x0))
    y1 = torch.minimum(y0 + 1, _scalar_like(h - 1, y0))

    def corner(yi, xi):
        idx = (yi * w + xi).unsqueeze(-1).expand(N, -1, C)          # [N, Q, C]
        return torch.gather(fmap, 1, idx)

    lx, ly = lx.unsqueeze(-1), ly.unsqueeze(-1)
    return (corner(y0, x0) * ((1 - lx) * (1 - ly)) + corner(y0, x1) * (lx * (1 - ly))
            + corner(y1, x0) * ((1 - lx) * ly) + corner(y1, x1) * (lx * ly))


def sample_levels(memory: torch.Tensor, level_sizes: Sequence[Tuple[int, int]], points: torch.Tensor) -> torch.Tensor:
    """Content features at `points`: bilinear sample (border padding) of every level, averaged.

    memory [N, S, C], points [N, Q, 2] normalised (x, y) -> [N, Q, C].
    """
    acc = None
    start = 0
    for h, w in level_sizes:
        s = sample_level_border(memory[:, start:start + h * w], h, w, points)
        acc = s if acc is None else acc + s
        start = start + h * w
    return acc / len(level_sizes)


def association_mask(n: int, num_frames: int, half_window: float, device=None) -> torch.Tensor:
    """[T, Q, Q] bool, True = forbidden: frame t's query q may match central cell k only if
    |col_q - col_k| <= half_window * |t - c| and |row_q - row_k| <= half_window * |t - c|,
    c = (T-1)//2 the central frame (the window grows with temporal distance; frame c matches itself)."""
    idx = torch.arange(n * n, device=device)
    rc = torch.stack((idx // n, idx % n), dim=-1)                              # [Q, 2]
    rel = (rc[:, None, :] - rc[None, :, :]).abs()                              # [Q, Q, 2]
    itv = (torch.arange(num_frames, device=device) - (num_frames - 1) // 2).abs().to(torch.float32)
    return (rel[None].to(torch.float32) > half_window * itv.view(-1, 1, 1, 1)).any(dim=-1)


def associate(embeds: torch.Tensor, n: int, half_window: float) -> torch.Tensor:
    """Inter-frame query association.

    embeds [B, T, Q, E] (phi_e embeddings of the grid-selected queries) -> index [B, T, Q] int64:
    for central-frame cell k, the query of frame t with the largest dot-product similarity to
    central query k among the queries allowed by `association_mask`.
    """
    B, T, Q, E = embeds.shape
    ct = (T - 1) // 2
    sim = torch.einsum("btqe,bke->btqk", embeds, embeds[:, ct])                 # [B, T, Q, K]
    forbid = association_mask(n, T, half_window, embeds.device)                # [T, Q, K]
    sim = sim.masked_fill(forbid[None], float("-inf"))
    return sim.argmax(dim=2)                                                   # [B, T, K]
