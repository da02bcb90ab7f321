"""Explicit build step of the native MSDeformAttn kernels' torch bindings.

    python -m mdqe.ops.msda.build cuda [--build-dir DIR] [--arch 9.0] [--compile-only] [--verbose]

builds the CUDA extension (torch.utils.cpp_extension + ninja + nvcc) into
`native_cuda.cuda_ext_dir(DIR)`, where impl="cuda" loads it from. Needs a CUDA build of torch, nvcc
and a source checkout. The CPU kernel needs no step here: `pip install` builds libmdqe_msda.so
(docs/native.md). Exit codes: 0 built, 2 cannot build (bad input or missing toolchain).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import torch

from runtime.cli import EPILOG, cli_main, error, make_parser

from . import native_cuda
from .native_cuda import CUDA_EXT_NAME, CUDA_INCLUDE, CUDA_SOURCES, cuda_ext_dir


def cuda_home():
    """CUDA toolkit root (holding bin/nvcc and include/cuda_runtime_api.h) for torch.utils.cpp_extension:
    its own guess, else CUDA_HOME / CUDA_PATH, the folder above nvcc on PATH, /usr/local/cuda (torch's
    guess is None on CPU builds even when nvcc is installed)."""
    from torch.utils import cpp_extension
    on_path = shutil.which("nvcc")
    from_path = str(Path(on_path).resolve().parents[1]) if on_path else None
    for cand in (cpp_extension.CUDA_HOME, os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), from_path,
                 "/usr/local/cuda"):
        if cand and (Path(cand) / "bin" / "nvcc").exists() and (Path(cand) / "include" / "cuda_runtime_api.h").exists():
            return str(cand)
    return None


def default_cuda_arch() -> str:
    """TORCH_CUDA_ARCH_LIST entry of the current GPU, e.g. '9.0' for an H100/H200."""
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU visible: pass the architecture explicitly (e.g. --arch 9.0)")
    major, minor = torch.cuda.get_device_capability()
    return f"{major}.{minor}"


def build_cuda_extension(build_dir=None, arch=None, verbose: bool = False, compile_only: bool = False) -> Path:
    """Build the CUDA extension into `cuda_ext_dir(build_dir)` for `arch` (TORCH_CUDA_ARCH_LIST syntax,
    default: the visible GPU's) and load it for impl="cuda".

    Returns the library path, or with `compile_only` the directory holding the two compiled objects:
    on a machine whose torch has no CUDA libraries the link step cannot run, so `compile_only` accepts a
    failed link once both objects are compiled (a compile check without a GPU). Raises RuntimeError."""
    from torch.utils import cpp_extension
    missing = [str(p) for p in CUDA_SOURCES if not p.is_file()]
    if missing:
        raise RuntimeError(f"CUDA kernel sources missing ({missing}); the cuda impl builds from a source checkout")
    home = cuda_home()
    if home is None:
        raise RuntimeError("nvcc / CUDA toolkit not found: install it or set CUDA_HOME")
    cpp_extension.CUDA_HOME = home
    arch = arch or default_cuda_arch()
    out = cuda_ext_dir(build_dir)
    out.mkdir(parents=True, exist_ok=True)
    old_arch = os.environ.get("TORCH_CUDA_ARCH_LIST")
    os.environ["TORCH_CUDA_ARCH_LIST"] = arch
    t0 = time.time()
    try:
        mod = cpp_extension.load(
            name=CUDA_EXT_NAME, sources=[str(p) for p in CUDA_SOURCES], extra_include_paths=[str(CUDA_INCLUDE)],
            extra_cflags=["-O3"], extra_cuda_cflags=["-O3", "-lineinfo"], build_directory=str(out),
            verbose=verbose)
    except Exception as exc:  # noqa: BLE001 - reported with its cause
        objects = [out / "msda_torch_cuda.o", out / "msda_cuda.cuda.o"]
        if compile_only and all(o.is_file() and o.stat().st_mtime >= t0 - 1 for o in objects):
            return out
        raise RuntimeError(f"building the CUDA extension in {out} failed: {exc}") from exc
    finally:
        if old_arch is None:
            os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
        else:
            os.environ["TORCH_CUDA_ARCH_LIST"] = old_arch
    native_cuda.adopt_extension(mod)
    return out / f"{CUDA_EXT_NAME}.so"


@cli_main
def main(argv=None) -> int:
    """CLI: `python -m mdqe.ops.msda.build cuda [--build-dir DIR] [--arch 9.0] [--compile-only] [--verbose]`."""
    ap = make_parser("python -m mdqe.ops.msda.build",
                     "Build the native MSDeformAttn kernels' torch bindings (exit 0 built, 2 cannot build).",
                     also=("mdqe-msda-build",))
    sub = ap.add_subparsers(dest="target", required=True)
    b = sub.add_parser("cuda", help="the CUDA extension of impl='cuda' (torch.utils.cpp_extension, ninja, nvcc)",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("--build-dir", default=None, help="default: env MDQE_CUDA_EXT_DIR or ~/.cache/mdqe/torch_ext/...")
    b.add_argument("--arch", default=None, help="TORCH_CUDA_ARCH_LIST, e.g. 9.0 (default: the visible GPU's)")
    b.add_argument("--compile-only", action="store_true",
                   help="accept a failed link once both objects compiled (check without a CUDA build of torch)")
    b.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        path = build_cuda_extension(args.build_dir, args.arch, args.verbose, args.compile_only)
    except RuntimeError as exc:
        return error(str(exc))
    print(f"built {path} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
