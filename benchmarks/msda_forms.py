"""Which MSDeformAttn export form runs fastest in ONNX Runtime on the CPU.

    python -m benchmarks.msda_forms [--configs tiny r50_ytvis21] [--forms onnx gridsample plugin trt-builtin]
                                    [--repeats 5] [--threads 0] [--work DIR] [--report benchmarks/results/msda_forms.json]

For each config, every form is exported with export/to_onnx.py (random weights, seed 0; reused
from ``--work`` when already there) at the runtime's input size for a 16:9 video (tiny: 192x352,
its 192-pixel test size padded to 32; r50_ytvis21: 384x640, i.e. 360x640 padded) and run with
ONNX Runtime (CPUExecutionProvider, ``--threads`` intra-op threads, 0 = ORT's default) the way the runtime does:
the encoder on ONE frame (the runtime encodes each frame once) and the decoder on one clip of T
cached frame features. plugin / trt-builtin graphs run their MSDeformAttn node as an
onnxruntime-extensions Python op calling our native CPU kernel (runtime/native/ort_ops.py).
Forms are timed round-robin in one process (one call of each form in turn), so load changes on a
shared machine hit all of them alike; printed are medians, the per-frame model time
``encoder + decoder / T`` (one decoder call per T frames, the runtime's near-online stride with no
overlap) and each form's ratio to the fastest. The fastest form is compared with
``runtime.model_dir.MSDA_ORT_CPU_FASTEST`` (what the demo exports).
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from runtime.cli import add_report_arg, add_seed_arg, add_threads_arg, cli_main, make_parser
from runtime.contract import (DECODER_INPUTS, ENCODER_OUTPUTS, MSDA_FORMS, MSDA_ORT_CPU_FASTEST, VALID_HW,
                              plugin_identity)

SIZES = {"tiny": (192, 352), "r50_ytvis21": (384, 640)}


def _export(config, form, size, work):
    from export.to_onnx import export_model
    out = Path(work) / f"{config}_{form}_{size[0]}x{size[1]}"
    meta = out / "export.json"
    if meta.is_file():
        m = json.loads(meta.read_text())
        if m.get("msda") == form and m.get("model_name") == config and list(m.get("export_size", [])) == list(size):
            return out, 0.0
    t0 = time.perf_counter()
    export_model(config, "random", str(out), msda=form, height=size[0], width=size[1], seed=0, verify=False,
                 quiet=True)
    return out, time.perf_counter() - t0


def _sessions(model_dir, threads):
    from runtime.native.ort_ops import create_session
    meta = json.loads((Path(model_dir) / "export.json").read_text())
    enc = create_session(Path(model_dir) / meta["encoder"]["file"], intra_op_num_threads=threads)
    dec = create_session(Path(model_dir) / meta["decoder"]["file"], intra_op_num_threads=threads)
    return meta, enc, dec


def bench_config(config, forms, repeats, threads, work, rng):
    size = SIZES[config]
    sess, exports = {}, {}
    for form in forms:
        d, secs = _export(config, form, size, work)
        exports[form] = secs
        sess[form] = _sessions(d, threads)
    T = int(next(iter(sess.values()))[0]["num_frames"])
    frame = rng.standard_normal((1, 3, *size), dtype=np.float32)
    clip = rng.standard_normal((T, 3, *size), dtype=np.float32)
    # decoder inputs: one clip of encoder outputs (from the first form; every form reads the same names)
    _, enc0, _ = sess[forms[0]]
    frame_feed = {"images": frame, VALID_HW: np.array([size], np.int64)}      # unpadded frames
    valid_clip = np.array([size] * T, np.int64)
    feats = dict(zip(ENCODER_OUTPUTS, enc0.run(list(ENCODER_OUTPUTS), {"images": clip, VALID_HW: valid_clip})),
                 **{VALID_HW: valid_clip})
    dec_feeds = {k: feats[k] for k in DECODER_INPUTS}
    times = {f: {"encoder": [], "decoder": []} for f in forms}
    outs = {}
    for f in forms:   # warm-up + outputs for a cross-form check
        _, enc, dec = sess[f]
        enc.run(None, frame_feed)
        outs[f] = dec.run(None, dec_feeds)
    for _ in range(repeats):
        for f in forms:
            _, enc, dec = sess[f]
            t0 = time.perf_counter()
            enc.run(None, frame_feed)
            t1 = time.perf_counter()
            dec.run(None, dec_feeds)
            t2 = time.perf_counter()
            times[f]["encoder"].append(t1 - t0)
            times[f]["decoder"].append(t2 - t1)
    rows = []
    for f in forms:
        e = statistics.median(times[f]["encoder"]) * 1e3
        d = statistics.median(times[f]["decoder"]) * 1e3
        diff = max(float(np.abs(a - b).max()) for a, b in zip(outs[f], outs[forms[0]]))
        rows.append({"form": f, "encoder_ms": e, "decoder_ms": d, "per_frame_ms": e + d / T, "fps": 1e3 / (e + d / T),
                     "max_abs_diff_vs_" + forms[0]: diff, "export_s": exports[f]})
    best = min(rows, key=lambda r: r["per_frame_ms"])
    for r in rows:
        r["x_fastest"] = r["per_frame_ms"] / best["per_frame_ms"]
    return {"config": config, "size": list(size), "T": T, "rows": rows, "fastest": best["form"]}


def build_parser():
    ap = make_parser("python -m benchmarks.msda_forms", __doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", default=["tiny", "r50_ytvis21"], choices=sorted(SIZES))
    ap.add_argument("--forms", nargs="+", default=list(MSDA_FORMS), choices=MSDA_FORMS)
    ap.add_argument("--repeats", type=int, default=5)
    add_threads_arg(ap, help="ONNX Runtime intra-op threads")
    ap.add_argument("--work", help="keep the exports here and reuse them (default: a temporary directory)")
    add_seed_arg(ap)
    add_report_arg(ap)
    return ap


@cli_main
def main(argv=None) -> int:
    """Prints the study as it goes; ``--report`` also writes it as JSON."""
    args = build_parser().parse_args(argv)

    import onnxruntime as ort

    from runtime.native.ort_ops import fast_output, kernel_name
    work = args.work or tempfile.mkdtemp(prefix="msda_forms_")
    rng = np.random.default_rng(args.seed)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    print(f"MSDeformAttn forms in ONNX Runtime {ort.__version__} (CPU) | {cores}-core {platform.machine()}, "
          f"intra-op threads {args.threads or 'default'} | median of {args.repeats}, round-robin")
    results = []
    for config in args.configs:
        res = bench_config(config, args.forms, args.repeats, args.threads, work, rng)
        results.append(res)
        h, w = res["size"]
        print(f"\n{config} at {h}x{w}, T={res['T']} (random weights): encoder = 1 frame, decoder = 1 clip")
        hdr = f"{'form':12s} {'encoder ms':>10s} {'decoder ms':>10s} {'ms/frame':>9s} {'FPS':>6s} {'x fastest':>9s}"
        print(hdr)
        for r in res["rows"]:
            print(f"{r['form']:12s} {r['encoder_ms']:10.1f} {r['decoder_ms']:10.1f} {r['per_frame_ms']:9.1f} "
                  f"{r['fps']:6.2f} {r['x_fastest']:8.2f}x")
        print(f"fastest: {res['fastest']}")
    print(f"\ncustom-node forms ran with the {kernel_name()} kernel, fast output path: {fast_output()}")
    # plugin and trt-builtin run the same kernel through the same Python op in ONNX Runtime: one class
    same = {f: ("custom node" if plugin_identity(f) is not None else f) for f in MSDA_FORMS}
    fastest = {same[r["fastest"]] for r in results}
    print(f"runtime.model_dir.MSDA_ORT_CPU_FASTEST = {MSDA_ORT_CPU_FASTEST!r}; measured fastest: "
          + ", ".join(f"{r['config']} {r['fastest']}" for r in results)
          + (" (plugin and trt-builtin run the same kernel here)" if fastest == {same[MSDA_ORT_CPU_FASTEST]}
             else "  <-- differs"))
    report = {"onnxruntime": ort.__version__, "cores": cores, "machine": platform.machine(), "threads": args.threads,
              "repeats": args.repeats, "kernel": kernel_name(), "fast_output": fast_output(), "results": results}
    if args.report:
        from runtime.atomic import write_json
        write_json(args.report, report)
        print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
