"""Command line: near-online MDQE inference on a video.

    python -m runtime.infer --model DIR --video PATH --output DIR [--backend ort|trt|fake]
    python -m mdqe.infer    ... the same options, and --backend torch (the PyTorch model; needs torch)
    mdqe-infer ...          the console script of python -m mdqe.infer

Writes OUTPUT/results.json (YouTube-VIS results), OUTPUT/overlay.mp4,
OUTPUT/timing.json and, with --save-pngs, OUTPUT/masks/track_<id>/<frame>.png.
Exit status (runtime/cli.py; docs/runtime.md, "Reliability"):
  0    the whole video was processed;
  2    bad input the user can fix (missing/corrupt video, unreachable stream, incompatible model
       directory, unwritable --output, missing plugin library, unavailable backend): one line;
  3    verification failed: the model produced NaN/inf (the message names the stage);
  4    stopped early because of the input (truncated video, undecodable frame, stream lost after
       the bounded reconnects): outputs are complete for the frames read, the summary and
       timing.json say why;
  130  stopped by Ctrl-C (SIGINT), 143 stopped by SIGTERM: the first signal stops reading and
       still writes the outputs for the frames read so far; a second one aborts (no outputs,
       temporaries removed).
"""
from __future__ import annotations

import os

# numpy's matrix products here are small (mask IoU); a multi-threaded BLAS pool competing with
# ONNX Runtime's threads made the tracker stage 10x slower on 2 cores. Set before numpy loads;
# an explicit environment setting wins.
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402

from .cli import (EXIT_BAD_INPUT, EXIT_OK, EXIT_SIGNAL, EXIT_STOPPED_EARLY, EXIT_VERIFY,  # noqa: E402,F401
                  add_backend_arg, add_device_arg, add_max_frames_arg, add_model_arg, add_output_arg,
                  add_plugin_lib_arg, add_progress_arg, add_providers_arg, add_threads_arg, add_video_arg,
                  cli_main, make_parser)
from .clip_filter import check_number  # noqa: E402
from .contract import TRT_PLUGIN_LIBRARY  # noqa: E402
from .errors import RuntimeErrorBase, UsageError  # noqa: E402
from .output_dir import check_output_dir  # noqa: E402
from .tracker import PRESETS, preset, preset_for_model  # noqa: E402


def _delays(text: str):
    try:
        vals = [float(x) for x in text.split(",") if x.strip()]   # a list: JSON round trips keep it equal
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated seconds, got {text!r}") from None
    if any(not (0.0 <= v <= 3600.0) for v in vals):
        raise argparse.ArgumentTypeError(f"delays must be between 0 and 3600 s, got {text!r}")
    return vals


def add_postprocess_args(p: argparse.ArgumentParser) -> None:
    """The post-processing preset and its per-flag overrides (per-clip filter, tracker): one set of
    flags for every entry point that runs the pipeline (runtime.infer, export.to_triton, ...)."""
    g = p.add_argument_group("post-processing preset (defaults: the authors' inference; docs/runtime.md)")
    g.add_argument("--preset", default="auto", choices=("auto",) + PRESETS,
                   help="auto: ovis for an OVIS model, else ytvis (the authors' values); paper: this "
                        "project's earlier paper-style filter and tracker")
    g = p.add_argument_group("per-clip filtering (each flag overrides the preset)")
    g.add_argument("--score-thr", type=float, default=None,
                   help="keep queries with score >= min(thr, top score); new tracks need > 2*thr (0.1)")
    g.add_argument("--dup-cos", type=float, default=None, help="drop queries with embedding cosine >= this (0.99)")
    g.add_argument("--max-queries", type=int, default=None,
                   help="queries kept after the duplicate test (100 ytvis, 150 ovis)")
    g.add_argument("--nms-iou", type=float, default=None, help="mask NMS: drop queries with mask IoU >= this (0.5)")
    g = p.add_argument_group("tracker (Eq. 7; each flag overrides the preset)")
    g.add_argument("--beta1", type=float, default=None, help="weight of the mask IoU term (1)")
    g.add_argument("--beta2", type=float, default=None, help="weight of the embedding similarity term (1)")
    g.add_argument("--match-thr", type=float, default=None, help="pairs with S <= this stay unmatched (0.6)")
    g.add_argument("--dup-iou", type=float, default=None,
                   help="unmatched detection is a duplicate if max mIoU > this (0.4)")
    g.add_argument("--dup-sim", type=float, default=None, help="... or max embedding similarity > this (0.6)")
    g.add_argument("--new-track-score", type=float, default=None,
                   help="score a detection needs to start a track (default 2 * --score-thr)")
    g.add_argument("--max-unseen", type=int, default=None, help="long memory: clips a track stays matchable unseen (15)")
    g.add_argument("--short-unseen", type=int, default=None, help="short memory in clips (5; 0 = off)")
    g.add_argument("--memory-clips", type=int, default=None, help="clip slots of the memory embedding (3)")
    g.add_argument("--memory-decay", type=float, default=None,
                   help="memory embedding slot weight exp(-decay * age) (0.25)")
    g.add_argument("--max-tracks", type=int, default=None, help="tracks per video (70 ytvis, 120 ovis; 0 = no cap)")
    g.add_argument("--window-clips", type=int, default=None,
                   help="clips per window of the video score (the authors' 30-frame windows)")
    g.add_argument("--no-window-collapse", action="store_true",
                   help="do not reproduce the authors' memory collapse at window boundaries")
    g.add_argument("--no-tail-clip", action="store_true", help="no truncated clip of T-1 frames at the end")
    g.add_argument("--track-embedding", default=None, choices=("pred_queries", "pred_embeds"),
                   help="tracking embedding: the raw clip query (authors) or phi_e (paper)")
    g.add_argument("--mask-resize", default=None, choices=("nearest", "bilinear"),
                   help="final resize to the original size (nearest: authors)")
    g.add_argument("--min-embed-cos", type=float, default=None,
                   help="paper preset only: zero the similarity of pairs with embedding cosine below this")


def build_parser(prog: str = "python -m runtime.infer") -> argparse.ArgumentParser:
    also = (("python -m mdqe.infer (adds --backend torch)", "mdqe-infer") if prog == "python -m runtime.infer"
            else ("mdqe-infer", "python -m runtime.infer (without --backend torch)"))
    p = make_parser(prog, __doc__.split("\n\n")[0], show_defaults=True, also=also)
    add_model_arg(p, help="exported model directory (encoder.onnx, decoder.onnx, export.json); "
                          "optional for --backend fake")
    add_video_arg(p)
    add_output_arg(p)
    add_backend_args(p)
    add_max_frames_arg(p, help="stop after N frames")
    p.add_argument("--video-id", type=int, default=1, help="video_id written in results.json")
    p.add_argument("--save-pngs", action="store_true", help="also write per-instance mask PNGs")
    p.add_argument("--no-overlay", action="store_true", help="do not write overlay.mp4")
    add_progress_arg(p)
    g = p.add_argument_group("network streams (rtsp://, http(s)://, any URL OpenCV/FFmpeg opens)")
    g.add_argument("--reconnect-delays", default="0.5,1,2", type=_delays,
                   help="a dropped stream is reopened once after each of these delays (seconds); then the run "
                        "ends with the frames so far (exit 4)")
    add_postprocess_args(p)
    g = p.add_argument_group("per-video output")
    g.add_argument("--vis-thr", type=float, default=0.3, help="overlay shows tracks with video score >= this")
    g.add_argument("--min-pair-score", type=float, default=0.05,
                   help="results keep the top max(#(track,class) pairs > this, --min-pairs)")
    g.add_argument("--min-pairs", type=int, default=10)
    return p


def postprocess_from_args(args, spec=None):
    """(FilterParams, TrackerParams) of the flags of ``add_postprocess_args``; ``--preset auto``
    looks at ``spec`` (a ModelSpec) or at export.json of ``args.model``. Raises ParamError naming
    a bad flag."""
    name = args.preset
    if name == "auto":
        if spec is None and getattr(args, "model", None):
            try:
                from .model_dir import load_model_dir
                spec = load_model_dir(args.model)
            except RuntimeErrorBase:
                spec = None
        name = preset_for_model(spec.model_name, spec.config) if spec is not None else "ytvis"
    return preset(
        name, score_thr=args.score_thr, dup_cos=args.dup_cos, max_queries=args.max_queries, nms_iou=args.nms_iou,
        beta1=args.beta1, beta2=args.beta2, match_thr=args.match_thr, dup_iou=args.dup_iou, dup_sim=args.dup_sim,
        new_track_score=args.new_track_score, max_unseen=args.max_unseen, short_unseen=args.short_unseen,
        memory_clips=args.memory_clips, memory_decay=args.memory_decay, max_tracks=args.max_tracks,
        window_clips=args.window_clips, collapse_windows=False if args.no_window_collapse else None,
        tail_clip=False if args.no_tail_clip else None, embedding=args.track_embedding,
        mask_resize=args.mask_resize, min_embed_cos=args.min_embed_cos)


def options_from_args(args, spec=None):
    """RunOptions of the parsed ``args`` (see ``postprocess_from_args``). Raises ParamError naming a
    bad flag."""
    from .pipeline import RunOptions
    filt, trk = postprocess_from_args(args, spec)
    for flag in ("vis_thr", "min_pair_score"):
        check_number(flag, getattr(args, flag))
    check_number("min_pairs", args.min_pairs, 0, integer=True)
    if args.max_frames is not None:
        check_number("max_frames", args.max_frames, 1, integer=True)
    return RunOptions(
        filter=filt, tracker=trk,
        save_pngs=args.save_pngs, overlay=not args.no_overlay, max_frames=args.max_frames,
        video_id=args.video_id, progress=not args.no_progress, vis_thr=args.vis_thr,
        min_pair_score=args.min_pair_score, min_pairs=args.min_pairs)


def add_backend_args(p) -> None:
    """The flags ``backend_from_args`` reads: --backend and each backend's options (--providers,
    --threads, --plugin-lib, --engine-dir, --weights, --device); runtime.infer, benchmarks.fps."""
    add_backend_arg(p)
    add_providers_arg(p, help="ort: 'cpu' (default), 'auto' (CUDA if present), or a comma list, e.g. 'tensorrt,cuda'")
    add_threads_arg(p, help="ort: intra-op threads")
    add_plugin_lib_arg(p, help=f"trt: path of {TRT_PLUGIN_LIBRARY}")
    p.add_argument("--engine-dir", default=None,
                   help="trt: folder with encoder.plan / decoder.plan (default MODEL/engines, then MODEL)")
    p.add_argument("--weights", default=None, help="torch: checkpoint (default: export.json weights.source)")
    add_device_arg(p, help="torch: PyTorch device")


def backend_from_args(args):
    from .backends import create_backend
    if args.backend == "ort":
        return create_backend("ort", args.model, providers=args.providers, threads=args.threads)
    if args.backend == "trt":
        return create_backend("trt", args.model, plugin_lib=args.plugin_lib, engine_dir=args.engine_dir)
    if args.backend == "torch":
        return create_backend("torch", args.model, weights=args.weights, device=args.device)
    return create_backend("fake", args.model)


def exit_status(timing: dict) -> int:
    """The exit status of a finished run (see the module doc)."""
    if timing.get("signal") in EXIT_SIGNAL:      # a signal is reported even when it came after the last frame
        return EXIT_SIGNAL[timing["signal"]]
    return EXIT_STOPPED_EARLY if timing.get("stopped_early") else EXIT_OK


@cli_main
def main(argv=None) -> int:
    return run(argv)


def run(argv=None, prog: str = "python -m runtime.infer") -> int:
    """The command's body (``main`` without the exit-code wrapper); ``prog`` names the command in
    --help and errors (mdqe.infer runs it with the torch backend registered)."""
    args = build_parser(prog).parse_args(argv)
    if args.model is None and args.backend != "fake":
        raise UsageError("--model DIR is required (except with --backend fake)")
    options = options_from_args(args)               # bad options (ParamError): one line, exit 2, before any work
    try:
        from .backends import require_backend
        require_backend(args.backend)                                  # torch: registered by mdqe.infer
        check_output_dir(args.output)                                  # before any work
        if args.model is not None:
            from .model_dir import load_model_dir
            load_model_dir(args.model)                                 # cheap: before decoding anything
        from .pipeline import run_video
        from .video import FrameSource
        source = FrameSource(args.video, max_frames=args.max_frames,   # fail fast on a bad video
                             reconnect_delays=args.reconnect_delays)
        backend = backend_from_args(args)
        try:
            timing = run_video(source, args.output, backend, options)
        finally:
            backend.close()
    except KeyboardInterrupt as e:
        name = str(e) if str(e) in EXIT_SIGNAL else "SIGINT"
        print(f"interrupted ({name}): aborted, no outputs written", file=sys.stderr)
        return EXIT_SIGNAL[name]
    except OSError as e:   # e.g. the disk filled up while writing
        print(f"error: {e.strerror or e}: {e.filename or args.output}", file=sys.stderr)
        return EXIT_BAD_INPUT
    summary = {k: timing[k] for k in ("frames", "encoder_frames", "decoder_clips", "fps", "tracks",
                                      "results_entries", "stopped_early", "stop_reason")}
    print(json.dumps(summary))
    if timing["stopped_early"]:
        print(f"warning: stopped early: {timing['stop_reason']}; the outputs cover the {timing['frames']} "
              "frames read", file=sys.stderr)
    elif timing.get("signal"):
        print(f"warning: {timing['signal']} received after the last frame was read; the outputs are complete",
              file=sys.stderr)
    return exit_status(timing)


if __name__ == "__main__":
    sys.exit(main())
