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


# ---- the authors' init losses (default criterion) -------------------------------------------------
from mdqe.losses import (grid_offsets, init_reid_sampled_loss, init_sem_peak_loss, query_instance_ids,  # noqa: E402
                         reid_candidates)


def _sig(x):
    return 1 / (1 + math.exp(-x))


def _wfocal(x, y, d):
    """One map entry of the authors' init-sem loss: BCE * |y - p|^2 * (d y + (1 - d)(1 - y))^2."""
    p = _sig(x)
    bce = -(y * math.log(p) + (1 - y) * math.log(1 - p))
    return bce * (abs(y - p) ** 2) * ((d * y + (1 - d) * (1 - y)) ** 2)


def test_init_sem_peak_loss_by_hand():
    # B = T = 1, C = 2, map 1 x 2: pixel 0 positive for class 0 with distance weight 0.8; pixel 1 background
    # with a 0.3 weight left at class 1 (a pixel another instance took over keeps such weights)
    x = [[0.5, -1.0], [2.0, -0.5]]
    logits = torch.tensor(x).t().reshape(1, 1, 2, 1, 2)    # [B,T,C,H,W]
    labels = torch.tensor([[[0, -1]]])
    dist = torch.tensor([[[[0.8, 0.0], [0.0, 0.3]]]])
    terms = [[_wfocal(x[0][0], 1, 0.8), _wfocal(x[0][1], 0, 0.0)], [_wfocal(x[1][0], 0, 0.0), _wfocal(x[1][1], 0, 0.3)]]
    want = sum(map(sum, terms)) / 1                           # one positive pixel
    assert init_sem_peak_loss(logits, labels, dist).item() == pytest.approx(want, rel=1e-6)
    # one point: the more uncertain pixel, C (1 - p) y + p (1 - y) summed over classes
    unc = [2 * (1 - _sig(0.5)) + _sig(-1.0), _sig(2.0) + _sig(-0.5)]
    keep = max(range(2), key=lambda i: unc[i])
    want1 = sum(terms[keep])  # divided by max(1, positives among the kept points) = 1
    assert init_sem_peak_loss(logits, labels, dist, num_points=1).item() == pytest.approx(want1, rel=1e-6)
    # a frame without positives divides by 1; the mean runs over frames
    two = torch.cat([logits, logits], 1)
    bg = sum(_wfocal(v, 0, 0.0) for v in (0.5, -1.0, 2.0, -0.5))
    assert init_sem_peak_loss(two, torch.tensor([[[0, -1], [-1, -1]]]), torch.cat([dist, torch.zeros_like(dist)], 1)
                              ).item() == pytest.approx((want + bg) / 2, rel=1e-6)


def test_query_instance_ids_nearest_with_border_and_round_half_to_even():
    id_map = torch.arange(8).reshape(1, 8)  # a 2 x 4 map, ids 0..7
    pts = torch.tensor([[[0.25, 0.25],      # x*W - 0.5 = 0.5 exactly: nearest rounds to even -> column 0
                         [0.375, 0.25],     # column 1
                         [0.625, 0.75],     # x*W - 0.5 = 2.0 -> column 2, row 1
                         [1.2, -0.3]]])     # outside: border -> column 3, row 0
    assert query_instance_ids(id_map, pts, (2, 4)).tolist() == [[0, 1, 6, 3]]


def test_reid_candidates_window_grows_with_frame_distance():
    T, G = 2, 4
    off = grid_offsets(G)
    ids = torch.arange(T * G * G)                       # all distinct
    cand = reid_candidates(ids, 0, T, off, window=2)    # anchor: frame 0, cell (row 0, col 0)
    f0 = cand[:16].reshape(4, 4)
    assert f0[:3, :3].all() and f0.sum() == 9           # frame 0: within 2 cells
    assert cand[16:].all()                              # frame 1: within 2 * 2 = 4 cells
    assert torch.equal(reid_candidates(ids, 0, T, off, window=1), cand)   # the window is at least 2
    cand1 = reid_candidates(ids, 16 + 15, T, off, window=2)  # anchor in frame 1, cell (3, 3)
    assert cand1[16:].reshape(4, 4)[1:, 1:].all() and cand1[16:].sum() == 9 and cand1[:16].all()
    # every candidate on the anchor's instance: the authors' code indexes with T*Q ones (query 1 of frame 0)
    same = torch.zeros(T * G * G, dtype=torch.long)
    q = reid_candidates(same, 0, T, off, window=7)
    assert q.dtype == torch.long and q.tolist() == [1] * 32


def test_init_reid_sampled_loss_by_hand_when_every_sample_is_taken():
    # T = 2, Q = 4 (2 x 2 grid). Instance 0 on query 0 of both frames, instance 1 on query 3 of both.
    # Each instance: 2 positives (itself and its other-frame query), 6 negatives -> all taken.
    g = torch.Generator().manual_seed(0)
    e = torch.randn(1, 2, 4, 3, generator=g)
    ids = torch.tensor([[[0, -1, -1, 1], [0, -1, -1, 1]]])
    ctt, aux = init_reid_sampled_loss(e, ids, window=7, grid_size=2, generator=torch.Generator().manual_seed(1))
    flat = e.reshape(8, 3)
    want_c, want_a = [], []
    for anchor, pos in ((0, [0, 4]), (3, [3, 7])):
        neg = [i for i in range(8) if i not in pos]
        a = flat[anchor]
        sp = [float(flat[i] @ a) for i in pos]
        sn = [float(flat[i] @ a) for i in neg]
        want_c.append(sum(math.log(1 + min(1e3, sum(math.exp(n - p) for n in sn))) for p in sp) / len(sp))
        cos = lambda i: float(torch.nn.functional.cosine_similarity(flat[i], a, dim=0))  # noqa: E731
        want_a.append((sum((cos(i) - 1) ** 2 for i in pos) + sum(cos(i) ** 2 for i in neg)) / 8)
    assert ctt.item() == pytest.approx(sum(want_c) / 2, rel=1e-5)
    assert aux.item() == pytest.approx(sum(want_a) / 2, rel=1e-5)
    # no instance: zeros that keep the graph
    z, za = init_reid_sampled_loss(e.requires_grad_(), torch.full((1, 2, 4), -1), 7, 2)
    assert z.item() == 0.0 and za.item() == 0.0 and z.requires_grad


def test_init_reid_sampling_is_reproducible_from_the_generator_or_the_global_seed():
    # 14 x 14 grid, one large instance: 2 * 196 candidates, at most 50 * T negatives -> real sampling
    T, Q = 2, 196
    e = torch.randn(1, T, Q, 8, generator=torch.Generator().manual_seed(0))
    ids = torch.full((1, T, Q), -1)
    ids[0, :, 40:120] = 3
    ids[0, 1, 150:160] = 4
    runs = [init_reid_sampled_loss(e, ids, 5, 14, torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert runs[0][0].item() == runs[1][0].item() and runs[0][1].item() == runs[1][1].item()
    assert runs[0][0].item() != runs[2][0].item()
    torch.manual_seed(9)
    a = init_reid_sampled_loss(e, ids, 5, 14)
    torch.manual_seed(9)
    b = init_reid_sampled_loss(e, ids, 5, 14)
    assert a[0].item() == b[0].item() and a[1].item() == b[1].item()
