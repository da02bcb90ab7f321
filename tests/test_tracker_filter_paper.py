"""Paper-style per-clip filtering (``--preset paper``): threshold, greedy near-duplicate queries, greedy
hard-IoU mask NMS, mask quality, crop. The default (authors') filter: test_tracker_filter.py."""
import numpy as np
import pytest

from runtime.clip_filter import FilterParams, mask_iou_matrix, sigmoid
from runtime.clip_filter import filter_clip as _filter_clip

T, H, W = 2, 20, 20


def filter_clip(outputs, n, hw):
    return _filter_clip(outputs, n, hw, FilterParams(style="paper"), embedding="pred_embeds")


def logit(p):
    return float(np.log(p / (1 - p)))


def box_mask(x0, x1, value=6.0):
    m = np.full((T, H, W), -6.0, np.float32)
    m[:, 5:15, x0:x1] = value
    return m


def outputs(scores, masks, embeds):
    Q = len(scores)
    return {"pred_logits": np.array([[logit(s), logit(0.01)] for s in scores], np.float32),
            "pred_masks": np.stack(masks).astype(np.float32),
            "pred_embeds": np.asarray(embeds, np.float32),
            "pred_boxes": np.zeros((Q, T, 4), np.float32)}


def q(x):
    return sigmoid(np.float32(6.0)) * x      # mean sigmoid inside a mask of constant logit 6


def test_threshold_keeps_min_of_thr_and_top():
    e = np.eye(3)
    d = filter_clip(outputs([0.5, 0.3, 0.05], [box_mask(0, 4), box_mask(8, 12), box_mask(15, 19)], e), T, (H, W))
    assert sorted(d.queries.tolist()) == [0, 1]
    # all below thr: the top one(s) survive (>= top score)
    d = filter_clip(outputs([0.06, 0.03, 0.06], [box_mask(0, 4), box_mask(8, 12), box_mask(15, 19)], e), T, (H, W))
    assert sorted(d.queries.tolist()) == [0, 2]


def test_near_duplicate_embeddings_dropped():
    e = np.array([[1, 0, 0], [1, 0.01, 0], [0, 1, 0]], np.float32)   # cos(0,1) > 0.99
    d = filter_clip(outputs([0.9, 0.8, 0.7], [box_mask(0, 4), box_mask(8, 12), box_mask(15, 19)], e), T, (H, W))
    assert sorted(d.queries.tolist()) == [0, 2]


def test_mask_nms_drops_high_iou_and_rescales_low_iou():
    e = np.eye(3)
    # IoU(0,1) = 8/12 >= 0.5 -> dropped; IoU(0,2) = 2/14 -> kept, scaled by (1 - 1/7)
    d = filter_clip(outputs([0.9, 0.8, 0.7], [box_mask(0, 10), box_mask(2, 12), box_mask(8, 14)], e), T, (H, W))
    assert d.queries.tolist() == [0, 2]
    assert d.scores[0, 0] == pytest.approx(q(0.9), rel=1e-5)
    assert d.scores[1, 0] == pytest.approx(q(0.7 * (1 - 2 / 14)), rel=1e-5)


def test_mask_quality_and_empty_masks():
    e = np.eye(2)
    weak = box_mask(0, 5, value=1.0)          # mean sigmoid inside = sigmoid(1)
    empty = np.full((T, H, W), -6.0, np.float32)
    d = filter_clip(outputs([0.8, 0.9], [weak, empty], e), T, (H, W))
    assert d.queries.tolist() == [0]
    assert d.scores[0, 0] == pytest.approx(0.8 * sigmoid(np.float32(1.0)), rel=1e-5)


def test_padding_and_short_clips_are_cropped():
    e = np.eye(1)
    m = box_mask(0, 5)
    m[:, :, 18:] = 6.0                         # "padding" area, outside valid_hw
    d = filter_clip(outputs([0.9], [m], e), 1, (H, 16))
    assert d.masks.shape == (1, 1, H, 16)       # one real frame, valid width only


def test_mask_iou_matrix_video_level():
    a = np.zeros((1, 2, 4, 4), bool)
    b = np.zeros((2, 2, 4, 4), bool)
    a[0, 0, :2] = True                          # 8 px in frame 0
    b[0, 0, :1] = True                          # 4 px overlap
    b[0, 1, 3] = True                           # 4 px, frame 1 only b
    iou = mask_iou_matrix(a, b)
    assert iou[0, 0] == pytest.approx(4 / 12) and iou[0, 1] == 0.0
    assert mask_iou_matrix(a[:0], b).shape == (0, 2)


def test_params_dataclass_defaults_are_the_papers():
    p = FilterParams()
    assert (p.score_thr, p.dup_cos, p.nms_iou) == (0.1, 0.99, 0.5)
