"""Command line of runtime.batch (see runtime/batch/__init__.py and docs/batch.md).

    python -m runtime.batch --model DIR --videos FOLDER|GT.json|LIST.txt --output DIR   (or mdqe-batch)

Exit status (runtime/cli.py): 0 every video finished; 2 bad input (model, videos, output folder,
cluster) or some videos failed (each listed with its error in OUT/summary.json; the others
finished); 130 Ctrl-C (finished videos are kept; rerun the same command to do the rest).
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional

from . import BatchInputError, BatchSpec, run_batch
from ..cli import EXIT_BAD_INPUT, EXIT_SIGNAL, add_output_arg, add_progress_arg, cli_main, make_parser
from .runner import EXECUTORS


def build_parser() -> argparse.ArgumentParser:
    p = make_parser(
        "python -m runtime.batch", also=("mdqe-batch",), allow_abbrev=False, add_help=False,
        description="Run MDQE on many videos with a pool of workers (Ray actors or local processes).",
        epilog="Every other option is a per-video option of python -m runtime.infer (--model, --backend, "
               "--providers, --threads, --score-thr, --no-overlay, --save-pngs, ...; listed below).")
    p.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    p.add_argument("--videos", required=True,
                   help="dataset (annotations/*.json + JPEGImages/, or the annotation JSON), a folder of video "
                        "files / frame folders, or a text file with one path per line")
    add_output_arg(p, help="output folder (reruns resume in it)")
    p.add_argument("--workers", type=int, default=2, help="workers (each loads the model once)")
    p.add_argument("--address", default=None,
                   help="join an existing Ray cluster ('auto' or HOST:PORT); default: a local Ray cluster")
    p.add_argument("--executor", default="auto", choices=EXECUTORS,
                   help="ray, local processes, or auto (Ray when installed)")
    p.add_argument("--cpus-per-worker", type=float, default=None,
                   help="Ray CPUs per worker and ONNX Runtime threads when --threads is 0 "
                        "(default: this machine's cores / workers; 1 with --address)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per worker (Ray num_gpus)")
    p.add_argument("--max-retries", type=int, default=2, help="retries of a video whose worker died")
    p.add_argument("--frames-root", default=None, help="dataset input: folder the file_names are relative to")
    p.add_argument("--evaluate", nargs="?", const="", default=None, metavar="GT.json",
                   help="score OUT/results.json with the evaluator (no value: the --videos dataset)")
    add_progress_arg(p)
    return p


@cli_main
def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if "-h" in argv or "--help" in argv:
        from ..infer import build_parser as infer_parser
        head, _, exit_codes = parser.format_help().partition("exit status:")
        print(head)
        print("per-video options (python -m runtime.infer; its --video, --output and --video-id are set "
              "by runtime.batch for each video):")
        per_video = infer_parser().format_help().split("options:", 1)[-1]
        print(per_video[:per_video.index("also runs as:")].rstrip() + "\n")
        print("exit status:" + exit_codes)
        return 0
    args, run_args = parser.parse_known_args(argv)
    evaluate = args.evaluate
    if evaluate == "":
        from .inputs import discover_videos
        _, dataset = discover_videos(args.videos, args.frames_root)
        if dataset is None:
            raise BatchInputError("--evaluate without a value needs a dataset as --videos")
        evaluate = dataset
    spec = BatchSpec(videos=args.videos, output=args.output, run_args=run_args, workers=args.workers,
                     executor=args.executor, address=args.address, cpus_per_worker=args.cpus_per_worker,
                     gpus_per_worker=args.gpus_per_worker, max_retries=args.max_retries,
                     frames_root=args.frames_root, evaluate=evaluate, progress=not args.no_progress)
    try:
        summary = run_batch(spec)                   # RuntimeErrorBase: one line, exit 2 (cli_main)
    except KeyboardInterrupt:
        print("interrupted: finished videos are kept; rerun the same command to do the rest", file=sys.stderr)
        return EXIT_SIGNAL["SIGINT"]
    for w in summary["per_worker"]:
        print(f"worker {w['worker']} ({', '.join(map(str, w['hosts']))}): {w['videos']} videos, {w['frames']} frames, "
              f"{w['fps']} FPS while busy, {w['restarts']} restarts", file=sys.stderr)
    if summary.get("metrics_table"):
        print(summary["metrics_table"], file=sys.stderr)
    short = {k: summary[k] for k in ("videos", "finished", "processed", "skipped_already_done", "failed", "frames",
                                     "wall_s", "fps", "executor", "workers", "results", "summary")}
    short["fps_per_worker"] = [w["fps"] for w in summary["per_worker"]]
    if "metrics" in summary:
        short["AP"] = summary["metrics"].get("AP")
    print(json.dumps(short))
    if summary["failed"]:
        print(f"error: {summary['failed']} of {summary['videos']} videos failed (errors in {summary['summary']})",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
