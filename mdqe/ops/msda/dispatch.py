"""The registry of MSDeformAttn implementations and the dispatcher `ms_deform_attn`.

An implementation is a function (value, spatial_shapes, level_start_index, sampling_locations,
attention_weights) -> [N, Lq, M*D] registered under a name (`register_impl`). The built-in ones are
registered by `mdqe.ops.msda` itself: "torch", "cpu", "cuda" and the four export forms "onnx",
"gridsample", "plugin", "trt-builtin". `impl="auto"` asks the auto choosers in registration order
(native kernels: "cpu", then "cuda") and falls back to "torch"; `native_auto(False)` keeps it on
"torch". An explicit `impl` is always obeyed: nothing else (no export-time state) overrides it.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Dict, List, Tuple, Union

from .checks import check_shapes

Impl = Callable  # (value, spatial_shapes, level_start_index, sampling_locations, attention_weights) -> output

_IMPLS: Dict[str, Impl] = {}
_AUTO_CHOOSERS: List[Tuple[str, Callable]] = []  # (name, chooser(value, sampling_locations, attention_weights) -> bool)
_native_auto = True


def register_impl(name: str, fn: Impl, auto_chooser: Callable | None = None) -> None:
    """Register an implementation under `name`; `auto_chooser(value, sampling_locations,
    attention_weights) -> bool` says whether impl="auto" should pick it for that call."""
    _IMPLS[name] = fn
    if auto_chooser is not None:
        _AUTO_CHOOSERS.append((name, auto_chooser))


def available_impls() -> list:
    """Registered implementation names (sorted)."""
    return sorted(_IMPLS)


@contextlib.contextmanager
def native_auto(enabled: bool):
    """Within the block, impl="auto" may (True) or may not (False) pick a native kernel ("cpu" /
    "cuda"); False runs the grid_sample form (the baseline of benchmarks/gpu_suite.py). Process-wide;
    an explicit impl is not affected."""
    global _native_auto
    old, _native_auto = _native_auto, bool(enabled)
    try:
        yield
    finally:
        _native_auto = old


def resolve(impl: Union[str, Impl], value, sampling_locations, attention_weights) -> Impl:
    """The function impl names for this call ("auto": the first native kernel whose chooser accepts
    the call, else "torch"); a callable is returned as is. ValueError for an unknown name."""
    if callable(impl):
        return impl
    if impl == "auto":
        impl = "torch"
        if _native_auto:
            for name, chooser in _AUTO_CHOOSERS:
                if chooser(value, sampling_locations, attention_weights):
                    impl = name
                    break
    fn = _IMPLS.get(impl)
    if fn is None:
        raise ValueError(f"MSDeformAttn impl {impl!r} is not available here; available: {sorted(_IMPLS)}")
    return fn


def ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                   impl: Union[str, Impl] = "auto"):
    """MSDeformAttn: value [N, S, M, D], spatial_shapes [L, 2] int64, level_start_index [L] int64,
    sampling_locations [N, Lq, M, L, P, 2], attention_weights [N, Lq, M, L, P] -> [N, Lq, M*D].

    impl: a registered name (`available_impls()`; "auto" picks a native kernel when one can serve
    the call, else "torch") or an implementation function with this signature (e.g. an export form
    with options, `mdqe.ops.msda.forms.trt_builtin_form(plugin_version="1")`)."""
    check_shapes(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    fn = resolve(impl, value, sampling_locations, attention_weights)
    return fn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
