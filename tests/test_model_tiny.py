"""The tiny model: output contract (docs/INTERFACES.md section 3), split API, batching, backward."""
import numpy as np
import pytest
import torch

import mdqe
from mdqe.model.preprocess import normalize_and_pad, resize_shape

PRED_KEYS = ("pred_logits", "pred_boxes", "pred_masks", "pred_embeds")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return mdqe.build_model("tiny").eval()


@pytest.fixture(scope="module")
def clip():
    return torch.randn(4, 3, 64, 96, generator=torch.Generator().manual_seed(1))


def test_output_contract(model, clip):
    cfg = model.cfg
    Q, C, E, T = cfg.num_grid_queries, cfg.num_classes, cfg.embed_dim, cfg.num_frames
    with torch.no_grad():
        out = model(clip)
    h, w = 64 // 4, 96 // 4
    assert out["pred_logits"].shape == (Q, C)
    assert out["pred_boxes"].shape == (Q, T, 4)
    assert out["pred_masks"].shape == (Q, T, h, w)
    assert out["pred_embeds"].shape == (Q, E)
    assert out["init_sem_logits"].shape == (T, C, 64 // 8, 96 // 8)
    assert out["init_points"].shape == (T, Q, 2)
    assert out["init_embeds"].shape == (T, Q, E)
    assert out["assoc_index"].shape == (T, Q) and out["assoc_index"].dtype == torch.int64
    assert len(out["aux_outputs"]) == cfg.dec_layers          # warm-up stage + layers 0..n-2
    for aux in out["aux_outputs"]:
        for k in PRED_KEYS:
            assert aux[k].shape == out[k].shape
    # the central frame is associated with itself
    assert out["assoc_index"][(T - 1) // 2].tolist() == list(range(Q))


def test_split_api_per_frame_equals_whole_clip(model, clip):
    """model(clip) = encode_frames(clip) + decode_clip; encoding frame by frame gives the batched
    encoding within 1e-4 and the same grid-selected query points, except where two pixels of a grid
    cell tie within float rounding (the batch shape changes the rounding: on an AVX2 machine one of
    64 points moves by one upsampled pixel, its two scores 9e-10 apart); decoding the per-frame
    features equals decoding the batched ones with the same points."""
    import torch.nn.functional as F
    from mdqe.model.query_init import grid_select_authors, upsampled_size
    with torch.no_grad():
        whole = model(clip)
        batched = model.encode_frames(clip)
        again = model.decode_clip(batched)
        per_frame = [model.encode_frames(clip[t:t + 1]) for t in range(clip.shape[0])]
        feats = {k: (torch.cat([f[k] for f in per_frame]) if k not in ("spatial_shapes", "level_start_index")
                     else per_frame[0][k]) for k in per_frame[0]}
        split = model.decode_clip(feats)
        mixed = dict(batched, query_points=feats["query_points"], query_feat=feats["query_feat"],
                     query_embed=feats["query_embed"])
        ref = model.decode_clip(mixed)
    for k in PRED_KEYS + ("init_points", "init_embeds"):
        torch.testing.assert_close(again[k], whole[k], rtol=0, atol=0)
    for k in ("memory", "mask_features", "sem_logits", "query_embed"):
        torch.testing.assert_close(feats[k], batched[k], rtol=1e-4, atol=1e-4)
    # query points: equal, or a tie of the batched run's upsampled scores within rounding
    score = batched["sem_logits"].max(dim=1)[0].sigmoid()
    H_up, W_up = upsampled_size(*score.shape[1:], model.grid)
    up = F.interpolate(score[:, None], size=(H_up, W_up), mode="bilinear", align_corners=False).flatten(1)
    idx_b, _ = grid_select_authors(score, model.grid)
    idx_p, _ = grid_select_authors(feats["sem_logits"].max(dim=1)[0].sigmoid(), model.grid)
    moved = idx_b != idx_p
    assert int(moved.sum()) <= 2, "more than 2 query points moved between batched and per-frame encoding"
    gap = (up.gather(1, idx_b) - up.gather(1, idx_p)).abs()[moved]
    assert (gap < 1e-5).all(), f"a query point moved with a score gap of {gap.max().item()}"
    same = ~moved.any(dim=0)                                      # queries whose points agree in every frame
    torch.testing.assert_close(feats["query_points"][:, same], batched["query_points"][:, same], rtol=0, atol=0)
    for k in PRED_KEYS + ("init_points", "init_embeds"):
        torch.testing.assert_close(split[k], ref[k], rtol=1e-4, atol=1e-4)
    assert torch.equal(split["assoc_index"], ref["assoc_index"])
    if not moved.any():
        for k in PRED_KEYS:
            torch.testing.assert_close(split[k], whole[k], rtol=1e-4, atol=1e-4)


def test_batched_equals_unbatched(model, clip):
    clip2 = torch.flip(clip, dims=[-1])
    with torch.no_grad():
        b = model(torch.stack([clip, clip2]), with_aux=False)
        u = model(clip2, with_aux=False)
    assert b["pred_masks"].shape[0] == 2 and b["aux_outputs"] == []
    for k in PRED_KEYS:
        torch.testing.assert_close(b[k][1], u[k], rtol=1e-4, atol=1e-4)


def test_decode_clip_rejects_wrong_frame_count(model, clip):
    with torch.no_grad():
        feats = model.encode_frames(clip[:3])
    with pytest.raises(ValueError, match="T=4"):
        model.decode_clip(feats)
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\]"):
        model.encode_frames(clip[:, :2])


def test_forward_backward_trains_every_parameter():
    torch.manual_seed(0)
    model = mdqe.build_model("tiny").train()
    out = model(torch.randn(1, 4, 3, 64, 96))
    loss = sum(o[k].float().abs().mean() for o in [out] + out["aux_outputs"] for k in PRED_KEYS)
    loss = loss + out["init_sem_logits"].abs().mean() + out["init_embeds"].abs().mean()
    loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    # the box branch's reference is detached, so every parameter still gets a gradient
    assert no_grad == [], no_grad
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_resize_shape_rule():
    assert resize_shape(720, 1280, 360, 1280) == (360, 640)
    assert resize_shape(272, 640, 360, 640) == (272, 640)        # longer side capped at max_size
    assert resize_shape(100, 1000, 360, 640) == (64, 640)
    with pytest.raises(ValueError):
        resize_shape(0, 10, 360, 640)


def test_normalize_and_pad_uint8_and_float():
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 37, 50, 3), dtype=np.uint8)
    x = normalize_and_pad(frames, "tiny")
    assert x.shape == (2, 3, 64, 64) and x.dtype == torch.float32
    cfg = mdqe.get_config("tiny")
    expect = (frames[1, 5, 7, 2] - cfg.pixel_mean[2]) / cfg.pixel_std[2]
    assert x[1, 2, 5, 7].item() == pytest.approx(expect, rel=1e-6)
    assert (x[:, :, 37:] == 0).all() and (x[:, :, :, 50:] == 0).all()
    y = normalize_and_pad(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), cfg)
    torch.testing.assert_close(x, y)
    with pytest.raises(ValueError, match="RGB"):
        normalize_and_pad(frames[..., :2], cfg)


def test_association_window_train_vs_eval(model, clip, monkeypatch):
    from mdqe.model import mdqe as mdqe_module
    seen = []
    real = mdqe_module.associate

    def spy(embeds, n, half_window):
        seen.append(half_window)
        return real(embeds, n, half_window)

    monkeypatch.setattr(mdqe_module, "associate", spy)
    with torch.no_grad():
        feats = model.encode_frames(clip)
        model.decode_clip(feats, with_aux=False)
        model.train()
        try:
            model.decode_clip(feats, with_aux=False)
        finally:
            model.eval()
    assert seen == [model.cfg.assoc_window_test, model.cfg.assoc_window_train]


def test_decode_clip_rejects_inconsistent_frames(model, clip):
    with torch.no_grad():
        feats = model.encode_frames(clip)
    feats["query_feat"] = feats["query_feat"][:3]
    with pytest.raises(ValueError, match="query_feat"):
        model.decode_clip(feats)
