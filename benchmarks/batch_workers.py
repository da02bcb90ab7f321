"""Batch throughput with 1 vs 2 workers, measured in one run.

    python -m benchmarks.batch_workers [--model DIR] [--videos N --frames F] [--executor ray|local]
                                       [--configs 1x2,2x1,1x1] [--repeats R] [--output DIR]

Runs ``runtime.batch`` over the same videos once per configuration WORKERSxTHREADS (workers x
ONNX Runtime threads per worker; fresh output folders; the order alternates over repeats) and
writes ``batch_workers.json`` and ``batch_workers.md`` (atomically) to ``--output`` (default
``batch_workers_report/`` in the current folder; the committed report is benchmarks/results/cpu_batch).
FPS = frames / work time (first video submitted to last result;
cluster start and model loading excluded, reported as startup); per worker: frames / its time
busy running videos. Default configurations for C cores: one worker with C threads, two
workers with C/2 threads each, one worker with one thread. The merged results of every run are
checked to be identical (the configuration must not change the output).

Defaults: weights/tiny_synthetic.safetensors exported to ONNX (onnx form) into the scratch
folder, 12 synthetic videos of 16 frames at 192x320 (mdqe.data.synthetic, seed 1000, never used
for training), overlay video not written (``--overlay`` writes it).
"""
from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from typing import List, Optional

for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from benchmarks.fps import cpu_description  # noqa: E402
from runtime.atomic import write_json, write_text  # noqa: E402
from runtime.batch import BatchSpec, run_batch  # noqa: E402
from runtime.cli import (EXIT_FAILED, EXIT_VERIFY, add_image_size_args, add_model_arg, add_output_arg,  # noqa: E402
                         cli_main, error, make_parser)


def _load() -> Optional[List[float]]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def export_model(out: str) -> str:
    weights = os.path.join(ROOT, "weights", "tiny_synthetic.safetensors")
    cmd = [sys.executable, "-m", "export.to_onnx", "--config", "checkpoint", "--weights", weights,
           "--output", out, "--msda", "onnx", "--no-verify", "--no-progress"]
    subprocess.run(cmd, cwd=ROOT, check=True)
    return out


def make_videos(root: str, n: int, frames: int, height: int, width: int) -> str:
    from mdqe.data.synthetic import generate_split
    return generate_split(root, num_videos=n, num_frames=frames, height=height, width=width, seed=1000,
                          split="bench")


def markdown(rep: dict) -> str:
    lines = [
        "# Batch inference: throughput by number of workers",
        "",
        f"- Machine: {rep['machine']}",
        f"- Command: `{rep['command']}`",
        f"- Executor: {rep['executor']}; model: {rep['model']}; backend ort (CPU), per-video options "
        f"`{' '.join(rep['run_args'][2:])}`",
        f"- Videos: {rep['videos']} x {rep['frames_per_video']} frames at {rep['size'][0]}x{rep['size'][1]} "
        f"(synthetic, model input {rep['input_size']})",
        f"- FPS = frames / work time (first video submitted to last result); startup = cluster start + model "
        "loading, not counted. Per worker: frames / its busy time.",
        f"- Load average before / after: {rep['load_before']} / {rep['load_after']}",
        "",
        f"| workers | ORT threads each | frames | work s | startup s | FPS | FPS per worker (busy) | "
        f"x vs {rep['configs'][0][0]}x{rep['configs'][0][1]} |",
        "|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rep["runs"]:
        lines.append(f"| {r['workers']} | {r['threads_per_worker']} | {r['frames']} | {r['work_s']:.2f} | "
                     f"{r['startup_s']:.2f} | **{r['fps']:.2f}** | {', '.join(f'{x:.2f}' for x in r['fps_per_worker'])} | "
                     f"{r['speedup_vs_first']:.2f} |")
    lines += ["", "Mean over the runs of each configuration:", "",
              "| workers x threads | runs | mean FPS | x vs " + f"{rep['configs'][0][0]}x{rep['configs'][0][1]} |",
              "|---|---:|---:|---:|"]
    means = config_means(rep)
    for (n, t), (k, fps) in means.items():
        lines.append(f"| {n}x{t} | {k} | {fps:.2f} | {fps / means[tuple(rep['configs'][0])][1]:.2f} |")
    lines += ["", f"Merged results identical across runs: {rep['identical_results']}", ""]
    return "\n".join(lines)


def config_means(rep: dict) -> dict:
    """{(workers, threads): (runs, mean FPS)} in the order of rep['configs']."""
    out = {}
    for c in rep["configs"]:
        fps = [r["fps"] for r in rep["runs"] if [r["workers"], r["threads_per_worker"]] == list(c)]
        out[tuple(c)] = (len(fps), sum(fps) / len(fps))
    return out


@cli_main
def main(argv=None) -> int:
    p = make_parser("python -m benchmarks.batch_workers", __doc__.split("\n\n")[0])
    add_model_arg(p, help="exported model directory (default: export the shipped tiny checkpoint)")
    p.add_argument("--videos", type=int, default=12)
    p.add_argument("--frames", type=int, default=16)
    add_image_size_args(p, height=192, width=320, help="video")
    p.add_argument("--configs", default=None,
                   help="comma list of WORKERSxTHREADS (ONNX Runtime threads per worker); default: 1xC,2x(C/2),1x1 "
                        "for C cores (the cores split between the workers, plus one worker on one core)")
    p.add_argument("--repeats", type=int, default=1, help="runs per configuration (order alternates)")
    p.add_argument("--executor", default="ray", choices=("ray", "local"))
    p.add_argument("--overlay", action="store_true", help="also write overlay videos")
    p.add_argument("--machine", default=None, help="machine description (default: detected)")
    add_output_arg(p, required=False, default="batch_workers_report",
                   help="report folder (default: batch_workers_report/ in the current folder; the committed report "
                        "is benchmarks/results/cpu_batch)")
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary folder)")
    p.add_argument("--render", default=None, metavar="JSON",
                   help="only write batch_workers.md again from a batch_workers.json (no runs)")
    args = p.parse_args(argv)
    if args.render:
        with open(args.render) as f:
            rep = json.load(f)
        write_text(os.path.join(os.path.dirname(os.path.abspath(args.render)), "batch_workers.md"), markdown(rep))
        print(markdown(rep))
        return 0
    cores = os.cpu_count() or 1
    if args.configs:
        configs = [tuple(int(v) for v in c.split("x")) for c in args.configs.split(",")]
    else:
        configs = [(1, cores), (2, max(1, cores // 2)), (1, 1)]
    work = args.work or tempfile.mkdtemp(prefix="mdqe_batch_bench_")
    model = args.model or export_model(os.path.join(work, "model"))
    gt = make_videos(os.path.join(work, "videos"), args.videos, args.frames, args.height, args.width)
    base_args = ["--model", model, "--score-thr", "0.05"] + ([] if args.overlay else ["--no-overlay"])
    load_before = _load()
    order = []
    for r in range(args.repeats):
        order += configs if r % 2 == 0 else configs[::-1]
    runs, merged = [], []
    for i, (n, threads) in enumerate(order):
        out = os.path.join(work, f"run{i}_w{n}x{threads}")
        print(f"== {n} worker(s), {threads} ORT thread(s) each", flush=True)
        t0 = time.perf_counter()
        s = run_batch(BatchSpec(videos=gt, output=out, run_args=base_args, workers=n, executor=args.executor,
                                cpus_per_worker=threads, progress=False))
        if s["failed"]:
            return error(f"{s['failed']} videos failed: {s['failures']}", EXIT_FAILED)
        with open(s["results"], "rb") as f:
            merged.append(f.read())
        runs.append({"workers": n, "threads_per_worker": threads, "frames": s["frames"], "work_s": s["work_s"],
                     "startup_s": s["startup_s"], "wall_s": round(time.perf_counter() - t0, 3), "fps": s["fps"],
                     "fps_per_worker": [w["fps"] for w in s["per_worker"]],
                     "videos_per_worker": [w["videos"] for w in s["per_worker"]]})
        print(json.dumps(runs[-1]), flush=True)
    first = [r["fps"] for r in runs if (r["workers"], r["threads_per_worker"]) == configs[0]]
    fps1 = sum(first) / len(first)
    for r in runs:
        r["speedup_vs_first"] = round(r["fps"] / fps1, 3)
    meta = json.load(open(os.path.join(model, "export.json")))
    pre = meta["preprocess"]
    from runtime.contract import padded_size, resized_size
    input_size = padded_size(*resized_size(args.height, args.width, pre["shorter_side"], pre["max_size"]),
                             pre.get("size_divisibility", 32))
    report = {
        "machine": args.machine or cpu_description(),
        "command": "python -m benchmarks.batch_workers " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "executor": args.executor, "model": meta.get("weights", {}).get("source", model),
        "run_args": base_args, "videos": args.videos, "frames_per_video": args.frames,
        "size": [args.height, args.width], "input_size": list(input_size),
        "cores": cores, "python": platform.python_version(),
        "load_before": load_before, "load_after": _load(),
        "configs": configs, "runs": runs, "identical_results": all(m == merged[0] for m in merged),
    }
    if not report["identical_results"]:
        return error("the merged results differ between configurations", EXIT_VERIFY)
    os.makedirs(args.output, exist_ok=True)
    write_json(os.path.join(args.output, "batch_workers.json"), report)
    write_text(os.path.join(args.output, "batch_workers.md"), markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
