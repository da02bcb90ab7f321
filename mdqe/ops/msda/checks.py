"""Argument checks shared by every MSDeformAttn implementation (shapes as in `mdqe.ops.msda`).

Values are read only from CPU tensors: reading a CUDA tensor would synchronise the host with the GPU
on every call (and break CUDA-graph capture); the CUDA kernel bounds-checks each level itself.
Nothing is read while exporting (`mdqe.tracing.exporting`): the values are symbolic then.
"""
from __future__ import annotations

import torch

from ...tracing import exporting


def needs_grad(*tensors) -> bool:
    """True when autograd would record a call on these tensors."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def check_inference(impl: str, value, sampling_locations, attention_weights) -> None:
    """RuntimeError when an inference-only kernel (impl "cpu" / "cuda") is forced on inputs that need
    a gradient."""
    if needs_grad(value, sampling_locations, attention_weights):
        raise RuntimeError(f"MSDeformAttn impl={impl!r} is inference-only, but an input requires grad; "
                           "use impl='torch' (differentiable) or run under torch.no_grad()/torch.inference_mode()")


def level_start_message(lvl: int, got: int, expected: int) -> str:
    """The CPU kernel's wording (trt_plugins/src/msda_cpu.cpp validate)."""
    return (f"level_start_index[{lvl}] = {got} but the levels before it hold {expected} pixels "
            "(expected the running sum of H*W)")


def check_level_start_index(spatial_shapes, level_start_index) -> None:
    """Raise ValueError unless level_start_index [L] is the exclusive cumulative sum of H_l * W_l of
    spatial_shapes [L, 2]. Reads values only from CPU tensors (no device synchronisation); CUDA
    tensors are left to the kernels (the torch form checks the host values it reads anyway)."""
    if spatial_shapes.device.type != "cpu" or level_start_index.device.type != "cpu":
        return
    if exporting():
        return
    sizes = (spatial_shapes[:, 0] * spatial_shapes[:, 1]).to(torch.int64)
    expected = torch.cumsum(sizes, 0) - sizes
    got = level_start_index.to(torch.int64)
    if not torch.equal(got, expected):
        lvl = int((got != expected).nonzero()[0, 0])
        raise ValueError(level_start_message(lvl, int(got[lvl]), int(expected[lvl])))


def check_shapes(value, spatial_shapes, level_start_index, sampling_locations, attention_weights) -> None:
    """Raise ValueError naming the first inconsistent argument: value [N, S, M, D], spatial_shapes
    [L, 2], level_start_index [L], sampling_locations [N, Lq, M, L, P, 2], attention_weights
    [N, Lq, M, L, P]; on CPU index tensors also S == sum(H_l * W_l) and the level offsets."""
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
    if not exporting() and spatial_shapes.device.type == "cpu":
        total = int((spatial_shapes[:, 0] * spatial_shapes[:, 1]).sum())
        if total != S:
            raise ValueError(f"value has S={S} but spatial_shapes sum to {total}")
        check_level_start_index(spatial_shapes, level_start_index)
