"""MSDeformAttn: the C++ CPU kernel (libmdqe_msda.so) vs the PyTorch grid_sample form, at the
shapes of MDQE R50 at 360p (input 360x640 padded to 384x640; levels 48x80, 24x40, 12x20, 6x10,
S=5100; M=8 heads, D=32, P=4 points).

    python -m benchmarks.msda_op [--repeats 10] [--threads 0] [--report benchmarks/results/x.json]
    python -m benchmarks.msda_op --device cuda   # GPU: impl="cuda" vs grid_sample, fp32 and fp16, both
                                                 # against the fp64 grid_sample form; writes
                                                 # benchmarks/results/msda_op_cuda_<gpu>.json
    python -m benchmarks.msda_op --kernel-vs-grid-sample --tiny   # the same code path on the CPU

Cases: encoder self-attention (N=1, Lq=S, L=4); decoder cross-attention (196 queries, T=4
frames as N=4, L=4); TCA (T=4 frames of one level as its 4 levels, Lq=196, N=1), per level.
Sampling locations are uniform in [-0.05, 1.05] (some fall outside the maps). Both forms run in
this process, alternately; printed are median times, their ratio and the max abs difference.
"""
from __future__ import annotations

import os
import platform
import re
import statistics
import sys
import time

import numpy as np
import torch

from mdqe.ops import ms_deform_attn, ms_deform_attn_torch
from runtime.atomic import write_json
from runtime.cli import add_device_arg, add_report_arg, add_seed_arg, add_threads_arg, cli_main, make_parser
from runtime.errors import BackendUnavailableError
from runtime.native import msda

LEVELS = [(48, 80), (24, 40), (12, 20), (6, 10)]
M, D, P, T, QUERIES = 8, 32, 4, 4, 196


def make_case(rng, N, Lq, shapes):
    shapes = np.asarray(shapes, dtype=np.int64)
    areas = shapes[:, 0] * shapes[:, 1]
    starts = np.concatenate([[0], np.cumsum(areas)[:-1]]).astype(np.int64)
    S, L = int(areas.sum()), len(shapes)
    value = rng.standard_normal((N, S, M, D), dtype=np.float32)
    loc = rng.uniform(-0.05, 1.05, (N, Lq, M, L, P, 2)).astype(np.float32)
    attn = rng.random((N, Lq, M, L, P), dtype=np.float32)
    attn /= attn.sum(axis=(-1, -2), keepdims=True)  # softmax-like: sums to 1 over levels x points
    return value, shapes, starts, loc, attn


def cases():
    yield "encoder self-attn (N=1, Lq=5100, L=4)", 1, sum(h * w for h, w in LEVELS), LEVELS
    yield "decoder cross-attn (N=4, Lq=196, L=4)", T, QUERIES, LEVELS
    for h, w in LEVELS:
        yield f"TCA level {h}x{w} (N=1, Lq=196, L=T=4)", 1, QUERIES, [(h, w)] * T


def bench(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def run_cpu(args, rng):
    kernel_threads = args.threads or msda.default_threads()
    print(f"MSDeformAttn CPU kernel vs grid_sample | {platform.machine()}, {os.cpu_count()} CPUs visible, "
          f"kernel threads {kernel_threads}, torch {torch.__version__} threads {torch.get_num_threads()} | "
          f"median of {args.repeats}")
    print(f"library: {msda.library_path()}")
    header = f"{'case':44s} {'grid_sample ms':>14s} {'kernel ms':>10s} {'speed-up':>9s} {'max abs err':>12s}"
    print(header)
    print("-" * len(header))
    results = []
    with torch.inference_mode():
        for name, N, Lq, shapes in cases():
            arrays = make_case(rng, N, Lq, shapes)
            tensors = [torch.from_numpy(a) for a in arrays]
            ref = ms_deform_attn_torch(*tensors).numpy()
            out = msda.ms_deform_attn_cpu(*arrays, num_threads=args.threads)
            err = float(np.abs(out - ref).max())
            # Alternate the two so that load changes on a shared machine hit both alike.
            t_torch, t_kernel = [], []
            for _ in range(args.repeats):
                t_torch += bench(lambda: ms_deform_attn_torch(*tensors), 1)
                t_kernel += bench(lambda: msda.ms_deform_attn_cpu(*arrays, num_threads=args.threads), 1)
            mt, mk = statistics.median(t_torch) * 1e3, statistics.median(t_kernel) * 1e3
            print(f"{name:44s} {mt:14.2f} {mk:10.2f} {mt / mk:8.1f}x {err:12.2e}")
            results.append({"case": name, "grid_sample_ms": mt, "kernel_ms": mk, "speedup": mt / mk,
                            "max_abs_err": err})
    return {"device": "cpu", "machine": platform.machine(), "cpus": os.cpu_count(),
            "kernel_threads": kernel_threads, "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "repeats": args.repeats, "results": results}


TINY_LEVELS = [(12, 20), (6, 10), (3, 5), (2, 3)]


def device_cases(tiny: bool):
    """cases() at the R50 360p shapes, or the same structure at small shapes (CPU dry run)."""
    if not tiny:
        yield from cases()
        return
    yield "encoder self-attn (tiny, L=4)", 1, sum(h * w for h, w in TINY_LEVELS), TINY_LEVELS
    yield "decoder cross-attn (tiny, N=4, Lq=16)", T, 16, TINY_LEVELS
    yield "TCA level 12x20 (tiny, Lq=16, L=T=4)", 1, 16, [TINY_LEVELS[0]] * T


def median_ms(fn, repeats, device):
    """Median wall time of fn() in ms: CUDA events around each call on a GPU, perf_counter on the CPU."""
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _finite_or_none(x: float):
    """A max error, or None when the output held NaN/inf (JSON has no NaN)."""
    return x if x == x and abs(x) != float("inf") else None


def _fmt(x) -> str:
    return "non-finite" if x is None else f"{x:.2e}"


def run_device(args, rng, device="cuda", tiny=False):
    """Our kernel (impl "cuda" on a GPU, "cpu" in a CPU dry run) vs the grid_sample form, fp32 and fp16
    (value, locations and weights in that dtype), each against the float64 grid_sample form on the same
    device. Times: medians of `args.repeats`, the forms alternating case by case."""
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError("--device cuda needs a CUDA build of torch and a GPU "
                                      "(torch.cuda.is_available() is False)")
    kernel = "cuda" if device == "cuda" else "cpu"
    from benchmarks.gpu_env import environment
    env = environment(device)
    print(f"MSDeformAttn {kernel} kernel vs grid_sample | {env['device']}, torch {env['torch']}, CUDA {env['cuda']}, "
          f"driver {env['driver']} | median of {args.repeats}")
    header = (f"{'case':44s} {'dtype':>5s} {'grid_sample ms':>14s} {'kernel ms':>10s} {'speed-up':>9s} "
              f"{'gs err':>9s} {'kernel err':>10s}")
    print(header)
    print("-" * len(header))
    results = []
    dtypes = [("fp32", torch.float32), ("fp16", torch.float16)]
    with torch.inference_mode():
        for name, N, Lq, shapes in device_cases(tiny):
            arrays = make_case(rng, N, Lq, shapes)
            t64 = [torch.from_numpy(a).to(device) for a in arrays]
            t64 = [t.double() if t.is_floating_point() else t for t in t64]
            ref = ms_deform_attn_torch(*t64)
            scale = ref.abs().max().item()
            for tag, dt in dtypes:
                t = [x.to(dt) if x.is_floating_point() else x for x in t64]
                if device == "cpu" and dt == torch.float16:
                    # the CPU kernel computes in fp32; grid_sample has no fp16 CPU kernel in every torch
                    t = [x.to(torch.bfloat16) if x.is_floating_point() else x for x in t64]
                    tag = "bf16"
                gs = lambda: ms_deform_attn_torch(*t)  # noqa: E731
                kn = lambda: ms_deform_attn(*t, impl=kernel)  # noqa: E731
                err_gs = _finite_or_none((gs().double() - ref).abs().max().item())
                err_k = _finite_or_none((kn().double() - ref).abs().max().item())
                mg = median_ms(gs, args.repeats, device)
                mk = median_ms(kn, args.repeats, device)
                print(f"{name:44s} {tag:>5s} {mg:14.3f} {mk:10.3f} {mg / mk:8.1f}x {_fmt(err_gs):>9s} {_fmt(err_k):>10s}")
                results.append({"case": name, "dtype": tag, "grid_sample_ms": mg, "kernel_ms": mk,
                                "speedup": mg / mk, "grid_sample_max_abs_err": err_gs, "kernel_max_abs_err": err_k,
                                "ref_max_abs": scale,
                                "kernel_rel_err": None if err_k is None else (err_k / scale if scale else 0.0)})
    return {"device": device, "kernel_impl": kernel, "environment": env, "repeats": args.repeats,
            "shapes": "tiny (dry run)" if tiny else "R50 360p (384x640 padded: 48x80, 24x40, 12x20, 6x10)",
            "reference": "grid_sample form in float64 on the same device", "results": results}


def run_cuda(args, rng):
    return run_device(args, rng, "cuda", tiny=getattr(args, "tiny", False))


def build_parser():
    ap = make_parser("python -m benchmarks.msda_op", __doc__.split("\n\n")[0])
    add_device_arg(ap, help="cpu: our CPU kernel vs grid_sample; cuda: our CUDA kernel vs grid_sample")
    ap.add_argument("--repeats", type=int, default=10)
    add_threads_arg(ap, help="CPU kernel threads (0 = all CPUs of the process)")
    add_seed_arg(ap)
    ap.add_argument("--tiny", action="store_true", help="small shapes (dry run of the --device cuda code path)")
    ap.add_argument("--kernel-vs-grid-sample", action="store_true",
                    help="with --device cpu: the --device cuda comparison (fp32 + bf16, fp64 reference) on the CPU")
    add_report_arg(ap, help="also write the results to this JSON file (cuda: default msda_op_cuda_<gpu>.json in "
                            "the current folder)")
    return ap


@cli_main
def main(argv=None) -> int:
    """Prints the study as it goes; ``--report`` also writes it as JSON."""
    args = build_parser().parse_args(argv)
    rng = np.random.default_rng(args.seed)
    if args.device.startswith("cuda"):
        if ":" in args.device and torch.cuda.is_available():
            torch.cuda.set_device(int(args.device.split(":", 1)[1]))
        report = run_cuda(args, rng)
    elif args.kernel_vs_grid_sample:
        report = run_device(args, rng, "cpu", tiny=args.tiny)
    else:
        report = run_cpu(args, rng)
    path = args.report
    if path is None and args.device.startswith("cuda"):
        slug = re.sub(r"[^A-Za-z0-9]+", "_", report["environment"]["device"]).strip("_").lower()
        path = f"msda_op_cuda_{slug}.json"
    if path:
        write_json(path, report, indent=2)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
