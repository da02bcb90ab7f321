"""The default tracker = the authors' OverTracker results (docs/fidelity.md), behaviour by behaviour.

Hand-built clip detections (runtime.clip_filter.ClipDetections) drive runtime.tracker.ClipTracker;
expected values are computed here from the rules. The paper-style tracker: test_tracker_paper.py.
End-to-end parity with the authors' code: tools/parity/tracker.py (docs/fidelity.md).
"""

import numpy as np
import pytest

import runtime.tracker as tracker_mod
from runtime.backends.fake import SyntheticScene
from runtime.clip_filter import ClipDetections, ParamError, filter_clip
from runtime.tracker import ClipTracker, TrackerParams, ctt_similarity, preset

H, W, T = 24, 48, 4


def dets(masks, embeds, scores, start, frames=T):
    """ClipDetections from per-detection masks ([frames,H,W] logits or an x-centre for a disc)."""
    ms = []
    for m in masks:
        ms.append(np.stack([disc(m)] * frames) if np.isscalar(m) else np.asarray(m, np.float32))
    return ClipDetections(scores=np.asarray(scores, np.float32).reshape(len(ms), -1),
                          masks=np.asarray(ms, np.float32).reshape(len(ms), frames, H, W),
                          embeds=np.asarray(embeds, np.float32).reshape(len(ms), -1),
                          queries=np.arange(len(ms)), start=start)


def disc(cx, r=5, value=6.0):
    yy, xx = np.mgrid[:H, :W]
    return np.where((yy - H / 2) ** 2 + (xx - cx) ** 2 <= r * r, value, -value).astype(np.float32)


def step(tr, d):
    out = tr.update(d)
    tr.pop_frame(d.start)
    return out


E3 = np.eye(3, dtype=np.float32) * 4


def test_defaults_are_the_authors_and_presets_differ_where_they_do():
    f, t = preset("ytvis")
    assert (t.max_unseen, t.short_unseen, t.memory_clips, t.memory_decay, t.max_tracks) == (15, 5, 3, 0.25, 70)
    assert (t.match_thr, t.dup_iou, t.dup_sim, t.window_clips, t.embedding) == (0.6, 0.4, 0.6, 30, "pred_queries")
    assert t.new_track_thr == pytest.approx(0.2) and preset("ytvis", score_thr=0.2)[1].new_track_thr == pytest.approx(0.4)
    assert preset("ovis")[1].max_tracks == 120 and t == TrackerParams()
    assert preset("paper")[1].style == "paper" and preset("paper")[1].embedding == "pred_embeds"


def test_every_detection_of_the_first_clip_starts_a_track():
    """Score 0.12 < 2 * 0.1 starts a track in the first clip (no track yet), not later."""
    tr = ClipTracker(2, num_frames=T)
    assert step(tr, dets([10, 30], E3[:2], [[0.9, 0], [0.12, 0]], 0)) == [(0, 1), (1, 2)]
    out = step(tr, dets([10, 30, 44], E3, [[0.9, 0], [0.9, 0], [0.15, 0]], 1))
    assert sorted(out) == [(0, 1), (1, 2)]


def test_track_cap():
    tr = ClipTracker(1, TrackerParams(max_tracks=2), num_frames=T)
    assert len(step(tr, dets([6, 24, 42], E3, [[0.9], [0.9], [0.9]], 0))) == 2
    assert tr.next_id == 3


def test_bi_softmax_edge_cases():
    one = np.array([[1.0, 2.0]], np.float32)
    assert np.allclose(ctt_similarity(one[:, :1], one[:, :1].T[:1]), 1.0)          # 1 track, 1 det
    mem = np.array([[1.0, 0.0]], np.float32)
    emb = np.array([[2.0, 0.0], [0.0, 1.0]], np.float32)
    s = ctt_similarity(mem, emb)                        # 1 track: softmax over the detections only
    assert np.allclose(s, np.exp([2.0, 0.0]) / np.exp([2.0, 0.0]).sum())
    s = ctt_similarity(emb, mem)                        # 1 detection: softmax over the tracks only
    assert np.allclose(s[:, 0], np.exp([2.0, 0.0]) / np.exp([2.0, 0.0]).sum())
    a = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
    f = a @ (2 * a).T
    both = 0.5 * (np.exp(f) / np.exp(f).sum(0) + np.exp(f) / np.exp(f).sum(1, keepdims=True))
    assert np.allclose(ctt_similarity(a, 2 * a), both)


def test_memory_embedding_last_three_clip_slots_weighted_exp_quarter():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(5, 8)).astype(np.float32)
    tr = ClipTracker(1, num_frames=T)
    for c in range(4):
        step(tr, dets([20], e[c:c + 1], [[0.9]], c))
    w = np.exp(0.25 * np.arange(3))
    assert np.allclose(tr.MEM[0], (w[:, None] * e[1:4]).sum(0) / w.sum(), atol=1e-6)
    # a clip without the track, then matched again: the missing slot is left out
    tr2 = ClipTracker(1, num_frames=T)
    step(tr2, dets([20], e[0:1], [[0.9]], 0))
    step(tr2, dets([20], e[1:2], [[0.9]], 1))
    step(tr2, ClipDetections(np.zeros((0, 1), np.float32), np.zeros((0, T, H, W), np.float32),
                             np.zeros((0, 8), np.float32), np.zeros(0, np.int64), start=2))
    tr2._mask_iou = lambda d, c: np.ones((tr2.num_live, len(d)), np.float32)   # force the match
    step(tr2, dets([20], e[3:4], [[0.9]], 3))
    # slots 1, 2, 3 with weights w0, w1, w2: slot 2 (clip 2) holds nothing
    assert np.allclose(tr2.MEM[0], (w[0] * e[1] + w[2] * e[3]) / (w[0] + w[2]), atol=1e-6)


def test_long_and_short_memory():
    """Similarity of a track seen within 5 clips = mean of the long (all tracks within 15) and the short
    bi-softmax; a track unseen 7 clips only gets the long one; unseen 16 clips gets 0."""
    tr = ClipTracker(1, num_frames=T)
    e = E3
    step(tr, dets([6, 24, 42], e, [[0.9]] * 3, 0))
    tr.LAST[:3] = [9, 3, -7]                # clip 10: unseen 0, 6 and 16 clips
    tr.clip_index = 9
    d = dets([6, 24, 42], e, [[0.9]] * 3, 10)
    s = tr._similarity(d, 10)
    long = ctt_similarity(tr.MEM[:2], d.embeds)
    short = ctt_similarity(tr.MEM[:1], d.embeds)
    assert np.allclose(s[0], 0.5 * (long[0] + short[0]))
    assert np.allclose(s[1], long[1])
    assert np.all(s[2] == 0)


def test_mask_iou_counts_frames_where_the_track_has_no_mask():
    """Track mask only in frame 1 of the 3 shared frames; the detection covers frames 1 and 2: the
    union counts the detection's frame-2 pixels (IoU 1/2, not 1)."""
    tr = ClipTracker(1, num_frames=T)
    m = np.stack([disc(10, value=6.0)] * T)
    m[0] = m[2] = m[3] = -6.0
    step(tr, dets([m], E3[:1], [[0.9]], 0))
    d = np.stack([disc(10)] * T)
    d[2] = -6.0                              # clip-1 frames 0,1,2 = video frames 1,2,3
    iou = tr._mask_iou(dets([d], E3[:1], [[0.9]], 1), 1)
    # shared frames 1,2,3 of clip 1 = clip-0 frames 1,2,3: track has a mask in frame 1 only
    a = int((disc(10) > 0).sum())
    assert iou[0, 0] == pytest.approx(a / (2 * a + 1e-6), rel=1e-5)


def test_pairs_at_or_below_threshold_are_zeroed_before_the_assignment():
    """S = [[0.9, 0.7], [0.5, 0]]: on the raw S the assignment would take (0,1)+(1,0) = 1.2 and keep only
    (0,1); with S <= 0.6 zeroed first it takes (0,0)."""
    tr = ClipTracker(1, num_frames=T)
    step(tr, dets([6, 40], E3[:2], [[0.9], [0.9]], 0))
    S = np.array([[0.9, 0.7], [0.5, 0.0]], np.float32)
    tr._mask_iou = lambda d, c: S
    tr._similarity = lambda d, c: np.zeros_like(S)
    out = step(tr, dets([6, 24], E3[:2], [[0.9], [0.9]], 1))
    assert (0, 1) in out and (1, 1) not in out


def test_duplicate_and_new_track_rules():
    tr = ClipTracker(1, num_frames=T)
    step(tr, dets([10], E3[:1], [[0.9]], 0))
    S_iou = np.array([[0.0, 0.45, 0.0, 0.0]], np.float32)
    S_sim = np.array([[0.9, 0.0, 0.0, 0.0]], np.float32)
    tr._mask_iou = lambda d, c: S_iou
    tr._similarity = lambda d, c: S_sim
    out = step(tr, dets([10, 20, 30, 40], np.eye(4)[:, :3], [[0.9], [0.9], [0.25], [0.15]], 1))
    # det 0 matched (0.9 > 0.6); det 1 duplicate (IoU 0.45 > 0.4); det 2 new (0.25 > 0.2); det 3 too low
    assert out == [(0, 1), (2, 2)]


def test_video_score_over_windows_with_carry_over():
    """window_clips 2: window 0 = clips 0,1 (0.4, 0.8 -> 0.6); the track was seen in the window's last
    T-1 clips, so window 1 starts with that 0.6 as one entry: (0.6 + 0.9) / 2 = 0.75. Video score =
    0.75 * mean(0.6, 0.75) + 0.25 * max = 0.69375 (without the collapse: window 1 = 0.9 -> 0.7875)."""
    for collapse, want in ((True, 0.69375), (False, 0.75 * 0.75 + 0.25 * 0.9)):
        tr = ClipTracker(1, TrackerParams(window_clips=2, collapse_windows=collapse), num_frames=T)
        for c, s in enumerate([0.4, 0.8, 0.9]):
            step(tr, dets([20], E3[:1], [[s]], c))
        tr.finish()
        (summ,) = list(tr.summaries())
        assert summ.scores[0] == pytest.approx(want, rel=1e-6)


def test_window_score_is_zero_where_the_track_is_absent():
    """A track born in window 1 of 2: mean over both windows counts window 0 as 0."""
    tr = ClipTracker(1, TrackerParams(window_clips=2), num_frames=T)
    step(tr, dets([6], E3[:1], [[0.9]], 0))
    step(tr, dets([6], E3[:1], [[0.9]], 1))
    tr._mask_iou = lambda d, c: np.zeros((tr.num_live, len(d)), np.float32)
    tr._similarity = lambda d, c: np.zeros((tr.num_live, len(d)), np.float32)
    step(tr, dets([40], E3[1:2], [[0.8]], 2))
    tr.finish()
    s = {x.track_id: x.scores[0] for x in tr.summaries()}
    assert s[2] == pytest.approx(0.75 * 0.4 + 0.25 * 0.8, rel=1e-6)


def test_masks_averaged_and_collapsed_at_window_boundaries():
    """Frame 2 covered by clips 0, 1 (window 0) and 2 (window 1), logits 1, 1, -4 at a pixel: the authors'
    collapse gives ((1 + 1) / 2 + -4) / 2 = -1.5; the plain mean -2/3."""
    for collapse, want in ((True, -1.5), (False, -2.0 / 3.0)):
        tr = ClipTracker(1, TrackerParams(window_clips=2, collapse_windows=collapse), num_frames=T)
        for c, v in enumerate([1.0, 1.0, -4.0]):
            m = np.stack([disc(20)] * T)
            m[:, 0, 0] = v
            tr.update(dets([m], E3[:1], [[0.9]], c))
            if c < 2:
                tr.pop_frame(c)
        frame2 = dict(tr.pop_frame(2))[1]
        assert frame2[0, 0] == pytest.approx(want, rel=1e-6)


def test_truncated_last_clip_and_embedding_choice_in_the_pipeline(tmp_path):
    from runtime.backends.fake import FakeBackend, fake_spec
    from runtime.pipeline import RunOptions, run_video
    from runtime.samples import make_looped_video, sample_video
    video = make_looped_video(sample_video(), str(tmp_path / "v.mp4"), 12, size=(160, 96))
    spec = fake_spec(shorter_side=96, max_size=192)
    t = run_video(video, str(tmp_path / "a"), FakeBackend(spec=spec), RunOptions(progress=False, overlay=False))
    assert t["decoder_clips"] == 12 - T + 2                     # + the truncated clip of T-1 frames
    f, tp = preset("ytvis", tail_clip=False)
    t = run_video(video, str(tmp_path / "b"), FakeBackend(spec=spec),
                  RunOptions(filter=f, tracker=tp, progress=False, overlay=False))
    assert t["decoder_clips"] == 12 - T + 1


def test_missing_pred_queries_errors_and_fallback(tmp_path):
    from runtime.backends.fake import FakeBackend, fake_spec
    from runtime.errors import ModelDirError
    from runtime.pipeline import RunOptions, run_video
    from runtime.samples import make_looped_video, sample_video

    class OldExport(FakeBackend):
        def decode(self, feats):
            out = super().decode(feats)
            del out["pred_queries"]
            return out

    video = make_looped_video(sample_video(), str(tmp_path / "v.mp4"), 6, size=(160, 96))
    spec = fake_spec(shorter_side=96, max_size=192)
    with pytest.raises(ModelDirError, match="pred_queries"):
        run_video(video, str(tmp_path / "a"), OldExport(spec=spec), RunOptions(progress=False, overlay=False))
    f, tp = preset("ytvis", embedding="pred_embeds")
    t = run_video(video, str(tmp_path / "b"), OldExport(spec=spec),
                  RunOptions(filter=f, tracker=tp, progress=False, overlay=False))
    assert t["tracks"] >= 3


def test_identities_through_crossings_and_occlusions_with_the_fake_scene():
    sc = SyntheticScene()
    f, p = preset("ytvis")
    tr = ClipTracker(sc.num_classes, p, num_frames=T)
    seen = {}
    for s in range(70 - T + 1):
        out = sc.decoder_outputs(list(range(s, s + T)), H, W)
        d = filter_clip(out, T, (H, W), f, start=s)
        gt = np.stack([[sc.object_mask_logits(o, t, H, W) > 0 for t in range(s, s + T)] for o in sc.objects])
        for k, tid in tr.update(d):
            inter = ((d.masks[k] > 0)[None] & gt).sum((1, 2, 3))
            seen.setdefault(int(inter.argmax()), set()).add(tid)
        tr.pop_frame(s)
    assert all(len(v) == 1 for v in seen.values()) and len(seen) == 4, seen


def test_assignment_is_scipy_maximize(monkeypatch):
    calls = []
    real = tracker_mod.linear_sum_assignment

    def spy(cost, maximize=False):
        calls.append(maximize)
        return real(cost, maximize=maximize)

    monkeypatch.setattr(tracker_mod, "linear_sum_assignment", spy)
    tr = ClipTracker(1, num_frames=T)
    for c in range(3):
        step(tr, dets([10 + c], E3[:1], [[0.9]], c))
    assert calls == [True, True]


@pytest.mark.parametrize("kw", [dict(memory_clips=0), dict(memory_decay=float("nan")), dict(beta1=float("inf")),
                                dict(score_thr=float("nan")), dict(max_unseen=-1), dict(window_clips=0),
                                dict(max_tracks=-3), dict(embedding="x")])
def test_tracker_params_validated(kw):
    with pytest.raises(ParamError, match="--" + next(iter(kw)).replace("_", "-").replace("embedding", "track-embedding")):
        TrackerParams(**kw)


def test_preset_follows_the_model():
    from runtime.tracker import preset_for_model
    assert preset_for_model("r50_ovis") == "ovis" and preset_for_model("", {"name": "r50_ovis"}) == "ovis"
    assert preset_for_model("r50_ytvis21") == "ytvis" and preset_for_model("tiny") == "ytvis"
    with pytest.raises(ParamError, match="--preset"):
        preset("coco")
