"""SetCriterion on hand-built outputs: keys, deep supervision, the --no-repulsion switch."""
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


def test_criterion_keys_total_and_gradients():
    cfg = get_config("tiny")
    out = _outputs()
    losses = SetCriterion(cfg)(out, _targets())
    names = ["cls", "box_l1", "giou", "mask_bce", "mask_dice"]
    for n in names:
        assert f"loss_{n}" in losses and f"loss_{n}_aux0" in losses
    w = cfg.loss
    weights = dict(cls=w.cls, box_l1=w.box_l1, giou=w.giou, mask_bce=w.mask_bce, mask_dice=w.mask_dice)
    want = sum(weights[n] * (losses[f"loss_{n}"] + losses[f"loss_{n}_aux0"]) for n in names)
    want = want + w.init_sem * losses["loss_init_sem"] + w.init_reid * losses["loss_init_reid"]
    assert losses["loss"].item() == pytest.approx(want.item(), rel=1e-5)
    losses["loss"].backward()
    for t in (out["pred_logits"], out["pred_masks"], out["aux_outputs"][0]["pred_boxes"], out["init_sem_logits"]):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_no_repulsion_changes_only_the_mask_terms():
    cfg = get_config("tiny")
    a = SetCriterion(cfg, repulsion=True)(_outputs(), _targets())
    b = SetCriterion(cfg, repulsion=False)(_outputs(), _targets())
    for n in ("cls", "box_l1", "giou", "init_sem", "init_reid"):
        assert a[f"loss_{n}"].item() == pytest.approx(b[f"loss_{n}"].item(), rel=1e-6)
    assert a["loss_mask_dice"].item() != pytest.approx(b["loss_mask_dice"].item(), rel=1e-4)
    assert a["loss_mask_bce"].item() != pytest.approx(b["loss_mask_bce"].item(), rel=1e-4)


def test_deep_supervision_off_and_empty_targets():
    cfg = get_config("tiny")
    cfg = cfg.replace(loss=type(cfg.loss)(deep_supervision=False))
    empty = [{"labels": torch.zeros(0, dtype=torch.long), "ids": torch.zeros(0, dtype=torch.long),
              "boxes": torch.zeros(0, 2, 4), "masks": torch.zeros(0, 2, 32, 32, dtype=torch.bool),
              "valid": torch.zeros(0, 2, dtype=torch.bool)}]
    losses = SetCriterion(cfg)(_outputs(), empty)
    assert not any("aux" in k for k in losses)
    assert losses["loss_box_l1"].item() == 0.0 and torch.isfinite(losses["loss"])
    losses["loss"].backward()
