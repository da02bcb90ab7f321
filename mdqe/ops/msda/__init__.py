"""MSDeformAttn, the one home of the op (as Deformable DETR keeps its op in models/ops/).

Contract (docs/INTERFACES.md section 2):
    value               [N, S, M, D]      S = sum_l H_l * W_l
    spatial_shapes      [L, 2] int64      (H_l, W_l)
    level_start_index   [L] int64         offset of level l inside S (exclusive cumulative sum of H_l * W_l)
    sampling_locations  [N, Lq, M, L, P, 2] normalised (x, y); outside [0, 1] allowed
    attention_weights   [N, Lq, M, L, P]
    -> output           [N, Lq, M * D]
Bilinear sampling with align_corners=False (pixel = loc * W - 0.5) and zero padding.

One semantics for bad sampling locations, identical in every implementation (the torch form, the
C++ CPU kernel, the CUDA kernel and the TensorRT plugin, which share
trt_plugins/include/mdqe_msda/msda_core.h, and every export form): a sample whose location is not
finite (NaN, +-inf) or lies so far outside its level that none of its four bilinear corners is
inside the map (pixel x <= -1 or x >= W, same for y) contributes exactly zero, whatever its
attention weight (even NaN). Other samples of the same query are unaffected. A level_start_index
that is not the running sum of H_l * W_l is rejected with ValueError (the torch form and the CPU
kernel on every call; the dispatcher checks CPU tensors without device reads).

Modules:
    dispatch.py     registry (`register_impl`, `available_impls`), `native_auto`, the dispatcher `ms_deform_attn`
    checks.py       argument checks shared by the implementations
    torch_form.py   "torch": F.grid_sample form, differentiable
    native_cpu.py   "cpu": the C++ kernel through the torch-free binding runtime/native/msda.py
    native_cuda.py  "cuda": the CUDA kernel (torch extension), loaded, never built, by a call
    build.py        `python -m mdqe.ops.msda.build cuda`: the explicit build step of the extension
    forms/          the export forms "onnx", "gridsample", "plugin", "trt-builtin"
    selection.py    `MSDACaller` and `use_msda_impl(model, impl)`: a model's choice, set explicitly
    reference.py    slow float64 numpy reference (tests)
"""
from __future__ import annotations

from . import forms, native_cpu, native_cuda
from .checks import check_level_start_index, check_shapes
from .dispatch import available_impls, ms_deform_attn, native_auto, register_impl
from .forms import level_sizes_hint
from .selection import MSDACaller, use_msda_impl
from .torch_form import ms_deform_attn_torch

register_impl("torch", ms_deform_attn_torch)
register_impl("cpu", native_cpu.ms_deform_attn_cpu, native_cpu.auto_serves)
register_impl("cuda", native_cuda.ms_deform_attn_cuda, native_cuda.auto_serves)
for _name, _fn in forms.FORMS.items():
    register_impl(_name, _fn)

__all__ = ["ms_deform_attn", "ms_deform_attn_torch", "register_impl", "available_impls", "native_auto",
           "check_shapes", "check_level_start_index", "level_sizes_hint", "MSDACaller", "use_msda_impl"]
