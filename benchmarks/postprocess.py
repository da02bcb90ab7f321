"""CPU cost of the runtime's post-processing per clip at R50 360p sizes.

    python -m benchmarks.postprocess [--clips 60] [--warmup 10] [--report results.json]

Also prints one read of the candidates' mask logits (the native bit-set pass alone) per clip: the
floor, on the machine at hand, for any filter that reads them once.

Synthetic decoder outputs shaped like the R50 model's at 360p: input 384x640 (a 360x640
video), stride-4 mask logits 96x160, Q = 196 queries, C = 40 classes, T = 4, raw clip queries
of 256 dims. Per clip, 30 moving objects of different sizes (with crossings) plus 20
near-duplicate queries score above the threshold (50 candidates; the rest stay below 0.1),
with per-clip noise on the mask logits; so the tracker holds about 30 live tracks.

Stages, per clip in the steady state (one clip in, one frame final):
- filter: runtime.clip_filter.filter_clip (threshold, duplicates, blank masks, NMS, quality);
- tracker: ClipTracker.update;
- masks: pop the final frame, upsample to 360x640, RLE (what runtime.pipeline does per frame).
Each clip's outputs are copied into fresh arrays before its timing starts, as a backend writes
its outputs for every clip (the post-processing reads them soon after, not from a cold store).
Times are process CPU time by default (``--clock wall`` for perf_counter): on a machine shared
with other jobs, wall time mostly measures the others.

Three implementations run in the same process on the same clips: ``new`` = the default (the
authors' rules; runtime.clip_filter / runtime.tracker / runtime.masks) with the native kernels of
libmdqe_msda.so (runtime/native/postprocess.py); ``numpy`` = the same rules in numpy (what runs
when the library lacks the kernels, or with MDQE_POSTPROCESS=numpy); ``old`` = this project's
earlier path, still available as ``--preset paper`` (greedy filters, Python-loop mask IoU, cv2
bilinear resizes of the full frame and pycocotools' encoder). ``new`` and ``numpy`` must give the
same track ids per clip and the same RLEs per frame (else exit 3). Ratios numpy / new and
old / new per stage. Single-threaded BLAS as in runtime.infer.
"""
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS", "OMP_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.fps import cpuinfo  # noqa: E402
from runtime.cli import EXIT_VERIFY, add_report_arg, add_seed_arg, cli_main, make_parser  # noqa: E402
from runtime.clip_filter import candidates, filter_clip  # noqa: E402
from runtime.masks import MaskPostprocessor  # noqa: E402
from runtime.native import postprocess as native_pp  # noqa: E402
from runtime.rle import encode_rles  # noqa: E402
from runtime.preprocess import FrameGeometry  # noqa: E402
from runtime.tracker import make_tracker, preset  # noqa: E402

GEOM = FrameGeometry((360, 640), (360, 640), (384, 640))
Q, C, T, HID = 196, 40, 4, 256
H, W = 96, 160
N_OBJ, N_DUP = 30, 20
CLOCK = "cpu"


class Scene:
    """30 objects (ellipses, radius 3-14 mask pixels) on sinusoidal paths; 20 duplicate queries."""

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.c0 = rng.uniform([10, 10], [H - 10, W - 10], size=(N_OBJ, 2))
        self.amp = rng.uniform(2, 20, size=(N_OBJ, 2))
        self.period = rng.uniform(30, 90, size=N_OBJ)
        self.r = rng.uniform(3, 14, size=N_OBJ)
        self.cls = rng.integers(0, C, size=N_OBJ)
        q = rng.normal(size=(N_OBJ, HID)).astype(np.float32)
        self.q = 6 * q / np.linalg.norm(q, axis=1, keepdims=True)
        self.yy, self.xx = np.mgrid[:H, :W].astype(np.float32)
        self.base_masks = np.full((Q, T, H, W), -15.0, np.float32)

    def outputs(self, start: int) -> dict:
        rng = np.random.default_rng(start)
        logits = (-5.0 + 0.5 * rng.standard_normal((Q, C))).astype(np.float32)
        queries = rng.normal(size=(Q, HID)).astype(np.float32)
        masks = self.base_masks.copy()
        slots = rng.permutation(Q)
        for k in range(N_OBJ):
            qi = slots[k]
            logits[qi, self.cls[k]] = 2.5 + 0.3 * rng.standard_normal()
            queries[qi] = self.q[k] + 0.05 * rng.standard_normal(HID)
            for i in range(T):
                t = start + i
                cy, cx = self.c0[k] + self.amp[k] * np.sin(2 * np.pi * t / self.period[k])
                r = self.r[k]
                y0, y1 = int(max(cy - r - 4, 0)), int(min(cy + r + 5, H))
                x0, x1 = int(max(cx - r - 4, 0)), int(min(cx + r + 5, W))
                d = np.hypot(self.yy[y0:y1, x0:x1] - cy, (self.xx[y0:y1, x0:x1] - cx) * 0.8)
                masks[qi, i, y0:y1, x0:x1] = np.maximum(np.clip((r - d) * 2.0, -15, 12)
                                                        + rng.normal(0, 0.7, d.shape), -15)
        for j in range(N_DUP):                       # shifted copies with lower scores (NMS removes)
            k, qi = j % N_OBJ, slots[N_OBJ + j]
            src = slots[k]
            logits[qi] = logits[src] - 0.8
            queries[qi] = rng.normal(size=HID)
            masks[qi] = np.roll(masks[src], 1, axis=-1)
        return {"pred_logits": logits, "pred_masks": masks, "pred_queries": queries,
                "pred_embeds": queries[:, :64].copy(), "pred_boxes": np.zeros((Q, T, 4), np.float32)}


def old_masks(post: MaskPostprocessor, items):
    masks = [post(logits) for _, logits in items]
    return encode_rles(masks)


def new_masks(post: MaskPostprocessor, frame_maps):
    return [rle for _, rle in post.finals(frame_maps)]


def run(impl: str, clips, warmup: int):
    """Time one implementation ("new", "numpy" or "old"); returns (numbers, per-clip outputs)."""
    native_pp.use_native(impl == "new")
    f, t = preset("paper" if impl == "old" else "ytvis")
    post = MaskPostprocessor(GEOM, 4, t.mask_resize)
    tr = make_tracker(C, t, num_frames=T)
    emb = t.embedding
    valid = post.valid_hw()
    times = {"filter": [], "tracker": [], "masks": []}
    dets_n, live, n_rle, log = [], [], 0, []
    clock = time.process_time if CLOCK == "cpu" else time.perf_counter
    for s, stored in enumerate(clips):
        out = {k: v.copy() for k, v in stored.items()}   # untimed: a backend writes fresh outputs per clip
        t0 = clock()
        d = filter_clip(out, T, valid, f, start=s, embedding=emb)
        t1 = clock()
        pairs = tr.update(d)
        t2 = clock()
        if impl == "old":
            items = tr.pop_frame(s)
            ids, rles = [tid for tid, _ in items], old_masks(post, items)
        else:                                  # as runtime.pipeline: the maps read in place
            frame_maps = tr.pop_frame_maps(s)
            ids, rles = frame_maps.ids, new_masks(post, frame_maps)
        t3 = clock()
        log.append((pairs, list(zip(ids, rles))))
        if s >= warmup:
            times["filter"].append(t1 - t0)
            times["tracker"].append(t2 - t1)
            times["masks"].append(t3 - t2)
            dets_n.append(len(d))
            live.append(len(ids))
            n_rle += sum(r is not None for r in rles)
    res = {k: 1e3 * float(np.mean(v)) for k, v in times.items()}
    res["total"] = sum(res.values())
    res["total_median"] = 1e3 * float(np.median(np.sum([times[k] for k in times], axis=0)))
    res["detections_per_clip"] = float(np.mean(dets_n))
    res["tracks_per_frame"] = float(np.mean(live))
    res["rles"] = n_rle
    return res, log


def read_floor(clips, warmup: int) -> dict:
    """Time of one read of the filter's candidate mask logits per clip (the native bit-set pass: one
    compare per pixel and nothing else), on fresh outputs as in ``run``: a lower bound for any filter
    that reads every candidate's logits once, on this machine."""
    f, _ = preset("ytvis")
    clock = time.process_time if CLOCK == "cpu" else time.perf_counter
    times, sizes = [], []
    for s, stored in enumerate(clips):
        out = {k: v.copy() for k, v in stored.items()}
        _, valid = candidates(out, f, "pred_queries")
        t0 = clock()
        native_pp.positive_bits(out["pred_masks"], valid, np.arange(T))
        t1 = clock()
        if s >= warmup:
            times.append(t1 - t0)
            sizes.append(valid.size * T * H * W * 4)
    ms = 1e3 * float(np.mean(times))
    return {"ms": ms, "candidates_mb": float(np.mean(sizes)) / 1e6, "gb_per_s": float(np.mean(sizes)) / 1e6 / ms}


def cpu_facts() -> dict:
    """CPU model and SIMD level (/proc/cpuinfo on Linux, via benchmarks.fps.cpuinfo)."""
    facts = {"machine": platform.machine(), "cores": os.cpu_count()}
    info = cpuinfo()
    for key, name in (("model name", "model"), ("cpu family", "x86_cpu_family"), ("model", "x86_model")):
        if key in info:
            facts[name] = info[key]
    if "flags" in info:
        flags = set(info["flags"].split())
        facts["avx2"], facts["avx512f"] = "avx2" in flags, "avx512f" in flags
    return facts
    for line in info.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and "model" not in facts:
            facts["model"] = value.strip()
        elif key in ("cpu family", "model") and f"x86_{key.replace(' ', '_')}" not in facts:
            facts[f"x86_{key.replace(' ', '_')}"] = value.strip()
        elif key == "flags" and "avx2" not in facts:
            flags = set(value.split())
            facts["avx2"], facts["avx512f"] = "avx2" in flags, "avx512f" in flags
    return facts


@cli_main
def main(argv=None) -> int:
    ap = make_parser("python -m benchmarks.postprocess", __doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10)
    add_seed_arg(ap)
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu",
                    help="cpu: process CPU time (robust on a shared machine); wall: perf_counter")
    add_report_arg(ap)
    args = ap.parse_args(argv)
    global CLOCK
    CLOCK = args.clock
    if args.clips <= args.warmup or args.warmup < 0:
        ap.error("--clips must exceed --warmup >= 0")
    cv2.setNumThreads(1)
    scene = Scene(args.seed)
    clips = [scene.outputs(s) for s in range(args.clips)]
    if not native_pp.available():
        print("the native post-processing kernels are not loaded (libmdqe_msda.so missing or MDQE_POSTPROCESS="
              "numpy): `pip install -e .` builds them", file=sys.stderr)
        return 2
    (new, new_log), (num, num_log), (old, _) = (run(k, clips, args.warmup) for k in ("new", "numpy", "old"))
    native_pp.use_native(True)
    floor = read_floor(clips, args.warmup)
    same = new_log == num_log
    res = {"new": new, "numpy": num, "old": old, "native_equals_numpy": same, "read_floor": floor}
    stages = ("filter", "tracker", "masks", "total")
    res["ratio_numpy_over_new"] = {k: res["numpy"][k] / res["new"][k] for k in stages}
    res["ratio_old_over_new"] = {k: res["old"][k] / res["new"][k] for k in stages}
    res["setup"] = {"input": [384, 640], "video": [360, 640], "mask": [H, W], "queries": Q, "classes": C, "T": T,
                    "objects": N_OBJ, "duplicates": N_DUP, "clips_timed": args.clips - args.warmup, "clock": args.clock,
                    "cpu": cpu_facts(), "numpy": np.__version__, "opencv": cv2.__version__}
    print(f"per clip, {args.clock} time, {args.clips - args.warmup} clips after {args.warmup} warm-up")
    print(f"{'stage':8s} {'new ms':>8s} {'numpy ms':>9s} {'old ms':>8s} {'numpy/new':>10s} {'old/new':>8s}")
    for k in stages:
        print(f"{k:8s} {res['new'][k]:8.3f} {res['numpy'][k]:9.3f} {res['old'][k]:8.3f} "
              f"{res['ratio_numpy_over_new'][k]:10.2f} {res['ratio_old_over_new'][k]:8.2f}")
    print(f"new: {res['new']['detections_per_clip']:.1f} detections/clip, {res['new']['tracks_per_frame']:.1f} "
          f"track masks/frame, median total {res['new']['total_median']:.3f} ms; "
          f"old: {res['old']['detections_per_clip']:.1f} detections/clip, {res['old']['tracks_per_frame']:.1f} track masks/frame")
    print(f"one read of the candidates' logits ({floor['candidates_mb']:.1f} MB/clip, compare only): "
          f"{floor['ms']:.3f} ms ({floor['gb_per_s']:.1f} GB/s), a floor for the filter on this machine")
    cpu = res["setup"]["cpu"]
    print(f"cpu: {cpu.get('model', cpu['machine'])}, {cpu['cores']} cores, AVX2 {cpu.get('avx2')}, "
          f"AVX-512 {cpu.get('avx512f')}")
    print("native kernels and numpy: " + ("same track ids and RLEs on every clip" if same else "RESULTS DIFFER"))
    if args.report:
        from runtime.atomic import write_json
        write_json(args.report, res, indent=1)
    return 0 if same else EXIT_VERIFY


if __name__ == "__main__":
    sys.exit(main())
