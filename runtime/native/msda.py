"""Torch-free ctypes binding of the MSDeformAttn CPU kernel (libmdqe_msda.so).

    ms_deform_attn_cpu(value [N,S,M,D], spatial_shapes [L,2], level_start_index [L],
                       sampling_locations [N,Lq,M,L,P,2], attention_weights [N,Lq,M,L,P],
                       num_threads=0) -> np.ndarray [N,Lq,M*D] float32

Inputs are converted to C-contiguous float32 / int64 (no copy when they already are).
num_threads=0 uses every CPU the process may run on. The library is looked up in this order:
env MDQE_MSDA_LIB (a file), this directory (placed there by `pip install`), <repo>/build/.
"""
from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

import numpy as np

from ..contract import CPU_KERNEL_ABI_VERSION, CPU_KERNEL_LIBRARY
_lock = threading.Lock()
_lib = None
_lib_path = None
_load_error = None


def _candidates():
    env = os.environ.get("MDQE_MSDA_LIB")
    if env:
        return [Path(env)]
    here = Path(__file__).resolve().parent
    repo = here.parent.parent
    return [here / CPU_KERNEL_LIBRARY, repo / "build" / CPU_KERNEL_LIBRARY]


def _load():
    global _lib, _lib_path, _load_error
    with _lock:
        if _lib is not None or _load_error is not None:
            return _lib
        tried = []
        for path in _candidates():
            if not path.is_file():
                tried.append(f"{path} (missing)")
                continue
            try:
                lib = ctypes.CDLL(str(path))
            except OSError as exc:
                tried.append(f"{path} ({exc})")
                continue
            lib.mdqe_msda_abi_version.restype = ctypes.c_int
            if lib.mdqe_msda_abi_version() != CPU_KERNEL_ABI_VERSION:
                tried.append(f"{path} (ABI version {lib.mdqe_msda_abi_version()}, need {CPU_KERNEL_ABI_VERSION}: rebuild it)")
                continue
            p_f = ctypes.POINTER(ctypes.c_float)
            p_i = ctypes.POINTER(ctypes.c_int64)
            i64 = ctypes.c_int64
            lib.mdqe_msda_cpu_forward.restype = ctypes.c_int
            lib.mdqe_msda_cpu_forward.argtypes = [p_f, p_i, p_i, p_f, p_f, i64, i64, i64, i64, i64, i64, i64,
                                                  p_f, ctypes.c_int32]
            lib.mdqe_msda_last_error.restype = ctypes.c_char_p
            lib.mdqe_msda_last_error.argtypes = []
            lib.mdqe_msda_status_name.restype = ctypes.c_char_p
            lib.mdqe_msda_status_name.argtypes = [ctypes.c_int]
            lib.mdqe_msda_default_threads.restype = ctypes.c_int32
            _lib, _lib_path = lib, str(path)
            return _lib
        _load_error = ("the MSDeformAttn CPU library " + CPU_KERNEL_LIBRARY + " was not found or could not be loaded; tried: "
                       + "; ".join(tried) + ". Build it with `pip install -e .` (or `cmake -S . -B build && "
                       "cmake --build build --target mdqe_msda`), or point MDQE_MSDA_LIB at the file.")
        return None


def is_available() -> bool:
    """True when libmdqe_msda.so can be loaded."""
    return _load() is not None


def library_path() -> str:
    """Path of the loaded library; raises RuntimeError (with the paths tried) if there is none."""
    if _load() is None:
        raise RuntimeError(_load_error)
    return _lib_path


def default_threads() -> int:
    """Threads that num_threads=0 resolves to (CPUs this process may run on)."""
    if _load() is None:
        raise RuntimeError(_load_error)
    return int(_lib.mdqe_msda_default_threads())


def _as_float(name, a):
    a = np.asarray(a)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"{name} must be a real-valued array, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _as_index(name, a):
    a = np.asarray(a)
    if not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {a.dtype}")
    return np.ascontiguousarray(a, dtype=np.int64)


def _check_shapes(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    if value.ndim != 4:
        raise ValueError(f"value must be [N,S,M,D], got shape {value.shape}")
    N, S, M, D = value.shape
    if spatial_shapes.ndim != 2 or spatial_shapes.shape[1] != 2:
        raise ValueError(f"spatial_shapes must be [L,2], got shape {spatial_shapes.shape}")
    L = spatial_shapes.shape[0]
    if level_start_index.shape != (L,):
        raise ValueError(f"level_start_index must be [L={L}], got shape {level_start_index.shape}")
    loc = sampling_locations.shape
    if len(loc) != 6 or loc[0] != N or loc[2] != M or loc[3] != L or loc[5] != 2:
        raise ValueError(f"sampling_locations must be [N={N},Lq,M={M},L={L},P,2], got shape {loc}")
    if attention_weights.shape != loc[:5]:
        raise ValueError(f"attention_weights must have shape {loc[:5]} (sampling_locations without the last "
                         f"axis), got {attention_weights.shape}")
    return N, S, M, D, L, loc[1], loc[4]


def ms_deform_attn_cpu(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                       num_threads: int = 0) -> np.ndarray:
    """MSDeformAttn forward on the CPU; returns float32 [N, Lq, M*D]. Raises ValueError for
    inconsistent arguments and RuntimeError when the library is missing."""
    lib = _load()
    if lib is None:
        raise RuntimeError(_load_error)
    value = _as_float("value", value)
    sampling_locations = _as_float("sampling_locations", sampling_locations)
    attention_weights = _as_float("attention_weights", attention_weights)
    spatial_shapes = _as_index("spatial_shapes", spatial_shapes)
    level_start_index = _as_index("level_start_index", level_start_index)
    N, S, M, D, L, Lq, P = _check_shapes(value, spatial_shapes, level_start_index, sampling_locations,
                                         attention_weights)
    if not isinstance(num_threads, (int, np.integer)) or num_threads < 0:
        raise ValueError(f"num_threads must be an int >= 0 (0 = all CPUs), got {num_threads!r}")
    out = np.empty((N, Lq, M * D), dtype=np.float32)

    def ptr(a, ctype):
        return a.ctypes.data_as(ctypes.POINTER(ctype))

    status = lib.mdqe_msda_cpu_forward(
        ptr(value, ctypes.c_float), ptr(spatial_shapes, ctypes.c_int64), ptr(level_start_index, ctypes.c_int64),
        ptr(sampling_locations, ctypes.c_float), ptr(attention_weights, ctypes.c_float),
        N, S, M, D, L, Lq, P, ptr(out, ctypes.c_float), int(min(num_threads, 2**31 - 1)))
    if status != 0:
        name = lib.mdqe_msda_status_name(status).decode()
        detail = lib.mdqe_msda_last_error().decode()
        raise ValueError(f"MSDeformAttn CPU kernel rejected its arguments ({name}): {detail}")
    return out


def load_library():
    """The loaded ctypes library (also holding the post-processing kernels of
    runtime/native/postprocess.py), or None when it cannot be loaded."""
    return _load()
