"""Training targets in the authors' form, on hand-made cases: soft mask targets, the target
preparation, and the init-sem peak targets (their ClipPeakMatcher)."""
import pytest
import torch

from mdqe.losses import downsample_masks, peak_targets, prepare_target, reference_points, soft_mask_targets


def test_soft_mask_targets_are_bilinear_not_binarised():
    m = torch.zeros(1, 1, 8, 8, dtype=torch.bool)
    m[..., :, 2] = True        # column 2 of 8
    # bilinear, align_corners False, 8 -> 2: output column 0 samples x = 1.5, between off (1) and on (2)
    assert soft_mask_targets(m, (2, 2))[0, 0].tolist() == [[0.5, 0.0], [0.5, 0.0]]
    # the paper-style area threshold (1/4 of the cell) gives 0 there
    assert downsample_masks(m, (2, 2))[0, 0].tolist() == [[0.0, 0.0], [0.0, 0.0]]
    m[..., :, 1] = True        # columns 1-2: x = 1.5 lies between two on pixels
    assert soft_mask_targets(m, (2, 2))[0, 0].tolist() == [[1.0, 0.0], [1.0, 0.0]]
    assert soft_mask_targets(torch.zeros(0, 3, 8, 8, dtype=torch.bool), (2, 2)).shape == (0, 3, 2, 2)


def test_prepare_target_xyxy_valid_ranked_ids_and_soft_masks():
    T, H, W = 2, 16, 16
    masks = torch.zeros(3, T, H, W, dtype=torch.bool)
    masks[0, :, :8, :8] = True
    masks[1, 1, 8:, 8:] = True          # absent in frame 0
    masks[2, :, 4:12, 4:12] = True
    boxes = torch.tensor([[[0.25, 0.25, 0.5, 0.5]] * 2, [[0.0, 0.0, 0.0, 0.0], [0.75, 0.75, 0.5, 0.5]],
                          [[0.5, 0.5, 0.5, 0.5]] * 2])
    valid = masks.flatten(2).any(-1)
    tgt = {"labels": torch.tensor([3, 1, 0]), "ids": torch.tensor([30, 10, 20]), "boxes": boxes, "masks": masks,
           "valid": valid}
    p = prepare_target(tgt, (4, 4))
    assert p["boxes_xyxy"][0, 0].tolist() == [0.0, 0.0, 0.5, 0.5]
    assert p["boxes_xyxy"][1].tolist() == [[0.0] * 4, [0.5, 0.5, 1.0, 1.0]]
    assert p["box_valid"].tolist() == [[True, True], [False, True], [True, True]]
    # ids replaced by their rank (ascending id), -1 where absent
    assert p["ids_nt"].tolist() == [[2, 2], [-1, 0], [1, 1]]
    # equal ids (one instance for init-reid, as in the authors' code) keep one rank
    assert prepare_target(dict(tgt, ids=torch.tensor([30, 10, 30])), (4, 4))["ids_nt"].tolist() == \
        [[1, 1], [-1, 0], [1, 1]]
    assert p["match_masks"].shape == (3, T, 4, 4) and p["masks"].dtype == torch.float32


def test_reference_points_are_pixel_centres():
    ref = reference_points((2, 4))
    assert ref.tolist() == [[0.125, 0.25], [0.375, 0.25], [0.625, 0.25], [0.875, 0.25],
                            [0.125, 0.75], [0.375, 0.75], [0.625, 0.75], [0.875, 0.75]]


def _peak_case():
    """A 2x4 semantic map of a 16x32 frame (stride 8), three instances, T = 1."""
    masks = torch.zeros(3, 1, 16, 32, dtype=torch.bool)
    masks[0, 0, 0:8, 8:16] = True       # A, label 1: exactly map pixel (0, 1)
    masks[1, 0, 0:16, 8:32] = True      # B, label 2: map pixels (0..1, 1..3), larger than A
    masks[2, 0, 0, 0] = True            # C, label 0: one pixel, lost when resized to the map
    xyxy = torch.tensor([[[0.25, 0.0, 0.5, 0.5]], [[0.25, 0.0, 1.0, 1.0]], [[0.0, 0.0, 1 / 32, 1 / 16]]])
    return {"labels": torch.tensor([1, 2, 0]), "boxes_xyxy": xyxy, "ids_nt": torch.tensor([[5], [6], [7]]),
            "masks": masks.float()}


def test_peak_targets_by_hand():
    lab, dist, ids = peak_targets(_peak_case(), (2, 4), num_classes=3)
    ref = reference_points((2, 4))

    def weight(c, wh, p):
        d = sum(((c[i] - ref[p, i].item()) / max(wh[i], 0.05)) ** 2 for i in range(2))
        return 1 - 2 * min(max(d, 0.0), 0.5)

    # order: smallest mean box area first -> C, A, B.
    # C's mask misses the map: it takes its nearest pixel (0, 0), weight from its distance.
    assert lab[0, 0].item() == 0 and ids[0, 0].item() == 7
    assert dist[0, 0, 0].item() == pytest.approx(weight((1 / 64, 1 / 32), (1 / 32, 1 / 16), 0), abs=1e-6)
    # A takes pixel 1 at its centre (weight 1); B, larger, overwrites the class and id of pixel 1
    # and gives it weight 0 at class 2, while A's weight at class 1 stays.
    assert lab[0].tolist() == [0, 2, 2, 2, -1, 2, 2, 2]
    assert ids[0].tolist() == [7, 6, 6, 6, -1, 6, 6, 6]
    assert dist[0, 1].tolist() == [0.0, 1.0, 0.0]
    for p in (2, 3, 5, 6, 7):
        assert dist[0, p, 2].item() == pytest.approx(weight((0.625, 0.5), (0.75, 1.0), p), abs=1e-6)
        assert dist[0, p, :2].tolist() == [0.0, 0.0]
    assert dist[0, 4].tolist() == [0.0, 0.0, 0.0]


def test_peak_targets_skip_absent_frames_and_invalid_instances():
    case = _peak_case()
    case["ids_nt"] = torch.tensor([[5], [-1], [7]])     # B absent in this frame
    lab, _, _ = peak_targets(case, (2, 4), num_classes=3)
    assert lab[0].tolist() == [0, 1, -1, -1, -1, -1, -1, -1]
    case = _peak_case()
    case["boxes_xyxy"][0] = 0                          # A: empty box in every frame -> dropped
    lab, _, _ = peak_targets(case, (2, 4), num_classes=3)
    assert 1 not in lab[0].tolist()
    # without masks: pixels whose normalised squared distance is below 0.5. For B (centre (0.625, 0.5),
    # size (0.75, 1)): pixel (1, 0) at (0.125, 0.75) is at (0.5/0.75)^2 + 0.25^2 = 0.507 -> out;
    # pixel (1, 1) at 0.174 -> in. C (no pixel under 0.5) takes its nearest pixel (0, 0).
    lab, _, _ = peak_targets(_peak_case(), (2, 4), num_classes=3, use_masks=False)
    assert lab[0, 4].item() == -1 and lab[0, 5].item() == 2 and lab[0, 0].item() == 0
    empty = {"labels": torch.zeros(0, dtype=torch.long), "boxes_xyxy": torch.zeros(0, 2, 4),
             "ids_nt": torch.zeros(0, 2, dtype=torch.long), "masks": torch.zeros(0, 2, 16, 32)}
    lab, dist, ids = peak_targets(empty, (2, 4), num_classes=3)
    assert (lab == -1).all() and (ids == -1).all() and dist.shape == (2, 8, 3) and dist.sum() == 0
