"""The native post-processing kernels (runtime/native/postprocess.py, libmdqe_msda.so) against their
numpy forms: the per-clip filter, the tracker's mask IoU and memory, and the final masks' RLE.

Integer results (kept queries, track ids, intersections, RLEs) must be identical; float scores
agree within 2e-6 relative (the kernels' float32 sigmoid is within 2 ulp of numpy's and they sum
in double).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from runtime.clip_filter import filter_clip, soft_iou_max
from runtime.masks import MaskPostprocessor
from runtime.rle import rle_from_block
from runtime.native import postprocess as npp
from runtime.preprocess import FrameGeometry
from runtime.tracker import make_tracker, preset

pytestmark = pytest.mark.skipif(not npp.available(), reason="libmdqe_msda.so without the post-processing kernels")


@pytest.fixture
def numpy_form():
    """Run the body with the numpy forms, then restore."""
    prev = npp.use_native(False)
    yield
    npp.use_native(prev)


def both(fn):
    """fn() with the native kernels and with numpy: (native, numpy)."""
    prev = npp.use_native(True)
    try:
        a = fn()
        npp.use_native(False)
        b = fn()
    finally:
        npp.use_native(prev)
    return a, b


def scene_outputs(rng, Q=40, C=5, T=4, h=30, w=44, n_obj=8, dup=4, blank=3):
    """Decoder outputs with discs (some crossing the borders), shifted duplicates and blank queries
    above the score threshold."""
    logits = (-5 + 0.5 * rng.standard_normal((Q, C))).astype(np.float32)
    masks = (-8 + rng.standard_normal((Q, T, h, w))).astype(np.float32)
    queries = rng.standard_normal((Q, 16)).astype(np.float32)
    yy, xx = np.mgrid[:h, :w]
    slots = rng.permutation(Q)
    for k in range(n_obj):
        q = slots[k]
        logits[q, k % C] = 2 + rng.standard_normal()
        cy, cx, r = rng.uniform(-2, h + 2), rng.uniform(-2, w + 2), rng.uniform(2, 9)
        for t in range(T):
            d = np.hypot(yy - cy - t, xx - cx)
            masks[q, t] = np.clip((r - d) * 2, -12, 9) + 0.5 * rng.standard_normal((h, w))
    for j in range(dup):
        src, q = slots[j], slots[n_obj + j]
        logits[q] = logits[src] - 0.5
        masks[q] = np.roll(masks[src], 1, axis=-1)
    for j in range(blank):
        logits[slots[n_obj + dup + j], 0] = 1.5          # scores well, mask all negative
    return {"pred_logits": logits, "pred_masks": masks, "pred_queries": queries}


@pytest.mark.parametrize("T,F", [(4, 4), (4, 3), (6, 6), (6, 5), (1, 1)])
def test_filter_clip_native_equals_numpy(T, F):
    rng = np.random.default_rng(T * 10 + F)
    f, _ = preset("ytvis")
    for s in range(4):
        out = scene_outputs(rng, T=T, h=31 if s % 2 else 30, w=45 if s % 2 else 44)
        a, b = both(lambda: filter_clip(out, F, (30, 44), f, start=s))
        assert np.array_equal(a.queries, b.queries)
        np.testing.assert_allclose(a.scores, b.scores, rtol=2e-6, atol=1e-8)
        np.testing.assert_array_equal(a.masks, b.masks)
        assert a.bits is not None and b.bits is None
        np.testing.assert_array_equal(a.bits, npp.positive_bits(out["pred_masks"], a.queries, np.arange(F)))


def test_filter_clip_all_blank_and_single_candidate():
    rng = np.random.default_rng(3)
    f, _ = preset("ytvis")
    out = scene_outputs(rng, n_obj=0, dup=0, blank=5)
    a, b = both(lambda: filter_clip(out, 4, (30, 44), f))
    assert len(a) == len(b) == 0
    out = scene_outputs(rng, n_obj=1, dup=0, blank=0)
    a, b = both(lambda: filter_clip(out, 4, (30, 44), f))
    assert len(a) == len(b) == 1 and np.array_equal(a.queries, b.queries)
    np.testing.assert_allclose(a.scores, b.scores, rtol=2e-6)


@pytest.mark.parametrize("F,step", [(4, 1), (6, 2), (5, 2)])
def test_filter_masks_match_the_numpy_forms(F, step):
    """nonblank, mask quality, the NMS sample's sums and the soft-IoU overlap of the fused kernel
    against float64 / numpy references, blank candidates interleaved (they are out of the NMS)."""
    rng = np.random.default_rng(F * 10 + step)
    m = (rng.standard_normal((12, 6, 20, 26)) * 6).astype(np.float32)
    m[3] = -30.0                                          # blank
    m[7, :, :, :] = -30.0
    m[7, F - 1, 5, 7] = 1.0                               # positive only off the sample (odd row)
    idx = rng.permutation(12)                             # rank order != query order
    terms = npp.filter_masks(m, idx, F, step)
    ranked = m[idx, :F]
    assert terms.nonblank.tolist() == [q not in (3,) for q in idx.tolist()]
    sample = ranked[:, ::step, 0::2, 0::2]
    ref_soft = 1 / (1 + np.exp(-sample.astype(np.float64)))
    np.testing.assert_allclose(terms.soft_sum, ref_soft.reshape(12, -1).sum(1), rtol=1e-6)
    assert terms.hard_count.tolist() == (ref_soft.reshape(12, -1) > 0.5).sum(1).tolist()
    pos = [1 / (1 + np.exp(-x[x > 0].astype(np.float64))) for x in ranked]
    np.testing.assert_allclose(terms.quality_sum, [p[p > 0.5].sum() for p in pos], rtol=1e-6)
    assert terms.quality_count.tolist() == [int((p > 0.5).sum()) for p in pos]
    kept = np.flatnonzero(terms.nonblank)
    np.testing.assert_allclose(terms.overlap[kept], soft_iou_max(sample[kept], predownsampled=True),
                               rtol=2e-6, atol=1e-7)
    assert terms.overlap[kept[0]] == 0.0 and not terms.overlap[~terms.nonblank].any()
    np.testing.assert_array_equal(terms.bits, npp.positive_bits(m, idx, np.arange(F)))
    with pytest.raises(ValueError, match="F <= 6"):
        npp.filter_masks(m, idx, 7, 1)


def test_bit_sets_intersections_and_accumulate_are_exact():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((5, 4, 9, 70)).astype(np.float32)     # 70 columns: two words a row
    B = rng.standard_normal((6, 3, 9, 70)).astype(np.float32)
    A[2] = -1.0                                                    # empty
    ra, fa, rb, fb = [4, 0, 2], [3, 1], [5, 1, 0, 2], [0, 2]
    inter, area_a, area_b = npp.bit_intersections(npp.positive_bits(A, np.arange(5), np.arange(4)), ra, fa,
                                                  npp.positive_bits(B, np.arange(6), np.arange(3)), rb, fb)
    a = (A[ra][:, fa] > 0).reshape(3, -1).astype(np.int64)
    b = (B[rb][:, fb] > 0).reshape(4, -1).astype(np.int64)
    np.testing.assert_array_equal(inter, a @ b.T)
    np.testing.assert_array_equal(area_a, a.sum(1))
    np.testing.assert_array_equal(area_b, b.sum(1))
    S = rng.standard_normal((4, 4, 9, 70)).astype(np.float32)
    ref = S.copy()
    bits = npp.positive_bits(S, np.arange(4), np.arange(4))
    npp.accumulate(S, [3, 1], [2, 0, 1], B, [0, 4], bits=bits)
    for r, x in zip([3, 1], [0, 4]):
        for i, fpos in enumerate([2, 0, 1]):
            ref[r, fpos] += B[x, i]
    np.testing.assert_array_equal(S, ref)
    np.testing.assert_array_equal(bits, npp.positive_bits(S, np.arange(4), np.arange(4)))
    with pytest.raises(ValueError, match="repeated"):
        npp.accumulate(S, [1, 1], [0], B, [0, 1])
    with pytest.raises(ValueError, match="out of range"):
        npp.positive_bits(S, [4], [0])


@pytest.mark.parametrize("original,resized,padded", [((360, 640), (360, 640), (384, 640)),
                                                    ((720, 1280), (360, 640), (384, 640)),
                                                    ((101, 67), (97, 64), (128, 64)),
                                                    ((64, 64), (64, 64), (64, 64))])
def test_mask_runs_give_the_rles_of_the_numpy_blocks(original, resized, padded):
    geom = FrameGeometry(original, resized, padded)
    post = MaskPostprocessor(geom, 4, "nearest")
    h, w = padded[0] // 4, padded[1] // 4
    rng = np.random.default_rng(sum(original))
    maps = [(rng.standard_normal((h, w)) * 3 - 4).astype(np.float32) for _ in range(6)]
    maps.append(np.full((h, w), 5.0, np.float32))        # the whole frame: runs cross every column
    maps.append(np.full((h, w), -5.0, np.float32))       # empty
    edge = np.full((h, w), -5.0, np.float32)
    edge[:, -2:] = 4.0                                   # full-height columns at the right border
    edge[0, 0] = 4.0                                     # the first pixel: the RLE starts with 0
    maps.append(edge)
    tiny = np.full((h, w), -5.0, np.float32)
    tiny[h // 2, w // 2] = 1e-3                          # positive logit that may vanish upsampled
    maps.append(tiny)
    native, numpy_ = both(lambda: post.finals(maps, with_masks=True))
    H0, W0 = original
    for m, (mask_n, rle_n), (mask_p, rle_p) in zip(maps, native, numpy_):
        blk = post.block(m)
        ref = rle_from_block(H0, W0, *blk) if blk is not None else None
        assert rle_n == rle_p == ref
        if ref is None:
            assert mask_n is None and mask_p is None
        else:
            np.testing.assert_array_equal(mask_n, post(m))
            np.testing.assert_array_equal(mask_p, post(m))


def test_tracker_and_masks_native_equal_numpy_over_a_video():
    """Windows of 5 clips (memory collapse, bit-set refresh), tracks ending and starting (compaction,
    growth): same pairs, same RLEs per frame, same video scores."""
    rng = np.random.default_rng(7)
    f, t = preset("ytvis", window_clips=5, max_unseen=3, short_unseen=2)
    geom = FrameGeometry((120, 176), (120, 176), (128, 192))
    clips = []
    base = scene_outputs(rng, Q=30, h=32, w=48, n_obj=10, dup=3)
    for s in range(24):
        out = {k: v.copy() for k, v in base.items()}
        out["pred_masks"] = np.roll(out["pred_masks"], s % 5, axis=-1) + 0.3 * rng.standard_normal(
            out["pred_masks"].shape).astype(np.float32)
        if s % 7 == 3:
            out["pred_logits"][:5] -= 10                 # some objects vanish for a clip
        if s >= 12:
            out["pred_logits"][5:15] -= 10               # others for good (their tracks are released)
        clips.append(out)

    def run(in_place=True):
        post = MaskPostprocessor(geom, 4, t.mask_resize)
        tr = make_tracker(5, t, num_frames=4)
        log = []
        for s, out in enumerate(clips):
            d = filter_clip(out, 4, post.valid_hw(), f, start=s, embedding=t.embedding)
            log.append(tr.update(d))
            if in_place:           # as runtime.pipeline: the sums read in place, zeroed on the next call
                fm = tr.pop_frame_maps(s)
                log.append([(tid, r) for tid, (_, r) in zip(fm.ids, post.finals(fm))])
            else:                  # copies of the mean maps, the sums zeroed at once
                items = tr.pop_frame(s)
                log.append([(tid, r) for (tid, _), (_, r) in zip(items, post.finals([m for _, m in items]))])
        tr.finish()
        assert tr.ended, "no track was released"
        return log, [(s.track_id, s.scores.tolist()) for s in tr.summaries()]

    (log_n, sum_n), (log_p, sum_p) = both(run)
    log_c, sum_c = run(in_place=False)
    assert log_n == log_p == log_c
    assert sum_n == sum_c
    assert [i for i, _ in sum_n] == [i for i, _ in sum_p] and len(sum_n) >= 9
    for (_, a), (_, b) in zip(sum_n, sum_p):
        np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-8)


def test_environment_switch_selects_the_numpy_form():
    code = "from runtime.native import postprocess as p; print(p.available())"
    env = dict(os.environ, MDQE_POSTPROCESS="numpy")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_postprocess_benchmark_runs_and_checks_native_against_numpy(tmp_path):
    """The benchmark's code path on 3 clips: its report holds every stage of the three implementations,
    the read floor and the CPU facts, and native == numpy (else it exits 3)."""
    import json
    from benchmarks import postprocess as bench
    report = tmp_path / "pp.json"
    assert bench.main(["--clips", "3", "--warmup", "1", "--report", str(report)]) == 0
    res = json.loads(report.read_text())
    assert res["native_equals_numpy"] is True
    for impl in ("new", "numpy", "old"):
        assert set(res[impl]) >= {"filter", "tracker", "masks", "total"} and res[impl]["total"] > 0
    assert res["read_floor"]["ms"] > 0 and 10 < res["read_floor"]["candidates_mb"] < 15
    assert "avx2" in res["setup"]["cpu"] or res["setup"]["cpu"]["machine"] != "x86_64"


def test_portable_kernel_paths_equal_numpy_too():
    """MDQE_PP_SIMD=off selects the kernels' portable bit-set and memory-update paths (what a
    non-x86 machine such as a Jetson runs) instead of AVX2: the comparisons with numpy above pass
    with them as well (in a fresh process, where the switch is read)."""
    env = dict(os.environ, MDQE_PP_SIMD="off")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
           "-k", "not portable and not benchmark and not environment"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and "failed" not in out.stdout
