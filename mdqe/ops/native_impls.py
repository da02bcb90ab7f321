"""Native MSDeformAttn kernels for `mdqe.ops.ms_deform_attn` (inference only).

"cpu":  the C++ kernel libmdqe_msda.so through the torch-free binding `runtime.native.msda`
        (built by `pip install`). `impl="auto"` picks it for CPU float32 tensors when no
        gradient is needed.
"cuda": the CUDA kernel (trt_plugins/src/msda_cuda.cu + trt_plugins/torch_ext), built by an
        explicit step, never as a side effect of a call:
            python -m mdqe.ops.native_impls build-cuda [--build-dir DIR] [--arch 9.0]
        (or `build_cuda_extension()`); needs a CUDA build of torch, nvcc and a source checkout.
        Calls only load the built library (`load_cuda_extension()`, from `cuda_ext_dir()`).
        `impl="auto"` picks it for CUDA float32/float16 tensors when no gradient is needed and
        the library is built; otherwise it warns once and falls back to "torch".
        Hot path without host synchronisation: no value of a CUDA tensor is read; CPU-resident
        spatial_shapes / level_start_index are checked on the host and uploaded once per distinct
        content (cached), so a call is also safe inside CUDA-graph capture after one warm-up call.
        fp16 inputs are accumulated in fp32 by the kernel (msda_core.h); under autocast the
        kernel runs in value's dtype (fp16 value -> fp16 kernel with fp32 accumulation).
Both raise a clear error when forced (impl="cpu"/"cuda") on inputs they cannot serve.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import re
import sys
import threading
import time
import warnings
from pathlib import Path

import torch

from .ms_deform_attn import check_level_start_index, register_impl

_REPO = Path(__file__).resolve().parents[2]
_CUDA_SOURCES = [_REPO / "trt_plugins" / "torch_ext" / "msda_torch_cuda.cpp", _REPO / "trt_plugins" / "src" / "msda_cuda.cu"]
_CUDA_INCLUDE = _REPO / "trt_plugins" / "include"


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _tracing() -> bool:
    compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)
    return torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or compiling()


def _check_inference(impl, value, sampling_locations, attention_weights):
    if _needs_grad(value, sampling_locations, attention_weights):
        raise RuntimeError(f"MSDeformAttn impl={impl!r} is inference-only, but an input requires grad; "
                           "use impl='torch' (differentiable) or run under torch.no_grad()/torch.inference_mode()")


# ----------------------------------------------------------------------------- "cpu"
def _cpu_binding():
    try:
        from runtime.native import msda
    except ImportError as exc:  # the runtime package is not importable (not installed)
        raise RuntimeError(f"MSDeformAttn impl='cpu' needs the package runtime.native ({exc})") from exc
    return msda


def ms_deform_attn_cpu(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """The C++ CPU kernel; float32 math, returns value.dtype."""
    _check_inference("cpu", value, sampling_locations, attention_weights)
    for name, t in (("value", value), ("sampling_locations", sampling_locations),
                    ("attention_weights", attention_weights)):
        if t.device.type != "cpu":
            raise ValueError(f"MSDeformAttn impl='cpu' needs CPU tensors, but {name} is on {t.device}")
    msda = _cpu_binding()
    if not msda.is_available():
        msda.library_path()  # raises RuntimeError naming the paths tried
    out = msda.ms_deform_attn_cpu(
        value.detach().to(torch.float32).contiguous().numpy(),
        spatial_shapes.detach().cpu().to(torch.int64).contiguous().numpy(),
        level_start_index.detach().cpu().to(torch.int64).contiguous().numpy(),
        sampling_locations.detach().to(torch.float32).contiguous().numpy(),
        attention_weights.detach().to(torch.float32).contiguous().numpy(),
        num_threads=torch.get_num_threads())
    return torch.from_numpy(out).to(value.dtype)


def _cpu_available() -> bool:
    try:
        return _cpu_binding().is_available()
    except RuntimeError:
        return False


def _choose_cpu(value, sampling_locations, attention_weights) -> bool:
    return (_native_auto and value.device.type == "cpu" and value.dtype == torch.float32 and not _tracing()
            and not _needs_grad(value, sampling_locations, attention_weights) and _cpu_available())


# ----------------------------------------------------------------------------- "cuda"
CUDA_EXT_NAME = "mdqe_msda_cuda_ext"
_cuda_lock = threading.Lock()
_cuda_ext = None
_cuda_error = None
_native_auto = True
_index_cache: dict = {}
_INDEX_CACHE_MAX = 64


def cuda_ext_dir(build_dir=None) -> Path:
    """Where the extension is built and loaded from: `build_dir`, else env MDQE_CUDA_EXT_DIR, else
    ~/.cache/mdqe/torch_ext/<torch version>-py<X.Y> (one build per torch and Python)."""
    if build_dir:
        return Path(build_dir)
    env = os.environ.get("MDQE_CUDA_EXT_DIR")
    if env:
        return Path(env)
    tag = re.sub(r"[^A-Za-z0-9.]+", "_", f"torch{torch.__version__}-py{sys.version_info[0]}.{sys.version_info[1]}")
    return Path.home() / ".cache" / "mdqe" / "torch_ext" / tag


def _cuda_home():
    """CUDA toolkit root (holding bin/nvcc and include/cuda_runtime_api.h) for torch.utils.cpp_extension:
    its own guess, else CUDA_HOME / CUDA_PATH, the folder above nvcc on PATH, /usr/local/cuda (torch's
    guess is None on CPU builds even when nvcc is installed)."""
    import shutil
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
    """Build the CUDA extension (torch.utils.cpp_extension + ninja) into `cuda_ext_dir(build_dir)` for
    `arch` (TORCH_CUDA_ARCH_LIST syntax, default: the visible GPU's) and load it.

    Returns the library path, or with `compile_only` the directory holding the two compiled objects:
    on a machine whose torch has no CUDA libraries the link step cannot run, so `compile_only` accepts a
    failed link once both objects are compiled (a compile check without a GPU). Raises RuntimeError."""
    global _cuda_ext, _cuda_error
    from torch.utils import cpp_extension
    missing = [str(p) for p in _CUDA_SOURCES if not p.is_file()]
    if missing:
        raise RuntimeError(f"CUDA kernel sources missing ({missing}); the cuda impl builds from a source checkout")
    home = _cuda_home()
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
            name=CUDA_EXT_NAME, sources=[str(p) for p in _CUDA_SOURCES], extra_include_paths=[str(_CUDA_INCLUDE)],
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
    with _cuda_lock:
        _cuda_ext, _cuda_error = mod, None
    return out / f"{CUDA_EXT_NAME}.so"


def load_cuda_extension(build_dir=None):
    """Load the built extension (no build). Returns the module, or None with the reason kept for errors."""
    global _cuda_ext, _cuda_error
    with _cuda_lock:
        if _cuda_ext is not None:
            return _cuda_ext
        lib = cuda_ext_dir(build_dir) / f"{CUDA_EXT_NAME}.so"
        try:
            if not torch.cuda.is_available():
                raise RuntimeError("torch reports no usable CUDA GPU (torch.cuda.is_available() is False; "
                                   f"torch {torch.__version__}, CUDA build: {torch.version.cuda})")
            if not lib.is_file():
                raise RuntimeError(f"the extension is not built ({lib} missing); build it with "
                                   "`python -m mdqe.ops.native_impls build-cuda`")
            stale = [p.name for p in _CUDA_SOURCES + [_CUDA_INCLUDE / "mdqe_msda" / "msda_core.h"]
                     if p.is_file() and p.stat().st_mtime > lib.stat().st_mtime]
            if stale:
                raise RuntimeError(f"{lib} is older than {stale}: rebuild with `python -m mdqe.ops.native_impls build-cuda`")
            spec = importlib.util.spec_from_file_location(CUDA_EXT_NAME, str(lib))
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            _cuda_ext, _cuda_error = mod, None
        except Exception as exc:  # noqa: BLE001 - reported to the caller with its cause
            _cuda_error = f"MSDeformAttn impl='cuda' is unavailable: {exc}"
        return _cuda_ext


def _reset_cuda_state():
    """Forget the loaded extension and errors (tests)."""
    global _cuda_ext, _cuda_error, _cuda_warned
    with _cuda_lock:
        _cuda_ext, _cuda_error, _cuda_warned = None, None, False
    _index_cache.clear()


@contextlib.contextmanager
def native_auto(enabled: bool):
    """Within the block, impl="auto" may (True) or may not (False) pick a native kernel ("cpu" / "cuda");
    False runs the grid_sample form (the baseline of benchmarks/gpu_suite.py). Process-wide."""
    global _native_auto
    old, _native_auto = _native_auto, bool(enabled)
    try:
        yield
    finally:
        _native_auto = old


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _device_index(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """An index tensor (spatial_shapes / level_start_index) usable by the kernel on `device` without a
    host synchronisation: a tensor already on the GPU is passed through (the extension casts it to int32
    on the device); a CPU tensor is uploaded once per distinct content and device, then cached."""
    if t.device.type != "cpu":
        return t
    key = (tuple(t.shape), tuple(t.reshape(-1).tolist()), str(device))
    hit = _index_cache.get(key)
    if hit is None:
        if _capturing():
            raise RuntimeError(f"MSDeformAttn cuda: index tensor {key[1]} first seen during CUDA-graph capture; "
                               "run the function once eagerly before capturing it")
        if len(_index_cache) >= _INDEX_CACHE_MAX:
            _index_cache.clear()
        hit = t.to(torch.int32).to(device)
        _index_cache[key] = hit
    return hit


def _on_gpu(t: torch.Tensor) -> bool:
    return t.is_cuda


def _stream_handle(device) -> int:
    return torch.cuda.current_stream(device).cuda_stream


def ms_deform_attn_cuda(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """The CUDA kernel; float32 or float16 (fp32 accumulation). Reads no CUDA tensor's values."""
    _check_inference("cuda", value, sampling_locations, attention_weights)
    if not _on_gpu(value):
        raise ValueError(f"MSDeformAttn impl='cuda' needs CUDA tensors, value is on {value.device}")
    if value.dtype not in (torch.float32, torch.float16):
        raise ValueError(f"MSDeformAttn impl='cuda' supports float32 and float16, got {value.dtype}")
    check_level_start_index(spatial_shapes, level_start_index)   # CPU index tensors only: no device read
    ext = _cuda_ext if _cuda_ext is not None else load_cuda_extension()
    if ext is None:
        raise RuntimeError(_cuda_error)
    shapes = _device_index(spatial_shapes, value.device)
    starts = _device_index(level_start_index, value.device)
    return ext.forward(value, shapes, starts, sampling_locations.to(value.dtype),
                       attention_weights.to(value.dtype), _stream_handle(value.device))


_cuda_warned = False


def _choose_cuda(value, sampling_locations, attention_weights) -> bool:
    global _cuda_warned
    if not (_native_auto and _on_gpu(value) and value.dtype in (torch.float32, torch.float16) and not _tracing()
            and not _needs_grad(value, sampling_locations, attention_weights)):
        return False
    if _cuda_ext is None and load_cuda_extension() is None:
        if not _cuda_warned:
            _cuda_warned = True
            warnings.warn(f"{_cuda_error}; falling back to impl='torch'", RuntimeWarning, stacklevel=3)
        return False
    return True


register_impl("cpu", ms_deform_attn_cpu, _choose_cpu)
register_impl("cuda", ms_deform_attn_cuda, _choose_cuda)


def main(argv=None) -> int:
    """CLI: `python -m mdqe.ops.native_impls build-cuda [--build-dir DIR] [--arch 9.0] [--compile-only]`."""
    ap = argparse.ArgumentParser(prog="python -m mdqe.ops.native_impls",
                                 description="Build the native MSDeformAttn kernels' torch bindings.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build-cuda", help="build the CUDA extension (torch.utils.cpp_extension, ninja, nvcc)")
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
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"built {path} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
