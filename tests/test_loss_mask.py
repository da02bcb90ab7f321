"""Hand-computed checks of the mask losses (paper Eqs. 1-6)."""
import math

import pytest
import torch

from mdqe.losses.mask import (bce_loss, clip_mask_losses, dice_loss, downsample_masks, inter_bce_loss,
                              inter_dice_loss, inter_instance_masks, neighbour_matrix, repulsion_weights)


def _bce(logit, y):
    p = 1 / (1 + math.exp(-logit))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_neighbours_use_max_over_time_iou_and_valid_frames():
    # instance 0 and 1 overlap only in frame 1 (IoU 1/3 > 0.1); instance 2 is far away.
    boxes = torch.tensor([
        [[0.2, 0.2, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2]],
        [[0.8, 0.8, 0.2, 0.2], [0.6, 0.5, 0.2, 0.2]],
        [[0.1, 0.9, 0.1, 0.1], [0.1, 0.9, 0.1, 0.1]],
    ])
    valid = torch.ones(3, 2, dtype=torch.bool)
    nb = neighbour_matrix(boxes, valid, eps=0.1)
    assert nb.tolist() == [[False, True, False], [True, False, False], [False, False, False]]
    # The same overlap in a frame where instance 1 is absent does not count.
    valid[1, 1] = False
    assert not neighbour_matrix(boxes, valid, eps=0.1).any()
    # IoU 1/3 is not above eps = 0.5.
    valid[1, 1] = True
    assert not neighbour_matrix(boxes, valid, eps=0.5).any()


def test_alpha_lands_exactly_on_target_and_neighbour_pixels():
    # 1-D "images" of 6 pixels: instance 0 covers pixels 0-2, instance 1 covers 2-4 (overlap at 2).
    gt = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 0]], dtype=torch.float32)
    nb = torch.tensor([[False, True], [True, False]])
    other = inter_instance_masks(gt, nb)
    # M_o of instance 0 = mask 1 minus mask 0 -> pixels 3,4; of instance 1 -> pixels 0,1.
    assert other.tolist() == [[0, 0, 0, 1, 1, 0], [1, 1, 0, 0, 0, 0]]
    w = repulsion_weights(gt, other, alpha=2.0)
    assert w.tolist() == [[2, 2, 2, 2, 2, 1], [2, 2, 2, 2, 2, 1]]
    # Instance without neighbours: alpha only on its own pixels.
    w_iso = repulsion_weights(gt[:1], torch.zeros_like(gt[:1]), alpha=3.0)
    assert w_iso.tolist() == [[3, 3, 3, 1, 1, 1]]


def test_inter_bce_by_hand():
    gt = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    other = torch.tensor([[0.0, 1.0, 0.0, 0.0]])
    pred = torch.tensor([[0.5, -1.0, 2.0, 0.0]])
    # weights 2,2,1,1 -> sum 6
    want = (2 * _bce(0.5, 1) + 2 * _bce(-1.0, 0) + _bce(2.0, 0) + _bce(0.0, 0)) / 6
    got = inter_bce_loss(pred, gt, other, alpha=2.0)
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_inter_dice_by_hand():
    gt = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    other = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    pred = torch.tensor([[0.0, 2.0, -1.0, 1.0]])
    p = torch.sigmoid(pred)[0].tolist()
    num = 2 * (p[0] + p[1]) + (1 - p[2]) + 1.0
    den = sum(p) + 2 + 1 + 1.0
    got = inter_dice_loss(pred, gt, other)
    assert got.item() == pytest.approx(1 - num / den, rel=1e-6)


def test_repulsion_equals_plain_when_no_neighbours():
    torch.manual_seed(0)
    pred = torch.randn(3, 50)
    gt = (torch.rand(3, 50) > 0.6).float()
    none = torch.zeros_like(gt)
    # Eq. 5 degrades to Eq. 2 exactly when M_o is empty.
    assert torch.allclose(inter_dice_loss(pred, gt, none), dice_loss(pred, gt), atol=1e-7)
    # Eq. 4 with alpha = 1 is the plain pixel-mean BCE; the whole loss matches.
    b1, d1 = clip_mask_losses(pred, gt, none, repulsion=True, alpha=1.0)
    b0, d0 = clip_mask_losses(pred, gt, None, repulsion=False)
    assert torch.allclose(b1 + d1, b0 + d0, atol=1e-6)
    # With alpha = 2 and no neighbours the BCE only up-weights the target's pixels.
    b2 = inter_bce_loss(pred, gt, none, alpha=2.0)
    w = 1 + gt
    want = (w * torch.nn.functional.binary_cross_entropy_with_logits(pred, gt, reduction="none")).sum(1) / w.sum(1)
    assert torch.allclose(b2, want, atol=1e-6)
    assert not torch.allclose(b2, bce_loss(pred, gt))


def test_neighbour_pixels_raise_the_loss_of_activating_them():
    # Predicting "on" over the neighbour's pixels costs more under the repulsion loss.
    gt = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    other = torch.tensor([[0.0, 0.0, 1.0, 1.0]])
    pred = torch.tensor([[3.0, 3.0, 3.0, 3.0]])
    rep = inter_bce_loss(pred, gt, other) + inter_dice_loss(pred, gt, other)
    plain = inter_bce_loss(pred, gt, torch.zeros_like(gt)) + inter_dice_loss(pred, gt, torch.zeros_like(gt))
    assert rep.item() > plain.item()


def test_downsample_masks_area_threshold():
    m = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    m[..., :4, :4] = True     # full block -> on
    m[..., 4:6, 4:8] = True   # half of the bottom-right block -> on (>= 0.5)
    m[..., 0, 4] = True       # 1/16 of the top-right block -> off
    out = downsample_masks(m, (2, 2))
    assert out[0, 0].tolist() == [[1.0, 0.0], [0.0, 1.0]]


# ---- the authors' form (default criterion) ---------------------------------------------------------
from mdqe.losses.mask import neighbour_union_masks, union_bce_loss, union_dice_loss  # noqa: E402


def test_union_masks_include_the_instance_and_same_clip_neighbours_only():
    # 1-D masks of 6 pixels; pairs 0 and 1 (clip 0) have overlapping boxes, pair 2 (clip 1) has
    # pair 0's box but another clip; pair 3 (clip 0) is far away. Soft targets: > 0.5 counts.
    gt = torch.tensor([[1.0, 0.75, 0.5, 0.0, 0.0, 0.0],
                       [0.0, 0.0, 1.0, 1.0, 0.25, 0.0],
                       [0.0, 0.0, 0.0, 0.0, 1.0, 1.0],
                       [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]])
    boxes = torch.tensor([[[0.1, 0.1, 0.5, 0.5]], [[0.3, 0.3, 0.7, 0.7]], [[0.1, 0.1, 0.5, 0.5]],
                          [[0.8, 0.8, 0.9, 0.9]]])
    clip = torch.tensor([0, 0, 1, 0])
    u = neighbour_union_masks(gt, boxes, clip, eps=0.1)
    assert u.tolist() == [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 1]]
    # IoU 0.14 between boxes 0 and 1: not neighbours above eps = 0.2
    assert neighbour_union_masks(gt, boxes, clip, eps=0.2)[0].tolist() == [1, 1, 0, 0, 0, 0]


def test_union_masks_widen_boxes_so_instances_absent_in_the_same_frame_are_neighbours():
    gt = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    far = torch.tensor([[[0.0, 0.0, 0.1, 0.1], [0.0, 0.0, 0.0, 0.0]],
                        [[0.8, 0.8, 0.9, 0.9], [0.0, 0.0, 0.0, 0.0]]])   # both absent in frame 1
    assert neighbour_union_masks(gt, far, torch.tensor([0, 0]))[0].tolist() == [1, 1]
    far[1, 1] = torch.tensor([0.8, 0.8, 0.9, 0.9])
    assert neighbour_union_masks(gt, far, torch.tensor([0, 0]))[0].tolist() == [1, 0]


def test_union_bce_and_dice_by_hand():
    pred = torch.tensor([[0.5, -1.0, 2.0, 0.0]])
    gt = torch.tensor([[1.0, 0.5, 0.25, 0.0]])
    union = torch.tensor([[1.0, 1.0, 1.0, 0.0]])     # own pixel 0 plus neighbour pixels 1, 2
    w = [2, 2, 2, 1]
    bce = [-(y * math.log(_sig(x)) + (1 - y) * math.log(1 - _sig(x))) for x, y in zip(pred[0].tolist(), gt[0].tolist())]
    assert union_bce_loss(pred, gt, union).item() == pytest.approx(sum(a * b for a, b in zip(w, bce)) / 7, rel=1e-6)
    # M_o: union pixels with 1 - gt > 0.5 -> only pixel 2 (gt 0.5 is not below 0.5)
    p = [_sig(v) for v in pred[0].tolist()]
    num = 2 * sum(a * b for a, b in zip(p, gt[0].tolist())) + (1 - p[2])
    den = sum(p) + sum(gt[0].tolist()) + 1
    assert union_dice_loss(pred, gt, union).item() == pytest.approx(1 - (num + 1) / (den + 1), rel=1e-6)


def _sig(x):
    return 1 / (1 + math.exp(-x))
