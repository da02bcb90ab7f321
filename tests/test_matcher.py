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
