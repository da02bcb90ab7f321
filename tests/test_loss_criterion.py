"""SetCriterion on hand-built outputs: keys, weights, deep supervision, the --no-repulsion switch, and the
authors' normalisations (focal / B*Q, boxes / (T * matched queries), masks / matched queries)."""
import re

import pytest
import torch

from mdqe.config import get_config
from mdqe.losses import SetCriterion


def _outputs(B=1, Q=9, T=2, C=5, h=8, w=8, E=4, n_aux=1, seed=0):
    g = torch.Generator().manual_seed(seed)

    def head():
        return {"pred_logits": torch.randn(B, Q, C, generator=g).requires_grad_(),
                "pred_boxes": (torch.rand(B, Q, T, 4, generator=g) * 0.5 + 0.25).requires_grad_(),
                "pred_masks": torch.randn(B, Q, T, h, w, generator=g).requires_grad_(),
                "pred_embeds": torch.randn(B, Q, E, generator=g)}
    out = head()
    out["aux_outputs"] = [head() for _ in range(n_aux)]
    out["init_sem_logits"] = torch.randn(B, T, C, h // 2, w // 2, generator=g).requires_grad_()
    out["init_points"] = torch.rand(B, T, Q, 2, generator=g)
    out["init_embeds"] = torch.randn(B, T, Q, E, generator=g).requires_grad_()
    return out


def _targets(T=2, H=32, W=32):
    # two overlapping squares (neighbours) and one far away
    spec = [(2, 2, 14), (8, 8, 14), (22, 22, 8)]
    masks = torch.zeros(3, T, H, W, dtype=torch.bool)
    boxes = torch.zeros(3, T, 4)
    for k, (x, y, s) in enumerate(spec):
        masks[k, :, y:y + s, x:x + s] = True
        boxes[k, :] = torch.tensor([(x + s / 2) / W, (y + s / 2) / H, s / W, s / H])
    return [{"labels": torch.tensor([0, 1, 4]), "ids": torch.tensor([1, 2, 3]), "boxes": boxes,
             "masks": masks, "valid": torch.ones(3, T, dtype=torch.bool)}]


@pytest.mark.parametrize("style", ["authors", "paper"])
def test_criterion_keys_total_and_gradients(style):
    cfg = get_config("tiny")
    out = _outputs()
    losses = SetCriterion(cfg, style=style)(out, _targets())
    names = ["cls", "box_l1", "giou", "mask_bce", "mask_dice"]
    for n in names:
        assert f"loss_{n}" in losses and f"loss_{n}_aux0" in losses
    w = cfg.loss
    weights = dict(cls=w.cls, box_l1=w.box_l1, giou=w.giou, mask_bce=w.mask_bce, mask_dice=w.mask_dice)
    want = sum(weights[n] * (losses[f"loss_{n}"] + losses[f"loss_{n}_aux0"]) for n in names)
    want = want + w.init_sem * losses["loss_init_sem"] + w.init_reid * losses["loss_init_reid"]
    if style == "authors":   # the auxiliary cosine-MSE term of init-reid, weight 0.5
        assert (w.init_sem, w.init_reid) == (2.0, 0.5)
        want = want + 0.5 * losses["loss_init_reid_aux"]
    else:
        assert "loss_init_reid_aux" not in losses
    assert losses["loss"].item() == pytest.approx(want.item(), rel=1e-5)
    losses["loss"].backward()
    for t in (out["pred_logits"], out["pred_masks"], out["aux_outputs"][0]["pred_boxes"], out["init_sem_logits"]):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


@pytest.mark.parametrize("style", ["authors", "paper"])
def test_no_repulsion_changes_only_the_mask_terms(style):
    cfg = get_config("tiny")
    torch.manual_seed(0)
    a = SetCriterion(cfg, repulsion=True, style=style)(_outputs(), _targets())
    torch.manual_seed(0)   # init-reid samples from torch's default generator
    b = SetCriterion(cfg, repulsion=False, style=style)(_outputs(), _targets())
    for n in ("cls", "box_l1", "giou", "init_sem", "init_reid"):
        assert a[f"loss_{n}"].item() == pytest.approx(b[f"loss_{n}"].item(), rel=1e-6)
    assert a["loss_mask_dice"].item() != pytest.approx(b["loss_mask_dice"].item(), rel=1e-4)
    assert a["loss_mask_bce"].item() != pytest.approx(b["loss_mask_bce"].item(), rel=1e-4)


@pytest.mark.parametrize("style", ["authors", "paper"])
def test_deep_supervision_off_and_empty_targets(style):
    cfg = get_config("tiny")
    cfg = cfg.replace(loss=type(cfg.loss)(deep_supervision=False))
    empty = [{"labels": torch.zeros(0, dtype=torch.long), "ids": torch.zeros(0, dtype=torch.long),
              "boxes": torch.zeros(0, 2, 4), "masks": torch.zeros(0, 2, 32, 32, dtype=torch.bool),
              "valid": torch.zeros(0, 2, dtype=torch.bool)}]
    losses = SetCriterion(cfg, style=style)(_outputs(), empty)
    assert not any(re.search(r"_aux\d+$", k) for k in losses)
    assert losses["loss_box_l1"].item() == 0.0 and torch.isfinite(losses["loss"])
    losses["loss"].backward()


def test_authors_normalisations_by_hand():
    """loss_cls = focal sum / (B*Q) (matched rows weight 1, others no_object_weight); box terms summed over
    (pair, frame) entries with a non-empty GT box / (T * n); mask terms summed over pairs / n, where n
    is the number of matched QUERIES (one-to-many)."""
    import torch.nn.functional as F

    from mdqe.losses import matched_giou, prepare_target, sigmoid_focal_loss
    from mdqe.losses.box_ops import cxcywh_to_xyxy
    from mdqe.losses.mask import neighbour_union_masks, union_bce_loss, union_dice_loss
    from mdqe.matcher import DynamicKMatcher

    cfg = get_config("tiny")
    out, tgts = _outputs(B=2, Q=9, T=2), _targets() * 2
    tgts[1] = dict(tgts[1], valid=tgts[1]["valid"].clone(), boxes=tgts[1]["boxes"].clone())
    tgts[1]["valid"][2, 1] = False            # instance 2 of clip 1 absent in frame 1
    tgts[1]["boxes"][2, 1] = 0
    for now in (1.0, 0.25):
        crit = SetCriterion(cfg, no_object_weight=now)
        losses = crit(out, tgts)
        prep = [prepare_target(t, out["pred_masks"].shape[-2:]) for t in tgts]
        idx = DynamicKMatcher(cfg.loss)(out, prep)
        n = sum(len(q) for q, _ in idx)
        assert n > 3                          # one-to-many: more matched queries than instances
        onehot = torch.zeros_like(out["pred_logits"])
        for b, (q, k) in enumerate(idx):
            onehot[b, q, prep[b]["labels"][k]] = 1
        per_query = sigmoid_focal_loss(out["pred_logits"], onehot).sum(-1)
        wq = torch.where(onehot.sum(-1) > 0, 1.0, now)
        assert losses["loss_cls"].item() == pytest.approx(((per_query * wq).sum() / wq.sum()).item(), rel=1e-6)
        if now == 1.0:
            assert wq.sum().item() == 2 * 9   # B * Q
    pb = torch.cat([cxcywh_to_xyxy(out["pred_boxes"][b, q]) for b, (q, _) in enumerate(idx)])
    gb = torch.cat([prep[b]["boxes_xyxy"][k] for b, (_, k) in enumerate(idx)])
    assert not bool(prep[1]["box_valid"].all())   # an absent (instance, frame) is left out of the box terms
    valid = (gb[..., 2:] > gb[..., :2]).all(-1)
    T = 2
    l1 = (pb - gb).abs().sum(-1)[valid].sum() / (T * n)
    giou = (1 - matched_giou(pb[valid], gb[valid])).sum() / (T * n)
    assert losses["loss_box_l1"].item() == pytest.approx(l1.item(), rel=1e-6)
    assert losses["loss_giou"].item() == pytest.approx(giou.item(), rel=1e-6)
    pm = torch.cat([out["pred_masks"][b, q].flatten(1) for b, (q, _) in enumerate(idx)])
    gm = torch.cat([prep[b]["match_masks"][k].flatten(1) for b, (_, k) in enumerate(idx)])
    clip = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(idx)])
    u = neighbour_union_masks(gm, gb, clip)
    assert losses["loss_mask_bce"].item() == pytest.approx((union_bce_loss(pm, gm, u).sum() / n).item(), rel=1e-6)
    assert losses["loss_mask_dice"].item() == pytest.approx((union_dice_loss(pm, gm, u).sum() / n).item(), rel=1e-6)
    # soft targets: the GT squares of _targets() do not fall on the 4-pixel grid of the 8x8 mask logits
    assert ((gm > 0) & (gm < 1)).any()
    plain = SetCriterion(cfg, repulsion=False)(out, tgts)
    bce = F.binary_cross_entropy_with_logits(pm, gm, reduction="none").mean(1).sum() / n
    assert plain["loss_mask_bce"].item() == pytest.approx(bce.item(), rel=1e-6)


def test_style_and_square_grid_are_checked():
    with pytest.raises(ValueError, match="style"):
        SetCriterion("tiny", style="other")
    with pytest.raises(ValueError, match="square query grid"):
        SetCriterion("tiny")(_outputs(Q=6), _targets())


def test_train_cli_criterion_option(tmp_path, monkeypatch):
    """`python -m mdqe.train --criterion paper` runs (default: authors) and records the choice."""
    pytest.importorskip("mdqe.model")
    import json
    import os

    import mdqe.train as tr

    assert tr.parse_args(["--data", "d", "--output", "o"]).criterion == "authors"
    with pytest.raises(SystemExit):
        tr.parse_args(["--data", "d", "--output", "o", "--criterion", "other"])

    class Clips(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            t = dict(_targets(T=4, H=64, W=64)[0], image_size=(64, 64))
            return {"images": torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(i)), "targets": t}

    monkeypatch.setattr(tr, "build_dataset", lambda *a, **k: Clips())
    out = str(tmp_path / "run")
    assert tr.main(["--config", "tiny", "--data", "unused", "--output", out, "--iters", "1", "--batch", "1",
                    "--no-progress", "--threads", "1", "--criterion", "paper"]) == 0
    rec = [json.loads(x) for x in open(os.path.join(out, "log.jsonl"))][0]
    assert "loss_init_reid" in rec and "loss_init_reid_aux" not in rec
    assert json.load(open(os.path.join(out, "train_args.json")))["criterion"] == "paper"
