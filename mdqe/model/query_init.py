"""Query initialization (paper Sec. 3.2): grid-guided query selection and inter-frame association.

Default rule = the authors' code (`mdqe/models/transformer_dec.py`, grid_guided_query_selection),
`grid_select_authors`: the per-pixel score (sigmoid, max over classes) of the whole (padded)
level-0 map [H0, W0] is bilinearly upsampled (align_corners=False) to H_up = (2*H0 // n + 1) * n,
W_up = (2*W0 // n + 1) * n and cut into n x n equal cells of (H_up/n) x (W_up/n); each cell's argmax
(first index on ties, row-major inside the cell) gives the flat index idx = row * W_up + col and the
point x = col / W_up, y = (idx / W_up) / H_up with TRUE division, i.e. y = (row + col / W_up) / H_up
(the released weights were trained with this quirk).

Non-default option (ModelConfig.query_select="floor_centres", this project's earlier rule),
`grid_peak_select`: cells by floor partition of the level-0 map itself, cell (i, j) covering rows
[floor(i*H0/n), floor((i+1)*H0/n)) and columns [floor(j*W0/n), floor((j+1)*W0/n)), points at
pixel centres ((col + 0.5) / W0, (row + 0.5) / H0).
Cell q = i*n + j (row-major) in both.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F

from ..tracing import exporting


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


def upsampled_size(h, w, n: int):
    """(H_up, W_up) = ((2h // n + 1) * n, (2w // n + 1) * n), the authors' upsampled score-map size."""
    return (2 * h // n + 1) * n, (2 * w // n + 1) * n


def grid_select_authors(score: torch.Tensor, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The authors' grid-guided query selection.

    score [N, H, W] (sigmoid probabilities, max over classes) -> (flat index row * W_up + col into the
    upsampled map [N, n*n] int64, points (x, y) [N, n*n, 2] float32: x = col / W_up,
    y = (idx / W_up) / H_up, true division). Works on symbolic sizes while exporting.
    """
    N, H, W = score.shape
    H_up, W_up = upsampled_size(H, W, n)
    r, t = H_up // n, W_up // n
    up = F.interpolate(score[:, None].float(), size=(H_up, W_up), mode="bilinear", align_corners=False)
    cells = up.reshape(N, n, r, n, t).permute(0, 1, 3, 2, 4).reshape(N, n * n, r * t)
    a = cells.argmax(dim=-1)                                                     # [N, Q] first max
    q = torch.arange(n * n, device=score.device, dtype=torch.int64)
    rows = torch.div(q, n, rounding_mode="floor")[None] * r + torch.div(a, t, rounding_mode="floor")
    cols = (q % n)[None] * t + a % t
    idx = rows * W_up + cols
    w_up = _scalar_like(W_up, up)
    h_up = _scalar_like(H_up, up)
    x = cols.to(torch.float32) / w_up
    y = idx.to(torch.float32) / w_up / h_up
    return idx, torch.stack((x, y), dim=-1)


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
    |col_q - col_k| <= w * |t - c| and |row_q - row_k| <= w * |t - c| with w = half_window a float
    (the authors: w = window at training, window / 2 at inference, e.g. 3.5),
    c = (T-1)//2 the key frame (the window grows with temporal distance; frame c matches itself)."""
    idx = torch.arange(n * n, device=device)
    rc = torch.stack((idx // n, idx % n), dim=-1)                              # [Q, 2]
    rel = (rc[:, None, :] - rc[None, :, :]).abs()                              # [Q, Q, 2]
    itv = (torch.arange(num_frames, device=device) - (num_frames - 1) // 2).abs().to(torch.float32)
    return (rel[None].to(torch.float32) > half_window * itv.view(-1, 1, 1, 1)).any(dim=-1)


def associate(embeds: torch.Tensor, n: int, half_window: float) -> torch.Tensor:
    """Inter-frame query association (the authors' inter_frame_query_association).

    embeds [B, T, Q, E] (phi_e embeddings of the grid-selected queries) -> index [B, T, Q] int64:
    for key-frame cell k, the query of frame t with the largest dot product (the authors call it
    cos_sim; it is not normalised) with key query k among the queries allowed by `association_mask`;
    their softmax over queries is kept so ties resolve as theirs do (first index).
    """
    B, T, Q, E = embeds.shape
    ct = (T - 1) // 2
    sim = torch.einsum("btqe,bke->btqk", embeds, embeds[:, ct])                 # [B, T, Q, K]
    forbid = association_mask(n, T, half_window, embeds.device)                # [T, Q, K]
    sim = sim.masked_fill(forbid[None], float("-inf")).softmax(dim=2)
    return sim.argmax(dim=2)                                                   # [B, T, K]
