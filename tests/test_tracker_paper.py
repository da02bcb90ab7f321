"""Paper-style clip tracker (``--preset paper``, runtime.tracker_paper; paper Eq. 7) on synthetic clip
outputs from runtime.backends.fake.SyntheticScene. The default (authors') tracker: test_tracker_authors.py."""

import numpy as np
import pytest

import runtime.tracker_paper as tracker_mod
from runtime.backends.fake import SyntheticObject, SyntheticScene
from runtime.clip_filter import ClipDetections, filter_clip, mask_iou_matrix
from runtime.tracker import bi_softmax, preset, select_pairs
from runtime.tracker_paper import PaperClipTracker as ClipTracker

H, W, T = 40, 96, 4
PAPER_FILTER, PAPER = preset("paper")


def TrackerParams(**kw):
    """Paper preset with overrides."""
    return preset("paper", **kw)[1]


def run_scene(scene, n_frames, params=PAPER):
    """Run clips 0..n_frames-T through filter + tracker; return (tracker, log) where log is a list of
    (clip start, object index, track id) for every kept detection, objects identified by mask IoU."""
    tr = ClipTracker(scene.num_classes, params)
    log = []
    for s in range(n_frames - T + 1):
        frames = list(range(s, s + T))
        dets = filter_clip(scene.decoder_outputs(frames, H, W), T, (H, W), PAPER_FILTER, start=s,
                           embedding="pred_embeds")
        gt = np.stack([[scene.object_mask_logits(o, t, H, W) > 0 for t in frames] for o in scene.objects])
        iou = mask_iou_matrix(dets.masks > 0, gt)               # [K, objects]
        for k, tid in tr.update(dets):
            assert iou[k].max() > 0.5, "a kept detection matches no object"
            log.append((s, int(iou[k].argmax()), tid))
        tr.pop_frame(s)
    return tr, log


def ids_by_object(log):
    out = {}
    for _, obj, tid in log:
        out.setdefault(obj, set()).add(tid)
    return out


def test_scene_really_crosses_and_occludes():
    """Guard: the default scene has a crossing (A, B overlap) and a short occlusion (C hidden 6 frames)."""
    sc = SyntheticScene()
    a, b, c = sc.objects[:3]
    overlap = [t for t in range(60) if (
        (sc.object_mask_logits(a, t, H, W) > 0) & (sc.object_mask_logits(b, t, H, W) > 0)).any()]
    assert 15 in overlap and 45 in overlap
    assert [t for t in range(40) if not c.visible(t)] == list(range(20, 26))


def test_identities_kept_through_crossings_and_occlusions():
    sc = SyntheticScene()
    tr, log = run_scene(sc, 70)
    ids = ids_by_object(log)
    assert set(ids) == {0, 1, 2, 3}
    assert all(len(v) == 1 for v in ids.values()), f"identity switches: {ids}"
    tids = [next(iter(v)) for v in ids.values()]
    assert len(set(tids)) == 4                                  # one track per object
    assert tr.next_id - 1 == 4                                  # duplicates never started tracks
    # C (object 2) was really unseen while hidden (clips 20..22 contain none of its frames) and recovered
    c_clips = sorted(s for s, obj, _ in log if obj == 2)
    assert 20 not in c_clips and 21 not in c_clips and 22 not in c_clips and 23 in c_clips and 60 not in c_clips and 63 in c_clips


def test_new_track_started_when_object_appears():
    sc = SyntheticScene()
    _, log = run_scene(sc, 20)
    d_entries = [(s, tid) for s, obj, tid in log if obj == 3]
    first = min(s for s, _ in d_entries)
    assert first == 7                                           # first clip covering frame 10
    tid = d_entries[0][1]
    other = {t for s, obj, t in log if obj != 3}
    assert tid not in other and tid == max(other) + 1


def test_ids_stable_and_deterministic():
    a = run_scene(SyntheticScene(seed=3), 60)[1]
    b = run_scene(SyntheticScene(seed=3), 60)[1]
    assert a == b


def _dets(masks, embeds, scores, start):
    masks = np.asarray(masks, np.float32)
    return ClipDetections(scores=np.asarray(scores, np.float32), masks=masks,
                          embeds=np.asarray(embeds, np.float32), queries=np.arange(len(masks)), start=start)


def _disc(cx, h=H, w=W, r=8):
    yy, xx = np.mgrid[:h, :w]
    return np.where((yy - h / 2) ** 2 + (xx - cx) ** 2 <= r * r, 6.0, -6.0).astype(np.float32)


def test_duplicate_detection_suppressed_by_tracker():
    """A second detection of a tracked object (same masks, other embedding) is a duplicate, not a new track."""
    rng = np.random.default_rng(0)
    e = rng.normal(size=(3, 16)).astype(np.float32) * 3
    tr = ClipTracker(2, PAPER)
    m = np.stack([_disc(20 + t) for t in range(T)])
    assert tr.update(_dets([m], [e[0]], [[0.9, 0.0]], 0)) == [(0, 1)]
    tr.pop_frame(0)
    m2 = np.stack([_disc(21 + t) for t in range(T)])
    far = np.stack([_disc(80) for _ in range(T)])
    out = tr.update(_dets([m2, m2, far], [e[0], e[1], e[2]], [[0.9, 0], [0.8, 0], [0.9, 0]], 1))
    assert (0, 1) in out                        # matched to track 1
    assert all(k != 1 for k, _ in out)          # the copy was dropped (mIoU with track 1 > 0.4)
    assert (2, 2) in out                        # a real newcomer starts track 2
    assert tr.next_id == 3


def test_low_score_detection_does_not_start_track():
    tr = ClipTracker(2, TrackerParams(new_track_score=0.2))
    m = np.stack([_disc(30) for _ in range(T)])
    assert tr.update(_dets([m], [np.ones(8)], [[0.15, 0.1]], 0)) == []
    assert tr.update(_dets([m], [np.ones(8)], [[0.25, 0.1]], 1)) == [(0, 1)]


def test_assignment_uses_scipy_linear_sum_assignment(monkeypatch):
    calls = []
    real = tracker_mod.linear_sum_assignment

    def spy(cost, maximize=False):
        calls.append((np.array(cost), maximize))
        return real(cost, maximize=maximize)

    monkeypatch.setattr(tracker_mod, "linear_sum_assignment", spy)
    from scipy.optimize import linear_sum_assignment as scipy_lsa
    assert real is scipy_lsa
    run_scene(SyntheticScene(), 12)
    assert len(calls) == 12 - T + 1 - 1          # every clip after the first (which has no tracks yet)
    assert all(mx is True for _, mx in calls)


def test_assignment_result_is_what_the_tracker_applies(monkeypatch):
    """If the assignment function returns a swapped pairing, the tracker follows it (so it is the solver)."""
    def swapped(cost, maximize=False):
        r, c = tracker_mod.linear_sum_assignment.__wrapped__(cost, maximize=maximize)
        return r, c[::-1]

    from scipy.optimize import linear_sum_assignment as scipy_lsa
    swapped.__wrapped__ = scipy_lsa
    rng = np.random.default_rng(1)
    e = rng.normal(size=(2, 16)).astype(np.float32) * 3
    m0, m1 = np.stack([_disc(20)] * T), np.stack([_disc(70)] * T)
    tr = ClipTracker(1, PAPER)
    tr.update(_dets([m0, m1], e, [[0.9], [0.9]], 0))
    tr.pop_frame(0)
    monkeypatch.setattr(tracker_mod, "linear_sum_assignment", swapped)
    tr2_params = TrackerParams(match_thr=-10.0)   # accept any pair so the forced swap is applied
    tr.params = tr2_params
    out = tr.update(_dets([m0, m1], e, [[0.9], [0.9]], 1))
    assert sorted(out) == [(0, 2), (1, 1)]


def test_bi_softmax():
    a = np.array([[5.0, 0.0], [0.0, 5.0]])
    s = bi_softmax(a)
    assert s.shape == (2, 2) and s[0, 0] > 0.99 and s[0, 1] < 0.01
    assert np.allclose(bi_softmax(np.array([[3.0]])), 1.0)


@pytest.mark.parametrize("gap,same", [(10, True), (30, False)])
def test_track_ends_after_max_unseen_clips(gap, same):
    obj = SyntheticObject(0, 0.5, 0.5, ax=0.1, period=40, hidden=((20, 20 + gap),))
    sc = SyntheticScene(objects=[obj], add_duplicates=False)
    tr, log = run_scene(sc, 20 + gap + 10, TrackerParams(max_unseen=15))
    assert (len(ids_by_object(log)[0]) == 1) is same
    if not same:
        assert 1 in tr.ended                     # the first track was ended


def test_min_embed_cos_gate():
    """Paper default: with one live track the bi-softmax is 1 for any detection, so a newcomer that
    appears after the only object vanished inherits its id; the optional cosine gate prevents it."""
    objs = [SyntheticObject(0, 0.3, 0.5, end=20), SyntheticObject(1, 0.7, 0.5, start=26)]
    sc = SyntheticScene(objects=objs, add_duplicates=False, seed=5)
    cos = float(sc.embeddings[0] @ sc.embeddings[1]) / (np.linalg.norm(sc.embeddings[0]) * np.linalg.norm(sc.embeddings[1]))
    assert cos < 0.5
    _, log = run_scene(sc, 40)
    assert ids_by_object(log)[0] == ids_by_object(log)[1]
    _, log = run_scene(sc, 40, TrackerParams(min_embed_cos=0.5))
    assert ids_by_object(log)[0] != ids_by_object(log)[1]


def test_select_pairs_keeps_max_of_confident_and_ten():
    from runtime.tracker import TrackSummary
    s = [TrackSummary(i + 1, np.array([0.9 - 0.1 * i, 0.01]), 1) for i in range(3)]
    pairs = select_pairs(s)
    assert len(pairs) == 6 and pairs[0] == (1, 0, pytest.approx(0.9))
    many = [TrackSummary(i + 1, np.array([0.5, 0.4]), 1) for i in range(8)]
    assert len(select_pairs(many)) == 16           # 16 pairs > 0.05, more than 10
    assert len(select_pairs(many, min_score=0.45)) == 10   # 8 pairs > 0.45, kept up to 10


def test_video_score_is_mean_and_max_mix():
    tr = ClipTracker(1, PAPER)
    m = np.stack([_disc(30)] * T)
    e = np.ones(8, np.float32)
    for i, s in enumerate([0.4, 0.8, 0.6]):
        tr.update(_dets([m], [e], [[s]], i))
        tr.pop_frame(i)
    (summary,) = list(tr.summaries())
    assert summary.scores[0] == pytest.approx(0.75 * 0.6 + 0.25 * 0.8)
    assert summary.n_clips == 3
