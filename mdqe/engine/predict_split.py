"""Predict a whole YouTube-VIS-layout split and write one results JSON.

    python -m mdqe.engine.predict_split --gt DIR/annotations/val.json --output RES.json \
        (--weights CKPT [--config NAME] | --model EXPORT_DIR --backend ort|trt|torch) \
        [--images DIR/JPEGImages] [--max-videos N] [--threads N]

Every video runs through the runtime's near-online pipeline
(``runtime.pipeline.run_video``: encoder once per frame, decoder per clip of
T frames with stride 1, per-clip filtering, the Hungarian clip tracker,
per-video scores), so the PyTorch path (``--weights``: the model is run
in-process by the torch backend, mdqe.backend) and the exported path
(``--model`` with ``--backend ort``) differ only in the backend.
The output is ``[{video_id, category_id, score, segmentations}, ...]`` for
``python -m mdqe.evaluate --gt ... --results RES.json``.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from typing import List, Optional

from runtime.cli import (add_backend_arg, add_device_arg, add_model_arg, add_output_arg, add_progress_arg,
                         add_threads_arg, cli_main, make_parser)
from runtime.errors import UsageError
from runtime.tracker import PRESETS


def torch_spec_from_config(cfg, weights: str):
    """A runtime ModelSpec for running an in-memory PyTorch model (no export directory)."""
    from runtime.contract import spec_from_config
    return spec_from_config(cfg, os.path.dirname(os.path.abspath(weights)), {"source": os.path.abspath(weights)})


def make_backend(args):
    if args.weights:
        from ..backend import TorchBackend
        from ..checkpoint import load_checkpoint
        from ..config import get_config
        _, ckpt_cfg, _ = load_checkpoint(args.weights)
        cfg = get_config(args.config) if args.config else ckpt_cfg
        if cfg is None:
            raise UsageError(f"{args.weights} records no config; pass --config")
        return TorchBackend(None, weights=args.weights, device=args.device, spec=torch_spec_from_config(cfg, args.weights))
    from runtime.backends import create_backend

    from ..backend import register
    register()                      # --model with --backend torch
    opts = {}
    if args.backend == "ort" and args.threads:
        opts["threads"] = args.threads
    return create_backend(args.backend, args.model, **opts)


def video_frame_dir(images_root: str, video: dict) -> str:
    """The folder holding a video's frames; its sorted image files must be the annotated frames."""
    names = video.get("file_names") or []
    if not names:
        raise ValueError(f"video {video.get('id')}: no file_names")
    folders = {os.path.dirname(n) for n in names}
    if len(folders) != 1:
        raise ValueError(f"video {video['id']}: frames spread over several folders {sorted(folders)[:3]}")
    folder = os.path.join(images_root, folders.pop())
    on_disk = sorted(f for f in os.listdir(folder) if not f.startswith("."))
    want = sorted(os.path.basename(n) for n in names)
    if on_disk != want:
        raise ValueError(f"{folder}: the folder's files differ from the video's file_names "
                         f"({len(on_disk)} files, {len(want)} annotated frames)")
    if [os.path.basename(n) for n in names] != want:
        raise ValueError(f"video {video['id']}: file_names are not in sorted order")
    return folder


def predict_split(gt_path: str, images_root: str, backend, max_videos: Optional[int] = None,
                  progress: bool = True, score_thr: Optional[float] = None,
                  preset_name: str = "auto") -> List[dict]:
    """Run every video of the split with the runtime's post-processing preset (``auto``: the
    authors' preset for the backend's model, as ``runtime.infer`` picks it); ``score_thr``
    overrides the clip score threshold (new tracks need twice it, as in the runtime CLI)."""
    from runtime.pipeline import RunOptions, run_video
    from runtime.tracker import preset, preset_for_model
    if preset_name == "auto":
        preset_name = preset_for_model(backend.spec.model_name, backend.spec.config)
    filt, trk = preset(preset_name, score_thr=score_thr)
    from tqdm import tqdm
    with open(gt_path, encoding="utf-8") as f:
        gt = json.load(f)
    videos = gt["videos"][:max_videos] if max_videos else gt["videos"]
    results: List[dict] = []
    with tempfile.TemporaryDirectory(prefix="mdqe_predict_") as tmp:
        for v in tqdm(videos, desc="videos", disable=not progress):
            out = os.path.join(tmp, str(v["id"]))
            run_video(video_frame_dir(images_root, v), out, backend,
                      RunOptions(filter=filt, tracker=trk, overlay=False, progress=False,
                                                       video_id=int(v["id"])))
            with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
                for r in json.load(f):
                    r.pop("track_id", None)
                    results.append(r)
    return results


@cli_main
def main(argv: Optional[List[str]] = None) -> int:
    ap = make_parser("python -m mdqe.engine.predict_split", __doc__, also=("mdqe-predict",))
    ap.add_argument("--gt", required=True, help="annotation JSON of the split (its videos are predicted)")
    ap.add_argument("--images", default=None, help="frame root (default: <gt dir>/../JPEGImages)")
    add_output_arg(ap, help="results JSON file to write")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="PyTorch checkpoint (mdqe.checkpoint format): the PyTorch path")
    add_model_arg(src)
    add_backend_arg(ap, choices=("ort", "trt", "torch"), help="runtime backend with --model (default ort)")
    ap.add_argument("--config", default=None, help="with --weights: override the config stored in the checkpoint")
    add_device_arg(ap, help="with --weights: PyTorch device")
    add_threads_arg(ap, help="torch / ORT intra-op threads")
    ap.add_argument("--max-videos", type=int, default=None)
    ap.add_argument("--score-thr", type=float, default=None,
                    help="clip score threshold (runtime default 0.1; new tracks need twice it)")
    ap.add_argument("--preset", default="auto", choices=("auto",) + PRESETS,
                    help="runtime post-processing preset (auto: the authors' preset for the model, as runtime.infer)")
    add_progress_arg(ap)
    args = ap.parse_args(argv)
    if args.threads:
        try:
            import torch
            torch.set_num_threads(args.threads)
        except ImportError:
            pass
    images = args.images or os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(args.gt))), "JPEGImages")
    backend = make_backend(args)
    t0 = time.time()
    results = predict_split(args.gt, images, backend, args.max_videos, not args.no_progress, args.score_thr,
                            args.preset)
    from runtime.atomic import write_json
    write_json(args.output, results)
    print(f"wrote {len(results)} results to {args.output} in {time.time() - t0:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
