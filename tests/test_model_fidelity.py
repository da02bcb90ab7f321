"""The authors' rules (github.com/MinghanLi/MDQE_CVPR2023) on hand-made inputs: grid-guided query
selection (upsampled equal cells, first index on ties, the true-division y quirk), the float
association window, padding masks (position encoding, zeroed padded values). docs/model.md."""
import math

import pytest
import torch
import torch.nn.functional as F

import mdqe
from mdqe.config import get_config
from mdqe.model.padding import flat_valid, level_valid, masked_sine_position_encoding
from mdqe.model.query_init import associate, association_mask, grid_select_authors, upsampled_size


def brute_force_select(score, n):
    """The rule written out literally: upsample, per cell the first maximum in row-major order."""
    N, H, W = score.shape
    H_up, W_up = (2 * H // n + 1) * n, (2 * W // n + 1) * n
    up = F.interpolate(score[:, None], size=(H_up, W_up), mode="bilinear", align_corners=False)[:, 0]
    r, t = H_up // n, W_up // n
    out = torch.zeros(N, n * n, dtype=torch.int64)
    for b in range(N):
        for i in range(n):
            for j in range(n):
                best, arg = None, None
                for rr in range(i * r, (i + 1) * r):
                    for cc in range(j * t, (j + 1) * t):
                        v = up[b, rr, cc].item()
                        if best is None or v > best:
                            best, arg = v, rr * W_up + cc
                out[b, i * n + j] = arg
    return out, H_up, W_up


def test_upsampled_size():
    assert upsampled_size(48, 80, 14) == (98, 168)      # 384x640 input, level 0 at stride 8
    assert upsampled_size(45, 80, 14) == (98, 168)
    assert upsampled_size(8, 20, 14) == (28, 42)
    assert upsampled_size(24, 40, 14) == (56, 84)


def test_ties_take_the_first_pixel_of_each_cell_and_y_has_the_quirk():
    n, H, W = 4, 10, 13
    H_up, W_up = upsampled_size(H, W, n)                 # (24, 28): cells of 6 x 7
    r, t = H_up // n, W_up // n
    idx, pts = grid_select_authors(torch.zeros(1, H, W), n)
    for i in range(n):
        for j in range(n):
            row, col = i * r, j * t                      # the cell's top-left pixel
            q = i * n + j
            assert idx[0, q].item() == row * W_up + col
            assert pts[0, q, 0].item() == pytest.approx(col / W_up, abs=0)
            # y = (idx / W_up) / H_up (true division) = (row + col / W_up) / H_up, not row / H_up
            expect_y = torch.tensor(row * W_up + col, dtype=torch.float32) / W_up / H_up
            assert pts[0, q, 1].item() == expect_y.item()
            if col:
                assert pts[0, q, 1].item() > row / H_up
                assert pts[0, q, 1].item() == pytest.approx((row + col / W_up) / H_up, rel=1e-6)


def test_corner_peaks():
    n, H, W = 3, 9, 12
    H_up, W_up = upsampled_size(H, W, n)                 # (21, 27)
    score = torch.zeros(1, H, W)
    score[0, 0, 0] = 1.0                                 # top-left source pixel
    score[0, H - 1, W - 1] = 1.0                         # bottom-right source pixel
    idx, pts = grid_select_authors(score, n)
    # top-left: the upsampled (0, 0) samples the source pixel exactly (align_corners=False clamps at 0)
    assert idx[0, 0].item() == 0 and pts[0, 0].tolist() == [0.0, 0.0]
    # bottom-right: the peak lies in the last cell's border band, where the upsampling clamps
    q = n * n - 1
    row, col = divmod(idx[0, q].item(), W_up)
    src_y = (row + 0.5) * H / H_up - 0.5
    src_x = (col + 0.5) * W / W_up - 0.5
    assert src_y >= H - 1 and src_x >= W - 1
    ref, _, _ = brute_force_select(score, n)
    assert torch.equal(idx, ref)


def test_selection_equals_the_literal_rule_on_random_maps():
    g = torch.Generator().manual_seed(0)
    for H, W, n in [(10, 13, 4), (8, 20, 14), (17, 9, 5)]:
        score = torch.rand(2, H, W, generator=g)
        idx, pts = grid_select_authors(score, n)
        ref, H_up, W_up = brute_force_select(score, n)
        assert torch.equal(idx, ref), (H, W, n)
        assert torch.equal(pts[..., 0], (ref % W_up).float() / W_up)
        assert torch.equal(pts[..., 1], ref.float() / W_up / H_up)


def test_model_selects_on_sigmoid_scores_and_old_rule_is_an_option():
    cfg = get_config("tiny")
    assert cfg.query_select == "authors" and cfg.assoc_window_rule == "authors"
    with pytest.raises(ValueError, match="query_select"):
        cfg.replace(query_select="nearest")
    torch.manual_seed(0)
    m_new = mdqe.build_model(cfg).eval()
    m_old = mdqe.build_model(cfg.replace(query_select="floor_centres")).eval()
    m_old.load_state_dict(m_new.state_dict())
    x = torch.randn(4, 3, 96, 128)
    with torch.no_grad():
        a, b = m_new.encode_frames(x), m_old.encode_frames(x)
        # same maps, the authors' rule on sigmoid(max logit) of level 0
        score = a["sem_logits"].amax(1).sigmoid()
        _, expect = grid_select_authors(score, cfg.grid_size)
    assert torch.equal(a["memory"], b["memory"])
    assert torch.equal(a["query_points"], expect)
    assert not torch.equal(a["query_points"], b["query_points"])


def test_association_window_is_float_half_window_at_distance_two():
    assert get_config("r50_ytvis21").assoc_window_test == 3.5
    assert get_config("r50_ovis").assoc_window_test == 2.5
    assert get_config("r50_ytvis21").replace(assoc_window_rule="floor").assoc_window_test == 3.0
    n, T = 14, 4                                          # key frame ct = (T - 1) // 2 = 1; frame 3 at distance 2
    k = 0                                                 # key cell (row 0, col 0)
    m = association_mask(n, T, 3.5)
    assert not m[3, 7 * n + 7, k] and m[3, 8, k] and m[3, 8 * n, k]      # offset 7 <= 3.5 * 2 < 8
    assert not m[0, 3 * n + 3, k] and m[0, 4, k] and m[2, 4 * n, k]      # distance 1: offset 3 <= 3.5 < 4
    assert (~m[1, :, k]).nonzero().flatten().tolist() == [k]             # the key frame matches itself
    m_floor = association_mask(n, T, 3.0)
    assert m_floor[3, 7, k] and not m_floor[3, 6, k]                     # the floor rule stops at 6
    # the most similar query at offset 7 (frame 3) is chosen with 3.5, not with 3.0
    E = 4
    emb = torch.zeros(1, T, n * n, E)
    emb[0, :, :, 1] = 0.01
    emb[0, 1, k, 0] = 1.0
    emb[0, 3, 7, 0] = 2.0                                 # (row 0, col 7)
    emb[0, 3, 5, 0] = 1.0                                 # (row 0, col 5)
    assert associate(emb, n, 3.5)[0, 3, k].item() == 7
    assert associate(emb, n, 3.0)[0, 3, k].item() == 5


def test_level_masks_follow_ceil_and_nearest():
    valid_hw = torch.tensor([[360, 600], [384, 640]])
    sizes = [(48, 80), (24, 40), (12, 20), (6, 10)]
    v = level_valid(valid_hw, sizes)
    assert [int(r[0].sum()) for r, _ in v] == [45, 23, 12, 6]           # ceil(360 / 8, 16, 32), then nearest
    assert [int(c[0].sum()) for _, c in v] == [75, 38, 19, 10]
    assert all(int(r[1].sum()) == s[0] and int(c[1].sum()) == s[1] for (r, c), s in zip(v, sizes))
    # the extra level: the stride-32 mask resized with nearest interpolation, as the authors do
    m32 = (v[2][0][:, :, None] * v[2][1][:, None, :])
    ref = F.interpolate(m32[:, None], size=(6, 10), mode="nearest")[:, 0]
    assert torch.equal(v[3][0][:, :, None] * v[3][1][:, None, :], ref)
    odd = level_valid(torch.tensor([[200, 200]]), [(25, 25), (13, 13), (7, 7), (4, 4)])
    m32 = odd[2][0][:, :, None] * odd[2][1][:, None, :]
    ref = F.interpolate(m32[:, None], size=(4, 4), mode="nearest")[:, 0]
    assert torch.equal(odd[3][0][:, :, None] * odd[3][1][:, None, :], ref)
    assert flat_valid(v).shape == (2, sum(h * w for h, w in sizes))


def test_position_encoding_matches_cumsum_definition_and_valid_region():
    """The authors' PositionEmbeddingSine(normalize=True): cumsum of the valid mask / last value."""
    h, w, vh, vw, dim = 7, 9, 5, 6, 16
    rows = (torch.arange(h) < vh).float()[None]
    cols = (torch.arange(w) < vw).float()[None]
    got = masked_sine_position_encoding(rows, cols, dim)
    not_mask = rows[:, :, None] * cols[:, None, :]
    y = not_mask.cumsum(1)
    x = not_mask.cumsum(2)
    y = y / (y[:, -1:, :] + 1e-6) * 2 * math.pi
    x = x / (x[:, :, -1:] + 1e-6) * 2 * math.pi
    dim_t = 10000 ** (2 * (torch.arange(dim // 2) // 2) / (dim // 2))
    px, py = x[..., None] / dim_t, y[..., None] / dim_t
    px = torch.stack((px[..., 0::2].sin(), px[..., 1::2].cos()), 4).flatten(3)
    py = torch.stack((py[..., 0::2].sin(), py[..., 1::2].cos()), 4).flatten(3)
    ref = torch.cat((py, px), 3).permute(0, 3, 1, 2)
    assert torch.equal(got, ref)
    # the valid region equals the encoding of the unpadded map (normalised by the valid extent)
    plain = masked_sine_position_encoding(torch.ones(1, vh), torch.ones(1, vw), dim)
    assert torch.equal(got[..., :vh, :vw], plain)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = mdqe.build_model("tiny").eval()
    with torch.no_grad():   # non-trivial attention weights, so every sampled value matters
        for mod in model.modules():
            if hasattr(mod, "attention_weights") and isinstance(mod.attention_weights, torch.nn.Linear):
                mod.attention_weights.weight.normal_(0, 0.2)
    return model


def test_encoder_valid_tokens_ignore_padded_tokens(tiny):
    """Padded value rows are zeroed in every encoder layer: the memory of valid tokens does not depend
    on what the padded tokens hold."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 96, 128, generator=g)
    valid_hw = torch.tensor([[70, 100], [96, 90]])
    with torch.no_grad():
        srcs = tiny.input_proj(tiny.backbone(x))
        mem, _, _, sizes, valid = tiny.encoder(srcs, valid_hw)
        noisy = []
        for (r, c), s in zip(level_valid(valid_hw, [tuple(s.shape[-2:]) for s in srcs]), srcs):
            pad = 1 - r[:, None, :, None] * c[:, None, None, :]
            noisy.append(s + 100 * pad * torch.randn(s.shape, generator=g))
        mem2, _, _, _, _ = tiny.encoder(noisy, valid_hw)
    assert (~valid).any() and valid.any()
    assert torch.allclose(mem[valid], mem2[valid], atol=1e-5), (mem[valid] - mem2[valid]).abs().max()
    assert not torch.allclose(mem[~valid], mem2[~valid], atol=1e-2)


def test_decoder_ignores_padded_memory(tiny):
    """Cross-attention and temporal cross-attention zero padded value rows: with the same queries,
    the clip outputs do not depend on the memory at padded tokens."""
    g = torch.Generator().manual_seed(2)
    T = tiny.cfg.num_frames
    x = torch.randn(T, 3, 96, 128, generator=g)
    valid_hw = torch.tensor([[75, 110]] * T)
    with torch.no_grad():
        feats = tiny.encode_frames(x, valid_hw)
        sizes = [tuple(s) for s in feats["spatial_shapes"].tolist()]
        valid = flat_valid(level_valid(valid_hw, sizes))
        out = tiny.decode_clip(feats, with_aux=False)
        noisy = dict(feats)
        noisy["memory"] = torch.where(valid[..., None], feats["memory"], 50 * torch.randn(feats["memory"].shape, generator=g))
        out2 = tiny.decode_clip(noisy, with_aux=False)
        unmasked = dict(noisy)
        unmasked.pop("valid_hw")
        out3 = tiny.decode_clip(unmasked, with_aux=False)
    for k in ("pred_logits", "pred_boxes", "pred_masks", "pred_queries"):
        torch.testing.assert_close(out[k], out2[k], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out["pred_queries"], out3["pred_queries"], atol=1e-3)   # the masks matter


def test_full_valid_size_equals_no_padding_and_pred_queries(tiny):
    g = torch.Generator().manual_seed(3)
    T = tiny.cfg.num_frames
    x = torch.randn(T, 3, 96, 128, generator=g)
    with torch.no_grad():
        a = tiny(x, with_aux=False)
        b = tiny(x, with_aux=False, valid_hw=torch.tensor([[96, 128]] * T))
        c = tiny(x, with_aux=False, valid_hw=torch.tensor([[64, 128]] * T))
    for k in ("pred_logits", "pred_masks", "pred_queries"):
        assert torch.equal(a[k], b[k])
    assert not torch.allclose(a["pred_logits"], c["pred_logits"])
    # pred_queries: the raw clip query (before decoder_norm), [Q, hidden_dim]; the heads read its norm
    assert a["pred_queries"].shape == (tiny.cfg.num_grid_queries, tiny.cfg.hidden_dim)
    torch.testing.assert_close(tiny.cls_embed(tiny.decoder.norm(a["pred_queries"])), a["pred_logits"])
    with pytest.raises(ValueError, match="valid_hw"):
        tiny.encode_frames(x, torch.tensor([[97, 128]] * T))
