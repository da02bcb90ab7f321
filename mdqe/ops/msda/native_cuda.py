"""impl="cuda": the CUDA kernel (trt_plugins/src/msda_cuda.cu through the torch extension
trt_plugins/torch_ext). Inference only; float32 or float16 (fp32 accumulation, msda_core.h).

The extension is built by an explicit step, never by a call:
    python -m mdqe.ops.msda.build cuda [--build-dir DIR] [--arch 9.0]
Calls only load the built library (`load_cuda_extension()`, from `cuda_ext_dir()`). `impl="auto"`
picks this kernel for CUDA float32/float16 tensors when no gradient is needed and the library is
built; otherwise it warns once and falls back to "torch". Forced (impl="cuda") without the library,
it raises RuntimeError naming the build command.

Hot path without host synchronisation: no value of a CUDA tensor is read; CPU-resident
spatial_shapes / level_start_index are checked on the host and uploaded once per distinct content
(cached), so a call is also safe inside CUDA-graph capture after one warm-up call. Under autocast
the kernel runs in value's dtype (fp16 value -> fp16 kernel with fp32 accumulation).
"""
from __future__ import annotations

import importlib.util
import os
import re
import sys
import threading
import warnings
from pathlib import Path

import torch

from ...tracing import exporting
from .checks import check_inference, check_level_start_index, needs_grad

BUILD_COMMAND = "python -m mdqe.ops.msda.build cuda"
CUDA_EXT_NAME = "mdqe_msda_cuda_ext"
_REPO = Path(__file__).resolve().parents[3]
CUDA_SOURCES = [_REPO / "trt_plugins" / "torch_ext" / "msda_torch_cuda.cpp", _REPO / "trt_plugins" / "src" / "msda_cuda.cu"]
CUDA_INCLUDE = _REPO / "trt_plugins" / "include"

_cuda_lock = threading.Lock()
_cuda_ext = None
_cuda_error = None
_cuda_warned = False
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


def adopt_extension(mod) -> None:
    """Use `mod` (the module the build step just compiled and loaded) for later calls."""
    global _cuda_ext, _cuda_error
    with _cuda_lock:
        _cuda_ext, _cuda_error = mod, None


def load_cuda_extension(build_dir=None):
    """Load the built extension (no build). Returns the module, or None with the reason kept for
    `unavailable_reason()`."""
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
                raise RuntimeError(f"the extension is not built ({lib} missing); build it with `{BUILD_COMMAND}`")
            stale = [p.name for p in CUDA_SOURCES + [CUDA_INCLUDE / "mdqe_msda" / "msda_core.h"]
                     if p.is_file() and p.stat().st_mtime > lib.stat().st_mtime]
            if stale:
                raise RuntimeError(f"{lib} is older than {stale}: rebuild with `{BUILD_COMMAND}`")
            spec = importlib.util.spec_from_file_location(CUDA_EXT_NAME, str(lib))
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            _cuda_ext, _cuda_error = mod, None
        except Exception as exc:  # noqa: BLE001 - reported to the caller with its cause
            _cuda_error = f"MSDeformAttn impl='cuda' is unavailable: {exc}"
        return _cuda_ext


def unavailable_reason():
    """Why the last `load_cuda_extension()` found no extension (None when it is loaded)."""
    return _cuda_error


def _reset_cuda_state():
    """Forget the loaded extension and errors (tests)."""
    global _cuda_ext, _cuda_error, _cuda_warned
    with _cuda_lock:
        _cuda_ext, _cuda_error, _cuda_warned = None, None, False
    _index_cache.clear()


def _capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def _device_index(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """An index tensor (spatial_shapes [L, 2] / level_start_index [L]) usable by the kernel on
    `device` without a host synchronisation: a tensor already on the GPU is passed through (the
    extension casts it to int32 on the device); a CPU tensor is uploaded once per distinct content
    and device, then cached."""
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
    """The CUDA kernel: CUDA tensors (shapes as in `mdqe.ops.msda`), float32 or float16 ->
    [N, Lq, M*D] of value.dtype. Reads no CUDA tensor's values."""
    check_inference("cuda", value, sampling_locations, attention_weights)
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


def auto_serves(value, sampling_locations, attention_weights) -> bool:
    """impl="auto" chooser: CUDA float32/float16 inference, not while exporting, extension built
    (else one RuntimeWarning naming the reason, and "torch")."""
    global _cuda_warned
    if not (_on_gpu(value) and value.dtype in (torch.float32, torch.float16) and not exporting()
            and not needs_grad(value, sampling_locations, attention_weights)):
        return False
    if _cuda_ext is None and load_cuda_extension() is None:
        if not _cuda_warned:
            _cuda_warned = True
            warnings.warn(f"{_cuda_error}; falling back to impl='torch'", RuntimeWarning, stacklevel=4)
        return False
    return True
