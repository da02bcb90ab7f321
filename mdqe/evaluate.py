"""Command line: evaluate YouTube-VIS / OVIS results (torch-free).

    python -m mdqe.evaluate --gt GT.json --results RES.json [--output metrics.json] [--per-category]
    mdqe-eval ...                         (the same, as a console script)

Prints a table (values in percent) and, with --output, writes the metrics
(fractions in [0, 1], -1 where undefined) as JSON, atomically.
Exit status 2 on a malformed or missing input file (runtime/cli.py).
"""
from __future__ import annotations

import os
import sys
import time
from typing import Dict, List, Optional

from mdqe.evaluation import FormatError, evaluate_detailed
from mdqe.evaluation.results import write_json_atomic
from runtime.cli import add_output_arg, cli_main, error, make_parser


def format_table(metrics: Dict[str, float]) -> str:
    keys = list(metrics)
    head = " ".join(f"{k:>7s}" for k in keys)
    vals = " ".join(f"{(100 * v if v >= 0 else -1):7.2f}" for v in metrics.values())
    return head + "\n" + vals


@cli_main
def main(argv: Optional[List[str]] = None) -> int:
    ap = make_parser("python -m mdqe.evaluate", __doc__.split("\n\n")[0], also=("mdqe-eval",))
    ap.add_argument("--gt", required=True, help="ground-truth JSON (YouTube-VIS / OVIS format)")
    ap.add_argument("--results", required=True, help="results JSON: list of {video_id, category_id, score, segmentations}")
    add_output_arg(ap, required=False, help="write the metrics to this JSON file")
    ap.add_argument("--per-category", action="store_true", help="also report AP per category")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    if args.output is not None:   # checked before the (possibly long) evaluation
        out_dir = os.path.dirname(os.path.abspath(args.output))
        if os.path.isdir(args.output):
            return error(f"--output {args.output} is a directory; give a file path for the metrics JSON")
        parent = out_dir                       # missing folders are created: check the nearest existing one
        while not os.path.exists(parent) and os.path.dirname(parent) != parent:
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
            return error(f"--output {args.output}: {parent} is not a writable folder")
    try:
        res = evaluate_detailed(args.gt, args.results)
    except (FormatError, FileNotFoundError) as e:
        return error(str(e))
    metrics = res.summary()
    print(format_table(metrics))
    out = dict(metrics)
    if args.per_category:
        per = res.per_category_ap()
        for name, v in per.items():
            print(f"  AP[{name}] = {100 * v:.2f}" if v >= 0 else f"  AP[{name}] = -1 (no ground truth)")
        out["per_category_AP"] = per
    print(f"(evaluated in {time.perf_counter() - t0:.2f} s)")
    if args.output:
        try:
            write_json_atomic(out, args.output, indent=2)
        except OSError as e:
            return error(f"cannot write {args.output}: {e.strerror or e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
