"""Compare this toolkit with the authors' MDQE code, stage by stage (docs/fidelity.md).

    python tools/authors_parity.py --authors-repo PATH [--stages model,converter,...] [--report report.json]
    (or python -m tools.authors_parity ...)

PATH is a checkout of github.com/MinghanLi/MDQE_CVPR2023 (the user's; nothing of it is copied
here). Needs the `parity` extra (einops, pyyaml). Runs on CPU. Exit codes: 0 every stage within
tolerance, 2 bad input (no such checkout, unknown stage), 3 a stage out of tolerance (runtime/cli.py).
"""
from __future__ import annotations

import importlib
import os
import sys
import time

if __name__ == "__main__" and not __package__:
    # `python tools/authors_parity.py` puts tools/, not the folder holding the packages, first on
    # sys.path: put that folder there instead and run this file as the module tools.authors_parity.
    import runpy
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    runpy.run_module("tools.authors_parity", run_name="__main__", alter_sys=True)
    raise SystemExit(0)   # not reached: the module's own __main__ block exits

from runtime.cli import EXIT_VERIFY, add_report_arg, add_threads_arg, cli_main, error, make_parser  # noqa: E402

# stage name -> module under tools.parity exposing run(authors, args) -> {"ok": bool, ...}
STAGES = {
    "model": "tools.parity.model",
    "converter": "tools.parity.converter",
    "tracker": "tools.parity.tracker",
    "criterion": "tools.parity.criterion",
}


def _csv(s: str):
    return [v.strip() for v in s.split(",") if v.strip()]


@cli_main
def main(argv=None) -> int:
    ap = make_parser("python -m tools.authors_parity", __doc__.split("\n")[0])
    ap.add_argument("--authors-repo", required=True, help="checkout of MinghanLi/MDQE_CVPR2023 (repository root)")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, from {sorted(STAGES)}")
    ap.add_argument("--presets", default="r50_ytvis21,r50_ovis", help="our presets to compare")
    ap.add_argument("--sizes", default="192x320,360x640",
                    help="model stage: frame sizes HxW (padded to a multiple of 32 as the authors do)")
    ap.add_argument("--frames", type=int, default=4, help="model stage: frames per clip (the model's T)")
    ap.add_argument("--model-tol", type=float, default=1e-4, help="model stage: max relative error")
    ap.add_argument("--criterion-tol", type=float, default=1e-5, help="criterion stage: max loss difference")
    ap.add_argument("--criterion-cases", nargs="*", default=None, help="criterion stage: a subset of its cases")
    add_threads_arg(ap, help="torch CPU threads")
    add_report_arg(ap, help="write the full report as JSON to this file")
    args = ap.parse_args(argv)
    args.presets, args.sizes = _csv(args.presets), _csv(args.sizes)
    stages = _csv(args.stages)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        return error(f"unknown stage(s) {unknown}; known: {sorted(STAGES)}")
    from tools.parity.authors_env import load_authors
    import torch
    if args.threads:
        torch.set_num_threads(args.threads)
    authors = load_authors(args.authors_repo)      # AuthorsEnvError: one line, exit 2
    report = {"authors_repo": args.authors_repo, "torch": torch.__version__, "stages": {}}
    ok = True
    for name in stages:
        try:
            mod = importlib.import_module(STAGES[name])
        except ModuleNotFoundError as err:
            return error(f"stage {name!r} is not available here ({err})")
        t0 = time.time()
        res = mod.run(authors, args)
        res["seconds"] = round(time.time() - t0, 1)
        report["stages"][name] = res
        ok = ok and bool(res.get("ok"))
        print(f"[{name}] {'ok' if res.get('ok') else 'FAILED'} ({res['seconds']} s)", flush=True)
        if hasattr(mod, "table"):
            print(mod.table(res), flush=True)
    report["ok"] = ok
    if args.report:
        from runtime.atomic import write_json
        write_json(args.report, report, indent=1)
    return 0 if ok else EXIT_VERIFY


if __name__ == "__main__":
    sys.exit(main())
