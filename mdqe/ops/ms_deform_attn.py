"""MSDeformAttn: the one entry point every attention layer of MDQE calls.

Contract (docs/INTERFACES.md, shared DESIGN.md section 3):
    value               [N, S, M, D]      S = sum_l H_l * W_l
    spatial_shapes      [L, 2] int64      (H_l, W_l)
    level_start_index   [L] int64         offset of level l inside S
    sampling_locations  [N, Lq, M, L, P, 2] normalised (x, y); outside [0, 1] allowed
    attention_weights   [N, Lq, M, L, P]
    -> output           [N, Lq, M * D]
Bilinear sampling with align_corners=False (pixel = loc * W - 0.5) and zero padding.

One semantics for bad sampling locations, identical in every implementation (this torch form,
the C++ CPU kernel, the CUDA kernel and the TensorRT plugin, which share
trt_plugins/include/mdqe_msda/msda_core.h): a sample whose location is not finite (NaN, +-inf)
or lies so far outside its level that none of its four bilinear corners is inside the map
(pixel x <= -1 or x >= W, same for y) contributes exactly zero, whatever its attention weight
(even NaN). Other samples of the same query are unaffected.
``level_start_index`` must be the exclusive cumulative sum of H_l * W_l; every implementation
rejects anything else with ValueError (the torch form and the CPU kernel on every call; the
dispatcher checks CPU tensors without device reads).

Implementations are registered by name; "torch" (the grid_sample form) is always
present. Native kernels register themselves as "cpu" / "cuda" (mdqe/ops/native_impls.py).
"""
from __future__ import annotations

from typing import Callable, Dict

import torch
import torch.nn.functional as F

_IMPLS: Dict[str, Callable] = {}
_AUTO_CHOOSERS = []  # callables (value, requires_grad) -> impl name or None


def register_impl(name: str, fn: Callable, auto_chooser: Callable | None = None) -> None:
    """Register an implementation; `auto_chooser(value, sampling_locations, attention_weights) -> bool`
    says whether "auto" should pick it for that call."""
    _IMPLS[name] = fn
    if auto_chooser is not None:
        _AUTO_CHOOSERS.append((name, auto_chooser))


def available_impls() -> list:
    _load_native()
    return sorted(_IMPLS)


def ms_deform_attn_torch(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """grid_sample form (differentiable, exportable as ONNX GridSample). Shapes as in the module doc."""
    N, S, M, D = value.shape
    _, Lq, _, L, P, _ = sampling_locations.shape
    grids = 2.0 * sampling_locations - 1.0
    # [N, Lq, M, L, P] -> [N*M, 1, Lq, L, P]: one weight per sampled point
    weights = attention_weights.permute(0, 2, 1, 3, 4).reshape(N * M, 1, Lq, L, P)
    out = None
    tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
    if not tracing:
        # one host read for all levels (free for CPU tensors; one sync instead of several per level on CUDA)
        sizes, starts = _host_levels(spatial_shapes, level_start_index)
    expected_start = 0
    for lvl in range(L):
        if tracing:
            h, w = spatial_shapes[lvl, 0], spatial_shapes[lvl, 1]
            start = level_start_index[lvl]
            v = value[:, start:start + h * w]
        else:
            (h, w), start = sizes[lvl], starts[lvl]    # host values this form reads anyway
            if start != expected_start:
                raise ValueError(_level_start_message(lvl, start, expected_start))
            expected_start += h * w
            v = value.narrow(1, start, h * w)
        # [N, HW, M, D] -> [N*M, D, H, W]
        v = v.permute(0, 2, 3, 1).reshape(N * M, D, h, w)
        # [N, Lq, M, P, 2] -> [N*M, Lq, P, 2]
        g = grids[:, :, :, lvl].permute(0, 2, 1, 3, 4).reshape(N * M, Lq, P, 2)
        # samples that contribute nothing (non-finite, or no bilinear corner inside the map) get a grid
        # point far outside (grid_sample then reads nothing) and weight 0: exactly 0, as in the C++ core
        loc = sampling_locations[:, :, :, lvl].permute(0, 2, 1, 3, 4).reshape(N * M, Lq, P, 2)
        valid = _valid_samples(loc, h, w)                                          # [N*M, Lq, P]
        g = torch.where(valid.unsqueeze(-1), g, torch.full_like(g, -4.0))
        wl = weights[..., lvl, :]                                                  # [N*M, 1, Lq, P]
        wl = torch.where(valid.unsqueeze(1), wl, torch.zeros_like(wl))
        sampled = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)  # [N*M, D, Lq, P]
        # accumulate level by level: no [N*M, D, Lq, L, P] intermediate
        term = (sampled * wl).sum(-1)  # [N*M, D, Lq]
        out = term if out is None else out + term
    return out.reshape(N, M * D, Lq).transpose(1, 2).contiguous()


def _host_levels(spatial_shapes, level_start_index):
    """([(H_l, W_l)], [start_l]) as Python ints, read in one device-to-host copy."""
    if spatial_shapes.device == level_start_index.device:
        flat = torch.cat([spatial_shapes.reshape(-1), level_start_index.reshape(-1).to(spatial_shapes.dtype)]).tolist()
    else:
        flat = spatial_shapes.reshape(-1).tolist() + level_start_index.reshape(-1).tolist()
    L = spatial_shapes.shape[0]
    return [(flat[2 * i], flat[2 * i + 1]) for i in range(L)], flat[2 * L:]


def _valid_samples(loc, h, w):
    """[..., 2] normalised locations (x, y) -> bool [...]: the sample is finite and at least one of
    its bilinear corners lies inside the h x w map, i.e. the pixel coordinate p = loc * size - 0.5
    (float32, as the C++ core computes it) satisfies -1 < p < size (msda_corners_at, msda_core.h)."""
    loc = loc.float()
    px = loc[..., 0] * w - 0.5
    py = loc[..., 1] * h - 0.5
    # written so that NaN compares false
    return (px > -1.0) & (py > -1.0) & (px < w) & (py < h)


def check_level_start_index(spatial_shapes, level_start_index) -> None:
    """Raise ValueError unless level_start_index is the exclusive cumulative sum of H_l * W_l. Reads
    values only from CPU tensors (no device synchronisation); CUDA tensors are left to the kernels
    (the torch form checks the host values it reads anyway)."""
    if spatial_shapes.device.type != "cpu" or level_start_index.device.type != "cpu":
        return
    if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return
    sizes = (spatial_shapes[:, 0] * spatial_shapes[:, 1]).to(torch.int64)
    expected = torch.cumsum(sizes, 0) - sizes
    got = level_start_index.to(torch.int64)
    if not torch.equal(got, expected):
        lvl = int((got != expected).nonzero()[0, 0])
        raise ValueError(_level_start_message(lvl, int(got[lvl]), int(expected[lvl])))


def _level_start_message(lvl: int, got: int, expected: int) -> str:
    """The CPU kernel's wording (trt_plugins/src/msda_cpu.cpp validate)."""
    return (f"level_start_index[{lvl}] = {got} but the levels before it hold {expected} pixels "
            "(expected the running sum of H*W)")


register_impl("torch", ms_deform_attn_torch)

_native_loaded = False


def _load_native() -> None:
    global _native_loaded
    if _native_loaded:
        return
    _native_loaded = True
    try:
        from . import native_impls  # noqa: F401  (registers "cpu" / "cuda" when built)
    except ImportError:
        pass


def check_shapes(value, spatial_shapes, level_start_index, sampling_locations, attention_weights) -> None:
    """Raise ValueError naming the first inconsistent argument."""
    if value.dim() != 4:
        raise ValueError(f"value must be [N,S,M,D], got {tuple(value.shape)}")
    N, S, M, D = value.shape
    if spatial_shapes.dim() != 2 or spatial_shapes.shape[1] != 2:
        raise ValueError(f"spatial_shapes must be [L,2], got {tuple(spatial_shapes.shape)}")
    L = spatial_shapes.shape[0]
    if level_start_index.shape != (L,):
        raise ValueError(f"level_start_index must be [{L}], got {tuple(level_start_index.shape)}")
    if sampling_locations.dim() != 6 or sampling_locations.shape[0] != N or sampling_locations.shape[2] != M \
            or sampling_locations.shape[3] != L or sampling_locations.shape[5] != 2:
        raise ValueError(f"sampling_locations must be [N={N},Lq,M={M},L={L},P,2], got {tuple(sampling_locations.shape)}")
    if attention_weights.shape != sampling_locations.shape[:-1]:
        raise ValueError(f"attention_weights must be {tuple(sampling_locations.shape[:-1])}, got {tuple(attention_weights.shape)}")
    # values are read only from CPU tensors: reading a CUDA tensor would synchronise the host with the
    # GPU on every call (and break CUDA-graph capture); the CUDA kernel bounds-checks each level itself
    if not torch.jit.is_tracing() and not torch.onnx.is_in_onnx_export() and spatial_shapes.device.type == "cpu":
        total = int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum())
        if total != S:
            raise ValueError(f"value has S={S} but spatial_shapes sum to {total}")
        check_level_start_index(spatial_shapes, level_start_index)


def ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, impl: str = "auto"):
    """Dispatch to an implementation. "auto": the ONNX export hook while exporting, a registered
    native kernel when it can serve the call (inference on its device), else "torch"."""
    from . import export_hooks  # local import: no cost unless exporting
    if torch.onnx.is_in_onnx_export() and export_hooks.active_mode() is not None:
        return export_hooks.export_ms_deform_attn(value, spatial_shapes, level_start_index,
                                                  sampling_locations, attention_weights)
    check_shapes(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
    _load_native()
    if impl == "auto":
        impl = "torch"
        for name, chooser in _AUTO_CHOOSERS:
            if chooser(value, sampling_locations, attention_weights):
                impl = name
                break
    if impl not in _IMPLS:
        raise ValueError(f"MSDeformAttn impl {impl!r} is not available here; available: {sorted(_IMPLS)}")
    return _IMPLS[impl](value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
