"""Per-clip filtering, the authors' rules (MDQE.inference_clip; docs/fidelity.md), one by one.

The paper-style filter (``--preset paper``) is tested in test_tracker_filter_paper.py.
"""
import numpy as np
import pytest

from runtime.clip_filter import FilterParams, ParamError, filter_clip, sigmoid, soft_iou_max
from runtime.tracker import preset

T, H, W = 2, 20, 20
BIG = 20.0          # |logit| for which sigmoid is 0 / 1 to float32 precision


def logit(p):
    return float(np.log(p / (1 - p)))


def box(y0, y1, x0, x1, frames=T, h=H, w=W, value=BIG):
    m = np.full((frames, h, w), -BIG, np.float32)
    m[:, y0:y1, x0:x1] = value
    return m


def outputs(scores, masks, queries):
    Q = len(scores)
    q = np.asarray(queries, np.float32)
    return {"pred_logits": np.array([[logit(s), logit(0.01)] for s in scores], np.float32),
            "pred_masks": np.stack(masks).astype(np.float32), "pred_queries": q,
            "pred_embeds": np.zeros((Q, 3), np.float32), "pred_boxes": np.zeros((Q, T, 4), np.float32)}


def run(o, frames=T, hw=(H, W), **kw):
    return filter_clip(o, frames, hw, FilterParams(**kw))


def test_duplicates_by_raw_query_against_every_higher_ranked_query():
    """cos(A,B) and cos(B,C) >= 0.99 but cos(A,C) < 0.99: B and C both go (C is compared with B even
    though B itself was dropped); the greedy paper walk keeps C. Uses pred_queries, not pred_embeds."""
    a = np.array([1.0, 0.0, 0.0])
    b = np.array([np.cos(0.1), np.sin(0.1), 0.0])
    c = np.array([np.cos(0.2), np.sin(0.2), 0.0])
    assert a @ b > 0.99 and b @ c > 0.99 and a @ c < 0.99
    masks = [box(0, 4, 0, 4), box(8, 12, 8, 12), box(15, 19, 15, 19)]
    d = run(outputs([0.9, 0.8, 0.7], masks, [a, b, c]))
    assert d.queries.tolist() == [0]
    d = filter_clip(outputs([0.9, 0.8, 0.7], masks, [a, b, c]), T, (H, W), FilterParams(style="paper"),
                    embedding="pred_queries")
    assert d.queries.tolist() == [0, 2]


def test_at_most_max_queries_after_the_duplicate_test():
    Q = 6
    masks = [box(0, 2, 3 * i, 3 * i + 2) for i in range(Q)]
    d = run(outputs([0.9 - 0.05 * i for i in range(Q)], masks, np.eye(Q)), max_queries=4)
    assert sorted(d.queries.tolist()) == [0, 1, 2, 3]
    assert preset("ytvis")[0].max_queries == 100 and preset("ovis")[0].max_queries == 150


def test_blank_masks_dropped_before_nms():
    """A higher-ranked query without any positive logit must not suppress anything: its soft mask
    (sigmoid(-0.5) = 0.38 everywhere) would give a soft IoU with B if it entered the NMS."""
    blank = np.full((T, H, W), -0.5, np.float32)
    b = box(5, 15, 5, 15)
    with_blank = run(outputs([0.9, 0.8], [blank, b], np.eye(2)))
    alone = run(outputs([0.8], [b], np.eye(1)))
    assert with_blank.queries.tolist() == [1]
    assert with_blank.scores[0, 0] == alone.scores[0, 0]


def test_soft_iou_nms_plus_one_on_masks_downsampled_by_2():
    """A: rows 0-9, cols 0-9; B: rows 0-9, cols 4-13. Downsampled by 2 (even rows/cols): |A| = |B| = 25
    px per frame, overlap 15 -> soft IoU = 2*15 / (50 + 50 - 30 + 1) = 30/71 (the hard IoU at full
    resolution would be 120/280). B is kept, its score scaled by 1 - 30/71."""
    d = run(outputs([0.9, 0.8], [box(0, 10, 0, 10), box(0, 10, 4, 14)], np.eye(2)))
    assert d.queries.tolist() == [0, 1]
    assert d.scores[1, 0] == pytest.approx(0.8 * (1 - 30 / 71), rel=1e-5)
    assert soft_iou_max(np.stack([box(0, 10, 0, 10), box(0, 10, 4, 14)]))[1] == pytest.approx(30 / 71, rel=1e-6)


def test_nms_against_all_higher_ranked_queries_even_suppressed_ones():
    """B overlaps A (soft IoU >= 0.5) and C overlaps B but hardly A: B goes and C goes too, because the
    authors compare C with every higher-ranked query, B included."""
    a, b, c = box(0, 10, 0, 10), box(0, 10, 2, 12), box(0, 10, 4, 14)
    m = soft_iou_max(np.stack([a, b, c]))
    assert m[1] >= 0.5 and m[2] >= 0.5
    assert soft_iou_max(np.stack([a, c]))[1] < 0.5
    d = run(outputs([0.9, 0.8, 0.7], [a, b, c], np.eye(3)))
    assert d.queries.tolist() == [0]


def test_every_second_frame_when_clip_has_5_or_more_frames():
    """With F >= 5 frames the NMS looks at frames 0, 2, 4 only: an overlap confined to frames 1 and 3
    does not count."""
    a = box(0, 10, 0, 10, frames=5)
    b = box(0, 10, 12, 20, frames=5)
    b[1], b[3] = a[1], a[3]
    assert soft_iou_max(np.stack([a, b]))[1] < 1e-6
    assert soft_iou_max(np.stack([a[:4], b[:4]]))[1] > 0.3


def test_keep_score_above_thr_after_rescoring_at_least_one():
    """Probabilities 0.15 and 0.12 with mask quality sigmoid(0.5) = 0.62 -> 0.093 and 0.075 < 0.1:
    only the best one stays (at least one)."""
    q1, q2 = box(0, 5, 0, 5, value=0.5), box(10, 15, 10, 15, value=0.5)
    d = run(outputs([0.15, 0.12], [q1, q2], np.eye(2)))
    assert d.queries.tolist() == [0]
    assert d.scores[0, 0] == pytest.approx(0.15 * float(sigmoid(np.float32(0.5))), rel=1e-5)
    d = run(outputs([0.5, 0.12], [box(0, 5, 0, 5), q2], np.eye(2)))
    assert d.queries.tolist() == [0]                           # 0.12 * 0.62 < 0.1 goes


def test_whole_padded_map_is_used():
    """The authors filter on the whole (padded) mask map: a mask positive only in the padded columns is
    not blank, and masks keep their full width (the crop happens after upsampling)."""
    m = box(0, 5, 17, 20)
    d = run(outputs([0.9], [m], np.eye(1)), hw=(H, 16))
    assert d.queries.tolist() == [0] and d.masks.shape == (1, T, H, W)


def test_sorted_by_score_and_short_clips():
    d = run(outputs([0.5, 0.9], [box(0, 4, 0, 4), box(10, 14, 10, 14)], np.eye(2)), frames=1)
    assert d.queries.tolist() == [1, 0] and d.masks.shape[1] == 1


def test_missing_pred_queries_is_a_clear_error():
    from runtime.clip_filter import require_embedding
    o = outputs([0.9], [box(0, 4, 0, 4)], np.eye(1))
    del o["pred_queries"]
    msg = require_embedding(o, "pred_queries")
    assert "pred_queries" in msg and "--track-embedding pred_embeds" in msg
    assert require_embedding(o, "pred_embeds") is None


@pytest.mark.parametrize("kw", [dict(score_thr=float("nan")), dict(dup_cos=2.0), dict(nms_iou=-1.0),
                                dict(max_queries=0), dict(style="x")])
def test_bad_filter_params(kw):
    with pytest.raises(ParamError):
        FilterParams(**kw)
