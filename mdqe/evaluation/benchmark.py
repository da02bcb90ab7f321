"""Timing of the evaluator on a random YouTube-VIS-sized case (torch-free).

    python -m mdqe.evaluation.benchmark [--videos 302] [--frames 30] [--height 720] [--width 1280] [--seed 0]

Per video: 3 ground-truth tracks (moving rectangles, 10 % of frames absent,
40 categories), one shifted detection per track and 7 false positives.
The files are written to a temporary folder, evaluated from disk (JSON
loading and RLE validation included) and deleted.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import List, Optional

import numpy as np
from pycocotools import mask as mask_utils

from runtime.cli import add_image_size_args, add_seed_arg, cli_main, make_parser

from .results import write_json_atomic
from .ytvis_eval import evaluate


def _rect(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> Optional[dict]:
    """Compressed RLE of the rectangle [x0, x1) x [y0, y1) clipped to the frame (None if empty),
    built from its column-major run lengths without a dense mask."""
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        return None
    bh = y1 - y0
    counts = [x0 * h + y0] + [bh, h - bh] * (x1 - x0 - 1) + [bh, (h - y1) + (w - x1) * h]
    rle = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
    return {"size": [h, w], "counts": rle["counts"].decode("utf-8")}


def make_case(videos: int, frames: int, height: int, width: int, seed: int = 0, num_classes: int = 40):
    """Return (gt dict, results list) of the random case described in the module docstring."""
    rng = np.random.default_rng(seed)
    gt = {"videos": [], "annotations": [], "categories": [{"id": c, "name": str(c)} for c in range(1, num_classes + 1)]}
    res: List[dict] = []
    for v in range(1, videos + 1):
        gt["videos"].append({"id": v, "height": height, "width": width, "length": frames})
        for _ in range(3):
            cat = int(rng.integers(1, num_classes + 1))
            x, y = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
            bw, bh = int(rng.integers(20, width // 2)), int(rng.integers(20, height // 2))
            track = [_rect(height, width, x + t, y, x + t + bw, y + bh) if rng.random() > 0.1 else None
                     for t in range(frames)]
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "video_id": v, "category_id": cat,
                                      "iscrowd": 0, "segmentations": track,
                                      "areas": [float(mask_utils.area({"size": m["size"], "counts": m["counts"].encode()}))
                                                if m is not None else None for m in track]})
            dx = int(rng.integers(0, 15))
            res.append({"video_id": v, "category_id": cat, "score": float(rng.random()),
                        "segmentations": [_rect(height, width, x + t + dx, y, x + t + dx + bw, y + bh)
                                          for t in range(frames)]})
        fp = _rect(height, width, 5, 5, 60, 60)
        for _ in range(7):
            res.append({"video_id": v, "category_id": int(rng.integers(1, num_classes + 1)),
                        "score": float(rng.random()), "segmentations": [fp] * frames})
    return gt, res


@cli_main
def main(argv: Optional[List[str]] = None) -> int:
    ap = make_parser("python -m mdqe.evaluation.benchmark", __doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=302)
    ap.add_argument("--frames", type=int, default=30)
    add_image_size_args(ap, height=720, width=1280, help="frame")
    add_seed_arg(ap)
    a = ap.parse_args(argv)
    gt, res = make_case(a.videos, a.frames, a.height, a.width, a.seed)
    with tempfile.TemporaryDirectory() as tmp:
        gp, rp = os.path.join(tmp, "gt.json"), os.path.join(tmp, "res.json")
        write_json_atomic(gt, gp)
        write_json_atomic(res, rp)
        t0 = time.perf_counter()
        m = evaluate(gp, rp)
        dt = time.perf_counter() - t0
    print(f"{a.videos} videos x {a.frames} frames at {a.height}x{a.width}: {len(gt['annotations'])} GT tracks, "
          f"{len(res)} detections -> evaluated in {dt:.2f} s")
    print({k: round(v, 4) for k, v in m.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
