"""mdqe.ops.ms_deform_attn dispatch to the native kernels (mdqe/ops/msda/native_cpu.py, native_cuda.py)."""

import pytest
import torch

from mdqe.ops import available_impls, ms_deform_attn, ms_deform_attn_torch
from mdqe.ops.msda import dispatch, native_cpu


def _inputs(requires_grad=False, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    shapes = torch.tensor([[6, 8], [3, 4], [2, 2]])
    starts = torch.tensor([0, 48, 60])
    N, S, M, D, Lq, L, P = 2, 64, 4, 8, 10, 3, 4
    value = torch.randn(N, S, M, D, generator=g, dtype=dtype)
    loc = torch.rand(N, Lq, M, L, P, 2, generator=g, dtype=dtype) * 1.4 - 0.2
    attn = torch.rand(N, Lq, M, L, P, generator=g, dtype=dtype)
    if requires_grad:
        value.requires_grad_(True)
    return value, shapes, starts, loc, attn


def _spy(monkeypatch):
    calls = []
    real = native_cpu.ms_deform_attn_cpu

    def spy(*a):
        calls.append(1)
        return real(*a)
    monkeypatch.setitem(dispatch._IMPLS, "cpu", spy)
    return calls


def test_cpu_and_cuda_registered():
    assert {"cpu", "cuda", "torch"} <= set(available_impls())


def test_forced_cpu_matches_torch():
    args = _inputs()
    out = ms_deform_attn(*args, impl="cpu")
    assert (out - ms_deform_attn_torch(*args)).abs().max() <= 1e-5


def test_auto_picks_cpu_for_inference(monkeypatch):
    calls = _spy(monkeypatch)
    args = _inputs()
    with torch.no_grad():
        ms_deform_attn(*args)
    assert calls == [1]


def test_auto_uses_torch_when_grad_is_needed(monkeypatch):
    calls = _spy(monkeypatch)
    args = _inputs(requires_grad=True)
    out = ms_deform_attn(*args)
    assert calls == [] and out.requires_grad
    with torch.no_grad():  # a leaf that requires grad, but grad mode is off: inference, cpu
        ms_deform_attn(*args)
    assert calls == [1]


def test_auto_keeps_float64_on_torch(monkeypatch):
    calls = _spy(monkeypatch)
    ms_deform_attn(*_inputs(dtype=torch.float64))
    assert calls == []


def test_forced_cpu_refuses_grad():
    with pytest.raises(RuntimeError, match="inference-only.*requires grad"):
        ms_deform_attn(*_inputs(requires_grad=True), impl="cpu")


def test_forced_cpu_reports_kernel_errors_as_value_error():
    value, shapes, starts, loc, attn = _inputs()
    with pytest.raises(ValueError, match=r"level_start_index\[2\] = 59"):
        ms_deform_attn(value, shapes, torch.tensor([0, 48, 59]), loc, attn, impl="cpu")


def test_forced_cuda_without_gpu_raises_clearly():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: this checks the error path of CPU-only machines")
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        ms_deform_attn(*_inputs(), impl="cuda")
