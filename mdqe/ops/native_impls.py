"""Native MSDeformAttn kernels for `mdqe.ops.ms_deform_attn` (inference only).

"cpu":  the C++ kernel libmdqe_msda.so through the torch-free binding `runtime.native.msda`
        (built by `pip install`). `impl="auto"` picks it for CPU float32 tensors when no
        gradient is needed.
"cuda": the CUDA kernel (trt_plugins/src/msda_cuda.cu), JIT-built with
        torch.utils.cpp_extension on first use; needs a CUDA build of torch, a GPU, nvcc and a
        source checkout. `impl="auto"` picks it for CUDA float32/float16 tensors when no
        gradient is needed and the build succeeds.
Both raise a clear error when forced (impl="cpu"/"cuda") on inputs they cannot serve.
"""
from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import torch

from .ms_deform_attn import register_impl

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


def _check_level_start(spatial_shapes, level_start_index):
    shapes = spatial_shapes.detach().cpu().to(torch.int64)
    starts = level_start_index.detach().cpu().to(torch.int64)
    expected = torch.cumsum(shapes[:, 0] * shapes[:, 1], 0) - shapes[:, 0] * shapes[:, 1]
    if not torch.equal(starts, expected):
        raise ValueError(f"level_start_index {starts.tolist()} disagrees with spatial_shapes "
                         f"{shapes.tolist()} (expected {expected.tolist()})")


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
    return (value.device.type == "cpu" and value.dtype == torch.float32 and not _tracing()
            and not _needs_grad(value, sampling_locations, attention_weights) and _cpu_available())


# ----------------------------------------------------------------------------- "cuda"
_cuda_lock = threading.Lock()
_cuda_ext = None
_cuda_error = None


def _load_cuda_ext():
    """Build (once, cached by torch in ~/.cache/torch_extensions) and load the CUDA extension."""
    global _cuda_ext, _cuda_error
    with _cuda_lock:
        if _cuda_ext is not None or _cuda_error is not None:
            return _cuda_ext
        try:
            if not torch.cuda.is_available():
                raise RuntimeError("torch reports no usable CUDA GPU (torch.cuda.is_available() is False; "
                                   f"torch {torch.__version__}, CUDA build: {torch.version.cuda})")
            from torch.utils import cpp_extension
            if cpp_extension.CUDA_HOME is None:
                raise RuntimeError("nvcc / CUDA_HOME not found; install the CUDA toolkit or set CUDA_HOME")
            missing = [str(p) for p in _CUDA_SOURCES if not p.is_file()]
            if missing:
                raise RuntimeError(f"CUDA kernel sources missing ({missing}); the cuda impl builds from a "
                                   "source checkout of the repository")
            _cuda_ext = cpp_extension.load(
                name="mdqe_msda_cuda_ext", sources=[str(p) for p in _CUDA_SOURCES],
                extra_include_paths=[str(_CUDA_INCLUDE)], extra_cflags=["-O3"],
                extra_cuda_cflags=["-O3"], verbose=bool(os.environ.get("MDQE_VERBOSE_BUILD")))
        except Exception as exc:  # noqa: BLE001 - reported to the caller with its cause
            _cuda_error = f"MSDeformAttn impl='cuda' is unavailable: {exc}"
        return _cuda_ext


def ms_deform_attn_cuda(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """The CUDA kernel; float32 or float16 (fp32 accumulation)."""
    _check_inference("cuda", value, sampling_locations, attention_weights)
    if not value.is_cuda:
        raise ValueError(f"MSDeformAttn impl='cuda' needs CUDA tensors, value is on {value.device}")
    if value.dtype not in (torch.float32, torch.float16):
        raise ValueError(f"MSDeformAttn impl='cuda' supports float32 and float16, got {value.dtype}")
    _check_level_start(spatial_shapes, level_start_index)
    ext = _load_cuda_ext()
    if ext is None:
        raise RuntimeError(_cuda_error)
    stream = torch.cuda.current_stream(value.device).cuda_stream
    return ext.forward(value, spatial_shapes, level_start_index, sampling_locations.to(value.dtype),
                       attention_weights.to(value.dtype), stream)


_cuda_warned = False


def _choose_cuda(value, sampling_locations, attention_weights) -> bool:
    global _cuda_warned
    if not (value.is_cuda and value.dtype in (torch.float32, torch.float16) and not _tracing()
            and not _needs_grad(value, sampling_locations, attention_weights)):
        return False
    if _load_cuda_ext() is None:
        if not _cuda_warned:
            _cuda_warned = True
            warnings.warn(f"{_cuda_error}; falling back to impl='torch'", RuntimeWarning, stacklevel=3)
        return False
    return True


register_impl("cpu", ms_deform_attn_cpu, _choose_cpu)
register_impl("cuda", ms_deform_attn_cuda, _choose_cuda)
