"""Soak benchmark (not a CI test): many frames through the runtime at a small size, watching for leaks.

    python -m benchmarks.soak [--frames 10000] [--backend fake|ort] [--model DIR] [--side 64]
                              [--output soak_report]     (the committed report: benchmarks/results/soak)

A synthetic MJPG video of ``--frames`` frames (``--side`` x ``--side`` pixels, moving squares) is
written to a private temporary folder and run through ``runtime.pipeline.run_video`` in this process
(decode, preprocess, encoder per frame, decoder per clip, tracker, RLE spool, overlay video,
results.json, timing.json). ``--backend fake`` (default) runs the numpy stand-in of the model, so
the soak measures the runtime itself; ``--backend ort --model DIR`` runs an exported model through
ONNX Runtime, with the export's preprocessing changed to ``--side`` (its graphs take any size that
is a multiple of 32 and at least 8 x the query grid: 64 for ``tiny``).

Recorded (``soak_report.json`` / ``.md`` under ``--output``): resident memory sampled every 0.25 s of
the run's wall time (at 10/20/50/90/100 %, peak, growth from 20 % to 90 % and to 100 %: the last
samples fall in the final results.json write, which holds one track's RLEs at a time), open file
descriptors before and after, files in the private temp folder before and after, and hidden
leftovers in the run's output folder (spool, temporaries) after.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import sys
import tempfile
import threading
import time

from runtime.cli import add_backend_arg, add_model_arg, add_output_arg, add_threads_arg, cli_main, error, make_parser
from runtime.errors import UsageError


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _write_video(path: str, frames: int, size: int) -> None:
    import cv2
    import numpy as np
    wr = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (size, size))
    if not wr.isOpened():
        raise OSError(f"OpenCV cannot write {path}")
    rng = np.random.RandomState(0)
    base = (rng.rand(size, size, 3) * 40 + 20).astype(np.uint8)
    for i in range(frames):
        img = base.copy()
        for k in range(3):                                     # three squares on periodic paths
            s = max(4, size // 6)
            x = int((size - s) * (0.5 + 0.45 * np.sin(0.05 * i + 2 * k)))
            y = int((size - s) * (0.5 + 0.45 * np.cos(0.03 * i + k)))
            img[y:y + s, x:x + s] = ((60 * k + 80) % 255, 200, (90 * k) % 255)
        wr.write(img)
    wr.release()


class _Sampler(threading.Thread):
    def __init__(self, period: float = 0.25):
        super().__init__(daemon=True)
        self.period, self.samples, self.stop = period, [], threading.Event()

    def run(self):
        t0 = time.perf_counter()
        while not self.stop.is_set():
            self.samples.append((time.perf_counter() - t0, _rss_mb()))
            self.stop.wait(self.period)


def _backend(args, work: str):
    from runtime.backends import create_backend
    if args.backend == "fake":
        return create_backend("fake", None, shorter_side=args.side, max_size=args.side)
    if not args.model:
        raise UsageError("--backend ort needs --model DIR")
    from runtime.model_dir import load_model_dir
    spec = load_model_dir(args.model)
    meta = dict(spec.raw)
    meta["preprocess"] = dict(meta["preprocess"], shorter_side=args.side, max_size=args.side)
    small = os.path.join(work, "model")
    os.makedirs(small)
    for f in (spec.encoder_file, spec.decoder_file):
        os.symlink(os.path.join(spec.model_dir, f), os.path.join(small, f))
    with open(os.path.join(small, "export.json"), "w") as fh:
        json.dump(meta, fh)
    return create_backend("ort", small, threads=args.threads)


@cli_main
def main(argv=None) -> int:
    p = make_parser("python -m benchmarks.soak", __doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=10000)
    p.add_argument("--side", type=int, default=64, help="square video side in pixels (also the model input side)")
    add_backend_arg(p, default="fake", choices=("fake", "ort"))
    add_model_arg(p, help="exported model directory (--backend ort)")
    add_threads_arg(p, default=1, help="ort intra-op threads")
    p.add_argument("--score-thr", type=float, default=0.1)
    add_output_arg(p, required=False, default="soak_report",
                   help="report folder (default: soak_report/ in the current folder)")
    args = p.parse_args(argv)
    if args.frames < 1 or args.side < 32:
        return error("--frames must be >= 1 and --side >= 32")

    from runtime.clip_filter import FilterParams
    from runtime.pipeline import RunOptions, run_video

    work = tempfile.mkdtemp(prefix="mdqe-soak-")
    private_tmp = os.path.join(work, "tmp")
    os.makedirs(private_tmp)
    tempfile.tempdir = private_tmp                     # every temp file of the run lands here
    os.environ["TMPDIR"] = private_tmp
    try:
        video = os.path.join(work, "soak.avi")
        t0 = time.perf_counter()
        _write_video(video, args.frames, args.side)
        video_s = time.perf_counter() - t0
        backend = _backend(args, work)
        run_dir = os.path.join(work, "run")
        opts = RunOptions(filter=FilterParams(score_thr=args.score_thr), progress=False)
        before = {"rss_mb": round(_rss_mb(), 1), "open_fds": _fds(), "temp_files": len(os.listdir(private_tmp))}
        sampler = _Sampler()
        sampler.start()
        t0 = time.perf_counter()
        timing = run_video(video, run_dir, backend, opts)       # RuntimeErrorBase: one line, its exit code
        wall = time.perf_counter() - t0
        sampler.stop.set()
        sampler.join()
        backend.close()
        after = {"rss_mb": round(_rss_mb(), 1), "open_fds": _fds(), "temp_files": len(os.listdir(private_tmp))}
        leftovers = sorted(n for n in os.listdir(run_dir) if n.startswith("."))
        samples = sampler.samples
        n = len(samples)

        def at(frac):
            return round(samples[min(n - 1, int(frac * (n - 1)))][1], 1)

        rss = [r for _, r in samples]
        report = {
            "command": "python -m benchmarks.soak " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": f"{platform.machine()} {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
            "python": platform.python_version(),
            "backend": timing["backend"], "frames": timing["frames"], "size": [args.side, args.side],
            "input_size": timing["input_size"], "clip_length": timing["clip_length"],
            "wall_s": round(wall, 2), "fps": timing["fps"], "video_write_s": round(video_s, 2),
            "tracks": timing["tracks"], "results_entries": timing["results_entries"],
            "results_json_mb": round(os.path.getsize(os.path.join(run_dir, "results.json")) / 2 ** 20, 2),
            "overlay_frames": timing["overlay_frames"], "stopped_early": timing["stopped_early"],
            "rss_mb": {"before_run": before["rss_mb"], "at_10pct": at(0.1), "at_20pct": at(0.2), "at_50pct": at(0.5),
                       "at_90pct": at(0.9), "at_100pct": at(1.0), "after_run": after["rss_mb"], "peak_during_run": round(max(rss), 1),
                       "growth_20_to_90pct": round(at(0.9) - at(0.2), 1),
                       "growth_20_to_100pct": round(at(1.0) - at(0.2), 1), "samples": n,
                       "ru_maxrss_process": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)},
            "open_fds": {"before": before["open_fds"], "after": after["open_fds"]},
            "temp_files": {"before": before["temp_files"], "after": after["temp_files"], "folder": "private TMPDIR"},
            "output_leftovers": leftovers,
            "stages_mean_ms": {k: v["mean_ms"] for k, v in timing["stages"].items()},
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    from runtime.atomic import write_json, write_text
    os.makedirs(args.output, exist_ok=True)
    write_json(os.path.join(args.output, "soak_report.json"), report)
    r = report["rss_mb"]
    md = [
        "# Soak: runtime over many frames",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}, Python {report['python']}; backend: {report['backend']}",
        "",
        f"{report['frames']} frames of {args.side}x{args.side} (model input {report['input_size']}), clip length "
        f"{report['clip_length']}: {report['wall_s']} s, {report['fps']} FPS; {report['tracks']} tracks, "
        f"{report['results_entries']} results entries, results.json {report['results_json_mb']} MB, "
        f"{report['overlay_frames']} overlay frames.",
        "",
        "| measure | before | during / after |",
        "|---|---|---|",
        f"| resident memory (MB) | {r['before_run']} | 10%: {r['at_10pct']}, 20%: {r['at_20pct']}, 50%: {r['at_50pct']}, "
        f"90%: {r['at_90pct']}, 100% (writing results.json): {r['at_100pct']}; peak {r['peak_during_run']}; "
        f"growth 20%->90%: {r['growth_20_to_90pct']}, 20%->100%: {r['growth_20_to_100pct']} |",
        f"| open file descriptors | {report['open_fds']['before']} | {report['open_fds']['after']} |",
        f"| files in the private temp folder | {report['temp_files']['before']} | {report['temp_files']['after']} |",
        f"| hidden leftovers in the output folder | - | {len(report['output_leftovers'])} |",
        "",
    ]
    write_text(os.path.join(args.output, "soak_report.md"), "\n".join(md))
    print(json.dumps({k: report[k] for k in ("frames", "wall_s", "fps", "rss_mb", "open_fds", "temp_files",
                                             "output_leftovers")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
