"""MSDeformAttn: the C++ CPU kernel (libmdqe_msda.so) vs the PyTorch grid_sample form, at the
shapes of MDQE R50 at 360p (input 360x640 padded to 384x640; levels 48x80, 24x40, 12x20, 6x10,
S=5100; M=8 heads, D=32, P=4 points).

    python -m benchmarks.msda_op [--repeats 10] [--threads 0] [--json benchmarks/results/x.json]
    python -m benchmarks.msda_op --device cuda   # GPU: impl="cuda" fp32/fp16 vs grid_sample;
                                                 # writes benchmarks/results/msda_op_cuda_<gpu>.json

Cases: encoder self-attention (N=1, Lq=S, L=4); decoder cross-attention (196 queries, T=4
frames as N=4, L=4); TCA (T=4 frames of one level as its 4 levels, Lq=196, N=1), per level.
Sampling locations are uniform in [-0.05, 1.05] (some fall outside the maps). Both forms run in
this process, alternately; printed are median times, their ratio and the max abs difference.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from mdqe.ops import ms_deform_attn, ms_deform_attn_torch
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


def cuda_median_ms(fn, repeats):
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def run_cuda(args, rng):
    if not torch.cuda.is_available():
        raise SystemExit("--device cuda needs a CUDA build of torch and a GPU (torch.cuda.is_available() is False)")
    gpu = torch.cuda.get_device_name()
    print(f"MSDeformAttn CUDA kernel vs grid_sample | {gpu}, torch {torch.__version__} | median of {args.repeats}")
    header = (f"{'case':44s} {'grid_sample ms':>14s} {'fp32 ms':>8s} {'x':>6s} {'fp16 ms':>8s} {'x':>6s} "
              f"{'fp32 abs err':>12s} {'fp16 rel err':>12s}")
    print(header)
    print("-" * len(header))
    results = []
    with torch.inference_mode():
        for name, N, Lq, shapes in cases():
            t32 = [torch.from_numpy(a).cuda() for a in make_case(rng, N, Lq, shapes)]
            t16 = [t.half() if t.is_floating_point() else t for t in t32]
            ref = ms_deform_attn_torch(*t32)
            err32 = (ms_deform_attn(*t32, impl="cuda") - ref).abs().max().item()
            err16 = ((ms_deform_attn(*t16, impl="cuda").float() - ref).abs().max() / ref.abs().max()).item()
            mt = cuda_median_ms(lambda: ms_deform_attn_torch(*t32), args.repeats)
            m32 = cuda_median_ms(lambda: ms_deform_attn(*t32, impl="cuda"), args.repeats)
            m16 = cuda_median_ms(lambda: ms_deform_attn(*t16, impl="cuda"), args.repeats)
            print(f"{name:44s} {mt:14.3f} {m32:8.3f} {mt / m32:5.1f}x {m16:8.3f} {mt / m16:5.1f}x "
                  f"{err32:12.2e} {err16:12.2e}")
            results.append({"case": name, "grid_sample_ms": mt, "cuda_fp32_ms": m32, "cuda_fp16_ms": m16,
                            "fp32_max_abs_err": err32, "fp16_max_rel_err": err16})
    return {"device": "cuda", "gpu": gpu, "torch": torch.__version__, "repeats": args.repeats, "results": results}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="CPU kernel threads (0 = all CPUs of the process)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the results to this JSON file (cuda: default "
                                   "benchmarks/results/msda_op_cuda_<gpu>.json)")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    report = run_cpu(args, rng) if args.device == "cpu" else run_cuda(args, rng)
    path = args.json
    if path is None and args.device == "cuda":
        slug = re.sub(r"[^A-Za-z0-9]+", "_", report["gpu"]).strip("_").lower()
        path = str(Path(__file__).resolve().parent / "results" / f"msda_op_cuda_{slug}.json")
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as f:
            json.dump(report, f, indent=2)
        print(f"wrote {path}")
    return report


if __name__ == "__main__":
    main()
