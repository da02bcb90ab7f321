"""Focal loss, GIoU and the init losses on hand-computed cases."""
import math

import pytest
import torch

from mdqe.losses import (focal_class_cost, generalized_box_iou_elementwise, generalized_box_iou_pairwise,
                         init_reid_loss, init_sem_loss, point_owners, semantic_targets, sigmoid_focal_loss)


def test_focal_by_hand():
    x = torch.tensor([0.0, 2.0, -1.0])
    y = torch.tensor([1.0, 0.0, 0.0])
    got = sigmoid_focal_loss(x, y, alpha=0.25, gamma=2.0)
    p = [1 / (1 + math.exp(-v)) for v in (0.0, 2.0, -1.0)]
    want = [0.25 * (1 - p[0]) ** 2 * -math.log(p[0]),
            0.75 * p[1] ** 2 * -math.log(1 - p[1]),
            0.75 * p[2] ** 2 * -math.log(1 - p[2])]
    assert got.tolist() == pytest.approx(want, rel=1e-6)
    # gamma = 0, alpha < 0 is plain BCE
    bce = torch.nn.functional.binary_cross_entropy_with_logits(x, y, reduction="none")
    assert torch.allclose(sigmoid_focal_loss(x, y, alpha=-1, gamma=0.0), bce)


def test_focal_class_cost_prefers_confident_correct_class():
    logits = torch.tensor([[4.0, -4.0], [-4.0, 4.0]])
    cost = focal_class_cost(logits, torch.tensor([0, 1]))
    assert cost[0, 0] < cost[1, 0] and cost[1, 1] < cost[0, 1]


def test_giou_by_hand():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [3.0, 0.0, 4.0, 1.0]])
    g = generalized_box_iou_pairwise(a, b)[0]
    # overlap 1, union 7, hull 9 -> 1/7 - 2/9; identical -> 1; disjoint: iou 0, hull 8, union 5 -> -3/8
    assert g.tolist() == pytest.approx([1 / 7 - 2 / 9, 1.0, -3 / 8], rel=1e-6)
    ge = generalized_box_iou_elementwise(a.expand(3, 4), b)
    assert torch.allclose(ge, g)


def test_semantic_targets_and_init_sem_loss():
    masks = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    masks[0, 0, :8, :8] = True
    masks[1, 0, 8:, 8:] = True
    t = semantic_targets(masks, torch.tensor([2, 0]), num_classes=3, size=(2, 2))
    assert t.shape == (1, 3, 2, 2)
    assert t[0, 2].tolist() == [[1, 0], [0, 0]] and t[0, 0].tolist() == [[0, 0], [0, 1]]
    assert t[0, 1].sum() == 0
    logits = torch.zeros(1, 3, 2, 2)
    loss = init_sem_loss(logits, t)
    # 2 positives at p=0.5: 0.25*0.25*log2 each; 10 negatives: 0.75*0.25*log2 each; / 2 positives
    want = (2 * 0.25 * 0.25 * math.log(2) + 10 * 0.75 * 0.25 * math.log(2)) / 2
    assert loss.item() == pytest.approx(want, rel=1e-6)


def test_point_owners():
    masks = torch.zeros(2, 2, 4, 4, dtype=torch.bool)
    masks[0, :, :2, :2] = True
    masks[1, 1, :, 2:] = True
    pts = torch.tensor([[[0.1, 0.1], [0.9, 0.9]], [[0.1, 0.1], [0.9, 0.9]]])
    assert point_owners(pts, masks).tolist() == [[0, -1], [0, 1]]


def test_init_reid_by_hand():
    # 2 frames x 2 queries; query 0 of both frames on instance 0, query 1 on background.
    e = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.5, 0.5], [0.0, -1.0]]])
    owners = torch.tensor([[0, -1], [0, -1]])
    total, n = init_reid_loss(e, owners)
    assert n == 2
    # anchor (0,0): s+ = e00.e10 = 0.5, negative (1,1): 0 -> -log(e^.5/(e^.5+e^0))
    a = -math.log(math.exp(0.5) / (math.exp(0.5) + 1.0))
    # anchor (1,0): s+ = 0.5, negative (0,1): 0.5 -> -log(1/2)
    b = math.log(2.0)
    assert total.item() == pytest.approx(a + b, rel=1e-6)
    # no negatives -> finite zero loss with finite gradient
    e2 = e.clone().requires_grad_(True)
    total2, n2 = init_reid_loss(e2, torch.tensor([[0, 0], [0, 0]]))
    total2.backward()
    assert n2 == 8 and total2.item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(e2.grad).all()
