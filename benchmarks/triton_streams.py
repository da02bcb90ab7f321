"""Concurrent video streams through Triton, beside ``runtime.infer`` on the same videos.

    python -m benchmarks.triton_streams [--model DIR] [--frames 24] [--streams 1,2,4] [--output DIR]

One run: exports the tiny model from ``weights/tiny_synthetic.safetensors`` (unless ``--model``),
renders 4 synthetic videos (mdqe.data.synthetic, 192x256, PNG folders), generates a
Python-backend repository (export/to_triton.py) and starts the bundled tritonserver on loopback
ports. For S in --streams: the runtime (``runtime.pipeline.run_video``, what runtime.infer runs,
ONNX Runtime CPU) on the first S videos in turn, then the same S videos streamed at once (one
thread and one gRPC client per stream, runtime.client.stream_video). Reported per setting:
runtime FPS, streams x frames / wall time (aggregate frames per second) and their ratio, p50/p99
of the per-frame request latency (pooled over the streams; the END flush request is not a frame
and is reported apart), and whether every stream's results.json equals the runtime's. The
runtime runs right before each setting because the shared machine's load drifts. Outputs (atomic): OUTPUT/triton_streams.json and .md.

Both sides write results.json (no overlay video, no PNGs). Not a test: numbers depend on the
machine and its load; the report states both.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from typing import List

for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np

from benchmarks.fps import cpu_description
from runtime.atomic import write_json, write_text
from runtime.cli import (EXIT_FAILED, add_image_size_args, add_model_arg, add_output_arg, add_threads_arg, cli_main,
                         error, make_parser)
from runtime.timing import StageStats

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the folder holding the packages


def _videos(folder: str, n: int, frames: int, h: int, w: int) -> List[str]:
    import cv2

    from mdqe.data.synthetic import render_video
    out = []
    for k in range(n):
        d = os.path.join(folder, f"video{k}")
        os.makedirs(d, exist_ok=True)
        v = render_video(np.random.default_rng(100 + k), h, w, frames)
        for i, fr in enumerate(v.frames):
            cv2.imwrite(os.path.join(d, f"{i:05d}.png"), cv2.cvtColor(fr, cv2.COLOR_RGB2BGR))
        out.append(d)
    return out


def _pct(samples_ms: List[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(samples_ms), q)), 2)


@cli_main
def main(argv=None) -> int:
    p = make_parser("python -m benchmarks.triton_streams", __doc__.split("\n\n")[0])
    add_model_arg(p, help="exported model directory (default: export the tiny checkpoint)")
    p.add_argument("--frames", type=int, default=24, help="frames per video")
    add_image_size_args(p, height=192, width=256, help="video")
    p.add_argument("--streams", default="1,2,4", help="concurrent stream counts to measure")
    p.add_argument("--score-thr", type=float, default=0.05)
    add_threads_arg(p, help="ONNX Runtime intra-op threads, both sides")
    p.add_argument("--machine", default=None, help="machine description for the report")
    add_output_arg(p, required=False, default="triton_streams_report",
                   help="report folder (default: triton_streams_report/ in the current folder; the committed "
                        "report is benchmarks/results/cpu_triton)")
    args = p.parse_args(argv)
    counts = [int(s) for s in args.streams.split(",")]
    import tritonclient.grpc as grpcclient

    from export.to_triton import main as to_triton
    from runtime.backends import create_backend
    from runtime.client import ClientOptions, stream_video
    from runtime.pipeline import RunOptions, run_video
    from runtime.clip_filter import FilterParams
    from runtime.serving.server import TritonServer
    from runtime.tracker import TrackerParams

    work = tempfile.mkdtemp(prefix="mdqe-triton-bench-")
    model = args.model
    if model is None:
        model = os.path.join(work, "tiny")
        subprocess.run([sys.executable, "-m", "export.to_onnx", "--config", "checkpoint",
                        "--weights", os.path.join(ROOT, "weights", "tiny_synthetic.safetensors"), "--output", model,
                        "--msda", "onnx", "--no-verify", "--no-progress"], check=True, cwd=ROOT)
    videos = _videos(os.path.join(work, "videos"), max(counts), args.frames, args.height, args.width)

    # --- runtime.infer (in-process run_video, the same code path as the CLI) ---------------------
    opts = RunOptions(filter=FilterParams(score_thr=args.score_thr),
                      tracker=TrackerParams(score_thr=args.score_thr), overlay=False, progress=False)
    backend = create_backend("ort", model, threads=args.threads)
    run_video(videos[0], os.path.join(work, "warmup"), backend, opts)

    def runtime_pass(n: int) -> dict:
        """runtime on the first n videos in turn (one process, as runtime.infer would run them);
        writes OUTPUT/ref<k>/results.json (identical for every pass: the pipeline is deterministic)."""
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        timings = [run_video(v, os.path.join(work, f"ref{k}"), backend, opts) for k, v in enumerate(videos[:n])]
        wall = time.perf_counter() - t0
        frames = sum(t["frames"] for t in timings)
        return {"videos": n, "fps": round(frames / wall, 3), "frames": frames, "wall_s": round(wall, 3),
                "ms_per_frame_mean": round(1e3 * wall / frames, 2), "load_average": [round(load0, 2),
                                                                                     round(os.getloadavg()[0], 2)]}

    # --- Triton ------------------------------------------------------------------------------------
    repo = os.path.join(work, "repo")
    rc = to_triton(["--model", model, "--output", repo, "--triton-backend", "python",
                    "--score-thr", str(args.score_thr), "--threads", str(args.threads)])
    if rc != 0:
        return rc
    rows = []
    with TritonServer(repo, log_path=os.path.join(work, "tritonserver.log")) as srv:
        warm = grpcclient.InferenceServerClient(srv.grpc_url)
        stream_video(warm, videos[0], os.path.join(work, "warm_triton"), 1, ClientOptions(overlay=False))
        warm.close()
        sid = 10
        for s in counts:
            # the runtime on the same s videos right before: the machine's load drifts between settings
            rt = runtime_pass(s)
            print(json.dumps({"runtime_infer": rt}), flush=True)
            stats = [StageStats() for _ in range(s)]
            timings, errors = [None] * s, []

            def run(k, sid0):
                c = grpcclient.InferenceServerClient(srv.grpc_url)
                try:
                    timings[k] = stream_video(c, videos[k], os.path.join(work, f"s{s}_{k}"), sid0 + k,
                                              ClientOptions(overlay=False), latency=stats[k])
                except Exception as e:
                    errors.append(repr(e))
                finally:
                    c.close()

            threads = [threading.Thread(target=run, args=(k, sid)) for k in range(s)]
            sid += s
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            if errors:
                return error(f"stream errors: {errors}", EXIT_FAILED)
            lat = [1e3 * x for st in stats for x in st.samples]
            same = all(json.load(open(os.path.join(work, f"s{s}_{k}", "results.json")))
                       == json.load(open(os.path.join(work, f"ref{k}", "results.json"))) for k in range(s))
            frames = sum(t["frames"] for t in timings)
            rows.append({"streams": s, "frames": frames, "wall_s": round(wall, 3),
                         "load_average": [round(load0, 2), round(os.getloadavg()[0], 2)],
                         "streams_x_fps": round(frames / wall, 3), "per_stream_fps": round(frames / wall / s, 3),
                         "latency_p50_ms": _pct(lat, 50), "latency_p99_ms": _pct(lat, 99),
                         "end_flush_ms_mean": round(float(np.mean([t["latency_ms"]["end_flush"] for t in timings])), 2),
                         "results_equal_runtime": bool(same), "runtime_infer": rt,
                         "throughput_ratio_triton_over_runtime": round(frames / wall / rt["fps"], 3)})
            print(json.dumps(rows[-1]), flush=True)
        rc_stop = srv.stop()
    backend.close()
    report = {
        "command": "python -m benchmarks.triton_streams " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": args.machine or cpu_description(),
        "load_average_at_end": list(os.getloadavg()),
        "model": "tiny (weights/tiny_synthetic.safetensors), onnx-form MSDeformAttn, fp32, ONNX Runtime CPU",
        "videos": f"{len(videos)} synthetic videos (mdqe.data.synthetic), {args.frames} frames, "
                  f"{args.height}x{args.width}, PNG folders",
        "server": "tritonserver bundled in nvidia-pytriton 0.7.0, Python backend; mdqe_video (1 instance, "
                  "sequence batcher) + BLS to mdqe_encoder / mdqe_decoder (1 instance each, ONNX Runtime CPU)",
        "counted": "wall time from the first request of the first stream to the last response of the last stream; "
                   "client decode + gRPC + server pipeline + client results writing; model loading and a warm-up "
                   "stream excluded. runtime.infer: before each Triton setting, the same videos one after another in one "
                   "process (run_video, ONNX Runtime CPU), after a warm-up; ratio = Triton streams x frames / s over "
                   "that runtime FPS.",
        "triton": rows,
        "server_exit_status": rc_stop,
    }
    os.makedirs(args.output, exist_ok=True)
    write_json(os.path.join(args.output, "triton_streams.json"), report)
    md = ["# Triton streams vs runtime.infer", "", f"Machine: {report['machine']} (load average at the end "
          f"{report['load_average_at_end'][0]:.1f}). Command: `{report['command']}`.", "",
          f"Model: {report['model']}. Videos: {report['videos']}. Server: {report['server']}.", "",
          "| streams | runtime.infer FPS (same videos in turn, just before) | Triton streams x frames / s | ratio "
          "| per-stream FPS | p50 ms / frame | p99 ms / frame | results == runtime.infer | load average (start, end) |",
          "|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        md.append(f"| {r['streams']} | {r['runtime_infer']['fps']} | {r['streams_x_fps']} | "
                  f"{r['throughput_ratio_triton_over_runtime']} | {r['per_stream_fps']} | {r['latency_p50_ms']} | "
                  f"{r['latency_p99_ms']} | {'yes' if r['results_equal_runtime'] else 'NO'} | "
                  f"runtime {r['runtime_infer']['load_average']}, Triton {r['load_average']} |")
    md += ["", f"Counted: {report['counted']}", ""]
    write_text(os.path.join(args.output, "triton_streams.md"), "\n".join(md))
    print("\n".join(md))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
