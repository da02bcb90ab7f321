"""The Hungarian matcher recovers a known assignment."""
import torch

from mdqe.matcher import HungarianMatcher


def _targets_from_queries(logits, boxes, masks, perm):
    """GT built from the predictions of queries `perm` (so the best match is known)."""
    return {"labels": logits[perm].argmax(-1), "boxes": boxes[perm].clone(),
            "valid": torch.ones(len(perm), boxes.shape[1], dtype=torch.bool),
            "masks": (masks[perm] > 0).float()}


def test_matcher_recovers_permutation():
    torch.manual_seed(1)
    Q, T, C, h, w = 10, 3, 4, 8, 8
    logits = torch.randn(Q, C) * 0.1
    labels = torch.randint(0, C, (Q,))
    logits[torch.arange(Q), labels] = 5.0
    boxes = torch.rand(Q, T, 4) * 0.4 + 0.3
    masks = torch.randn(Q, T, h, w) * 10
    perm = torch.tensor([7, 2, 9, 0, 4])
    tgt = _targets_from_queries(logits, boxes, masks, perm)
    out = {"pred_logits": logits[None], "pred_boxes": boxes[None], "pred_masks": masks[None]}
    (qi, ki), = HungarianMatcher()(out, [tgt])
    assert ki.tolist() == [0, 1, 2, 3, 4]
    assert qi.tolist() == perm.tolist()


def test_matcher_ignores_invalid_frames_and_handles_empty():
    Q, T = 2, 2
    logits = torch.zeros(Q, 1)
    boxes = torch.tensor([[[0.3, 0.3, 0.2, 0.2], [0.9, 0.9, 0.1, 0.1]],
                          [[0.7, 0.7, 0.2, 0.2], [0.3, 0.3, 0.2, 0.2]]])
    masks = torch.zeros(Q, T, 4, 4)
    # GT present only in frame 1 at query 1's frame-1 box; frame 0 holds garbage (zeros)
    tgt = {"labels": torch.tensor([0]), "boxes": torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.3, 0.3, 0.2, 0.2]]]),
           "valid": torch.tensor([[False, True]]), "masks": torch.zeros(1, T, 4, 4)}
    out = {"pred_logits": logits[None], "pred_boxes": boxes[None], "pred_masks": masks[None]}
    (qi, ki), = HungarianMatcher()(out, [tgt])
    assert qi.tolist() == [1]
    empty = {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, T, 4),
             "valid": torch.zeros(0, T, dtype=torch.bool), "masks": torch.zeros(0, T, 4, 4)}
    (qi, ki), = HungarianMatcher()(out, [empty])
    assert qi.numel() == 0 and ki.numel() == 0


# ---- the default (authors') dynamic-k matcher: hand-made cases ------------------------------------
import pytest  # noqa: E402

from mdqe.losses.box_ops import matched_giou, video_giou_matrix  # noqa: E402
from mdqe.matcher import DynamicKMatcher, centre_prior, dynamic_k_assignment, with_centre_prior  # noqa: E402


def _assign(cost, ious):
    qi, ki = dynamic_k_assignment(torch.tensor(cost, dtype=torch.float32), torch.tensor(ious, dtype=torch.float32))
    return qi.tolist(), ki.tolist()


def test_dynamic_k_is_int_of_the_top10_clamped_ious_at_least_2():
    cost = [[float(q)] for q in range(14)]
    # 12 queries at 0.35 and 2 at -0.9: top-10 sum 3.5 -> k = 3 (all positives would give 4.2 -> 4)
    ious = [[0.35]] * 12 + [[-0.9]] * 2
    assert _assign(cost, ious) == ([0, 1, 2], [0, 0, 0])
    # sum 14 * 0.05 = 0.7 -> int 0 -> at least 2
    assert _assign(cost, [[0.05]] * 14) == ([0, 1], [0, 0])
    # negative IoUs count as 0, they do not lower k
    assert _assign(cost, [[0.9]] * 3 + [[-1.0]] * 11) == ([0, 1], [0, 0])


def test_query_claimed_twice_keeps_its_cheapest_instance_over_all_instances():
    big = 10.0
    cost = [[1.0, 1.5, 0.9],     # q0: claimed by instances 0 and 1, but cheapest at instance 2
            [2.0, big, big],
            [big, 2.0, big],
            [big, big, 0.1],
            [big, big, 0.2]] + [[big, big, big]] * 5
    ious = [[0.6, 0.6, 0.6]] * 2 + [[0.0, 0.0, 0.0]] * 8  # k = int(1.2) -> 2 for every instance
    assert _assign(cost, ious) == ([0, 1, 2, 3, 4], [2, 0, 1, 2, 2])


def test_every_instance_gets_a_query_after_conflicts():
    # both instances take q0, q1; both queries are cheaper at instance 0 -> instance 1 is left without;
    # matched queries get +1e5 and instance 1 takes its cheapest free query (q3, cost 7 < 8)
    cost = [[1.0, 3.0], [2.0, 4.0], [9.0, 8.0], [9.0, 7.0], [9.0, 9.0], [9.0, 9.0]]
    ious = [[0.6, 0.6], [0.6, 0.6]] + [[0.0, 0.0]] * 4
    assert _assign(cost, ious) == ([0, 1, 3], [0, 0, 1])
    # no free query left: the loop stops, an instance may stay unmatched
    assert _assign([[1.0, 1.5, 1.2], [2.0, 2.5, 2.2]], [[0.6] * 3] * 2) == ([0, 1], [0, 0])
    # no instance
    qi, ki = dynamic_k_assignment(torch.zeros(5, 0), torch.zeros(5, 0))
    assert qi.numel() == 0 and ki.numel() == 0


def _box(cx, cy, half=1 / 64):
    return [cx - half, cy - half, cx + half, cy + half]


def test_centre_prior_inside_strictly_near_a_centre_or_an_absent_zero_box():
    gt = torch.tensor([[[0.25, 0.25, 0.5, 0.5]],        # a box
                       [[0.0, 0.0, 0.0, 0.0]],          # an instance absent in this frame
                       [[0.59375, 0.59375, 0.609375, 0.609375]]])  # a tiny box, centre 0.6015625
    pred = torch.tensor([[_box(0.375, 0.375)],           # centre inside the box
                         [[0.375, 0.25, 0.625, 0.375]],  # centre (0.5, 0.3125) on the right edge: not inside
                         [_box(0.0625, 0.0625)],         # within 2.5/32 of the zero box's centre (0, 0)
                         [_box(0.65625, 0.65625)],       # outside the tiny box, 0.055 from its centre
                         [_box(0.9, 0.9)]])              # nowhere
    assert centre_prior(pred, gt)[:, 0].tolist() == [True, False, True, True, False]


def test_centre_prior_adds_100_per_outside_frame_and_changes_the_match():
    inside = torch.tensor([[False, False], [True, True], [True, False], [True, True]])
    cost = torch.tensor([[1.0], [5.0], [6.0], [7.0]])
    assert with_centre_prior(cost, inside)[:, 0].tolist() == [201.0, 5.0, 106.0, 7.0]
    ious = torch.tensor([[0.6], [0.6], [0.0], [0.0]])
    assert dynamic_k_assignment(cost, ious)[0].tolist() == [0, 1]
    assert dynamic_k_assignment(with_centre_prior(cost, inside), ious)[0].tolist() == [1, 3]


def test_video_giou_zero_when_disjoint_mean_over_valid_frames_and_clamps():
    gt = torch.tensor([[[0.2, 0.2, 0.6, 0.6], [0.2, 0.2, 0.6, 0.6]]])
    pred = torch.tensor([[[0.2, 0.2, 0.6, 0.6], [0.7, 0.7, 0.9, 0.9]]])  # exact, then disjoint (GIoU 0, not < 0)
    both = torch.tensor([[True, True]])
    assert video_giou_matrix(pred, gt, both).item() == pytest.approx(0.5, abs=1e-7)
    assert video_giou_matrix(pred, gt, torch.tensor([[True, False]])).item() == pytest.approx(1.0, abs=1e-7)
    assert matched_giou(pred[0, 1:], gt[0, 1:]).item() == 0.0
    # [0,0,2,2] vs [1,1,3,3] scaled by 0.1: IoU 1/7, union 7, hull 9 -> 1/7 - 2/9
    a, b = torch.tensor([[0.0, 0.0, 0.2, 0.2]]), torch.tensor([[0.1, 0.1, 0.3, 0.3]])
    assert matched_giou(a, b).item() == pytest.approx(1 / 7 - 2 / 9, rel=1e-5)
    # union and hull are clamped at 1e-3: a perfect 0.01 x 0.01 box scores 0.1 in the loss ...
    tiny = torch.tensor([[0.0, 0.0, 0.01, 0.01]])
    assert matched_giou(tiny, tiny).item() == pytest.approx(0.1, rel=1e-4)
    # ... and 1.0 in the matching cost (its union is clamped before the hull term)
    cost_giou = video_giou_matrix(tiny[:, None], tiny[:, None], torch.tensor([[True]]))
    assert cost_giou.item() == pytest.approx(1.0, rel=1e-4)


def _clip(Q=12, T=2, h=8, w=8):
    torch.manual_seed(3)
    gt_masks = torch.zeros(2, T, h, w)
    gt_masks[0, :, :4, :4] = 1
    gt_masks[1, :, 4:, 4:] = 1
    gt = {"labels": torch.tensor([1, 0]),
          "boxes_xyxy": torch.tensor([[[0.0, 0.0, 0.5, 0.5]] * T, [[0.5, 0.5, 1.0, 1.0]] * T]),
          "box_valid": torch.ones(2, T, dtype=torch.bool), "match_masks": gt_masks}
    logits = torch.randn(Q, 2)
    cxcy = torch.rand(Q, T, 2) * 0.8 + 0.1
    boxes = torch.cat([cxcy, torch.full((Q, T, 2), 0.3)], -1)
    boxes[0] = torch.tensor([0.25, 0.25, 0.5, 0.5])
    boxes[5] = torch.tensor([0.75, 0.75, 0.5, 0.5])
    masks = torch.randn(Q, T, h, w)
    masks[0] = gt_masks[0] * 8 - 4
    masks[5] = gt_masks[1] * 8 - 4
    return {"pred_logits": logits[None], "pred_boxes": boxes[None], "pred_masks": masks[None]}, gt


def test_dynamic_k_matcher_one_to_many_and_its_one_to_one_fallbacks():
    out, gt = _clip()
    (qi, ki), = DynamicKMatcher()(out, [gt])
    assert len(qi) >= 4 and set(ki.tolist()) == {0, 1}     # k >= 2 per instance
    assert qi.tolist() == sorted(qi.tolist()) and len(set(qi.tolist())) == len(qi)
    assert {(0, 0), (5, 1)} <= set(zip(qi.tolist(), ki.tolist()))
    # one-to-one: Hungarian on the same cost
    (qh, kh), = DynamicKMatcher(one_to_many=False)(out, [gt])
    assert sorted(zip(kh.tolist(), qh.tolist())) == [(0, 0), (1, 5)]
    # no box information (NaN boxes): Hungarian on class + mask cost only
    nan = dict(out, pred_boxes=torch.full_like(out["pred_boxes"], float("nan")))
    (qn, kn), = DynamicKMatcher()(nan, [gt])
    assert sorted(zip(kn.tolist(), qn.tolist())) == [(0, 0), (1, 5)]
    # raw data-format targets are prepared by the matcher itself; an empty clip matches nothing
    empty = {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 2, 4),
             "masks": torch.zeros(0, 2, 32, 32, dtype=torch.bool), "valid": torch.zeros(0, 2, dtype=torch.bool)}
    (qe, ke), = DynamicKMatcher()(out, [empty])
    assert qe.numel() == 0 and ke.numel() == 0
