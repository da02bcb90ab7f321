"""Grid-guided query selection and inter-frame association on hand-made inputs."""
import itertools

import pytest
import torch

from mdqe.model.query_init import associate, association_mask, grid_peak_select


def _cell_bounds(size, n):
    return [(c * size // n, (c + 1) * size // n) for c in range(n)]


def test_grid_selection_picks_each_cells_peak_uneven_cells():
    H, W, n = 10, 13, 3                       # rows split 0-3 / 3-6 / 6-10, cols 0-4 / 4-8 / 8-13
    assert _cell_bounds(H, n) == [(0, 3), (3, 6), (6, 10)]
    assert _cell_bounds(W, n) == [(0, 4), (4, 8), (8, 13)]
    g = torch.Generator().manual_seed(0)
    score = -torch.rand(1, H, W, generator=g) - 1.0          # background in (-2, -1)
    peaks = {}
    for (i, (r0, r1)), (j, (c0, c1)) in itertools.product(enumerate(_cell_bounds(H, n)),
                                                           enumerate(_cell_bounds(W, n))):
        # put the peak at the cell's last row / last column for some cells (boundary pixels)
        r = r1 - 1 if (i + j) % 2 == 0 else r0 + 1
        c = c1 - 1 if i % 2 == 0 else c0
        score[0, r, c] = float(i * n + j) * 0.1 - 0.5        # a peak; lower than other cells' peaks sometimes
        peaks[i * n + j] = (r, c)
    # a global maximum in cell (0, 0) must not leak into its neighbours
    score[0, 0, 0] = 10.0
    peaks[0] = (0, 0)
    idx, points = grid_peak_select(score, n)
    for q, (r, c) in peaks.items():
        assert idx[0, q].item() == r * W + c, f"cell {q}"
        assert points[0, q, 0].item() == pytest.approx((c + 0.5) / W)
        assert points[0, q, 1].item() == pytest.approx((r + 0.5) / H)


def test_grid_selection_matches_brute_force_on_random_maps():
    g = torch.Generator().manual_seed(1)
    for H, W, n in [(48, 80, 14), (14, 14, 14), (17, 23, 5)]:
        score = torch.randn(3, H, W, generator=g)
        idx, _ = grid_peak_select(score, n)
        for b in range(3):
            for i, (r0, r1) in enumerate(_cell_bounds(H, n)):
                for j, (c0, c1) in enumerate(_cell_bounds(W, n)):
                    cell = score[b, r0:r1, c0:c1]
                    k = int(cell.flatten().argmax())
                    r, c = r0 + k // (c1 - c0), c0 + k % (c1 - c0)
                    assert idx[b, i * n + j].item() == r * W + c


def test_grid_selection_rejects_small_maps():
    with pytest.raises(ValueError, match="at least 14x14"):
        grid_peak_select(torch.zeros(1, 10, 40), 14)


def test_association_mask_grows_with_temporal_distance():
    m = association_mask(n=5, num_frames=5, half_window=1.0)  # central frame 2
    k = 12                                                     # centre cell (row 2, col 2)
    allowed = [(~m[t, :, k]).nonzero().flatten().tolist() for t in range(5)]
    assert allowed[2] == [k]                                   # the central frame matches itself
    assert len(allowed[1]) == len(allowed[3]) == 9             # 3x3 window at distance 1
    assert len(allowed[0]) == len(allowed[4]) == 25            # 5x5 window at distance 2


def test_association_picks_most_similar_inside_window_never_outside():
    n, T, E = 4, 3, 8                                          # central frame 1
    g = torch.Generator().manual_seed(2)
    emb = torch.randn(1, T, n * n, E, generator=g) * 0.01
    key = torch.zeros(E)
    key[0] = 1.0
    k = 0                                                      # central cell (row 0, col 0)
    emb[0, 1, k] = key
    # frame 0: an identical embedding far away (row 3, col 3) - outside the window of half-width 1
    emb[0, 0, 15] = key * 5
    # inside the window: cell 5 (row 1, col 1) is the most similar, cell 1 less so
    emb[0, 0, 5] = key * 0.9
    emb[0, 0, 1] = key * 0.5
    # frame 2: the best inside the window is cell 4 (row 1, col 0)
    emb[0, 2, 4] = key * 0.7
    emb[0, 2, 2] = key * 3                                     # (row 0, col 2): outside
    idx = associate(emb, n, half_window=1.0)
    assert idx[0, 0, k].item() == 5
    assert idx[0, 2, k].item() == 4
    assert idx[0, 1].tolist() == list(range(n * n))            # central frame: identity
    # brute force: for every frame and cell, the argmax over allowed queries only
    mask = association_mask(n, T, 1.0)
    for t in range(T):
        for kk in range(n * n):
            allowed = (~mask[t, :, kk]).nonzero().flatten()
            sims = emb[0, t, allowed] @ emb[0, 1, kk]
            assert idx[0, t, kk].item() == allowed[int(sims.argmax())].item()
            assert not mask[t, idx[0, t, kk], kk]


def test_gather_sampler_equals_grid_sample_border():
    """sample_level_border (Gather form, exportable without GridSample) == grid_sample(border)."""
    import torch.nn.functional as F
    from mdqe.model.query_init import sample_level_border

    g = torch.Generator().manual_seed(3)
    for (h, w) in [(5, 7), (1, 1), (1, 6), (48, 80)]:
        N, C, Q = 2, 6, 50
        fmap = torch.randn(N, C, h, w, generator=g, dtype=torch.float64)
        pts = torch.rand(N, Q, 2, generator=g, dtype=torch.float64) * 1.6 - 0.3   # some outside [0, 1]
        pts[0, :4] = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.5 / w, 0.5 / h], [1 - 0.5 / w, 1.0]])
        ref = F.grid_sample(fmap, (2 * pts - 1).unsqueeze(1), mode="bilinear", padding_mode="border",
                            align_corners=False).squeeze(2).transpose(1, 2)
        got = sample_level_border(fmap.flatten(2).transpose(1, 2), h, w, pts)
        assert torch.allclose(got, ref, atol=1e-12), (h, w, (got - ref).abs().max())
