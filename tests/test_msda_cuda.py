"""MSDeformAttn impl="cuda".

On a GPU (built extension: `python -m mdqe.ops.msda.build cuda`, or MDQE_CUDA_EXT_DIR):
parity against the float64 reference (the grid_sample form evaluated in float64 on the CPU, itself
checked against the loop reference in mdqe/ops/msda/reference.py): fp32 within 1e-5 abs, fp16 (fp32
accumulation; reference on the same fp16-rounded inputs) within 1e-2 of max|ref|; locations outside [0, 1] and exactly on borders; zeroed
(padded) value rows; L=1, P=1, a 1x1 level, the TCA layout; CPU-resident index tensors; no host
synchronisation (torch.cuda.set_sync_debug_mode("error")); capture in a CUDA graph.

Everywhere (no GPU needed): the dispatch logic with a fake extension on "meta" tensors, which hold
no values, so any read of an index tensor's values would raise; the explicit build/load step.
"""
import pytest
import torch

from mdqe.ops import ms_deform_attn, ms_deform_attn_torch, native_auto
from mdqe.ops.msda import build, dispatch, native_cuda
from mdqe.ops.msda.checks import check_shapes
from mdqe.ops.msda.reference import ms_deform_attn_reference

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _inputs(shapes, N=2, Lq=50, M=8, D=32, P=4, seed=0, zero_rows=0):
    """float64 CPU inputs (fp16-exact); locations in [-0.1, 1.1] with points 0/1 exactly on the borders."""
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(shapes, dtype=torch.int64)
    areas = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    S, L = int(areas.sum()), len(shapes)
    value = torch.rand(N, S, M, D, generator=g, dtype=torch.float64) * 2 - 1
    if zero_rows:
        value[:, -zero_rows:] = 0          # padded rows: the model zeroes them before the op
    loc = torch.rand(N, Lq, M, L, P, 2, generator=g, dtype=torch.float64) * 1.2 - 0.1
    if P >= 2:
        loc[:, :, :, :, 0] = 0.0           # exactly on the borders
        loc[:, :, :, :, 1] = 1.0
    attn = torch.rand(N, Lq, M, L, P, generator=g, dtype=torch.float64)
    attn = attn / attn.sum((-1, -2), keepdim=True)
    # exactly representable in fp16 (and fp32): the float64 reference then sees the very inputs the
    # kernel gets, and an error measures the kernel's arithmetic, not the rounding of its inputs
    value, loc, attn = (t.half().double() for t in (value, loc, attn))
    return value, shapes, starts, loc, attn


def _on(args, dtype, device="cuda", index_device=None):
    index_device = index_device or device
    return [t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(index_device) for t in args]


CASES = {
    "4 levels": dict(shapes=[(12, 20), (6, 10), (3, 5), (2, 3)]),
    "tca layout": dict(shapes=[(6, 10)] * 4),
    "1x1, L=1, P=1": dict(shapes=[(1, 1)], P=1),
    "padded rows": dict(shapes=[(12, 20), (6, 10)], zero_rows=40),
    "odd D": dict(shapes=[(7, 9), (4, 5)], D=7),
}


def test_grid_sample_form_in_fp64_is_the_reference():
    args = _inputs([(5, 7), (3, 4)], N=1, Lq=6, M=2, D=3)
    ref = ms_deform_attn_reference(*args)
    assert (ms_deform_attn_torch(*args).numpy() - ref).__abs__().max() <= 1e-12


# ----------------------------------------------------------------------------- GPU parity
@gpu
@pytest.mark.parametrize("case", list(CASES))
def test_cuda_fp32_matches_fp64_reference(case):
    args = _inputs(**CASES[case])
    ref = ms_deform_attn_torch(*args)
    with torch.no_grad():
        out = ms_deform_attn(*_on(args, torch.float32), impl="cuda")
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert (out.double().cpu() - ref).abs().max().item() <= 1e-5


@gpu
@pytest.mark.parametrize("case", list(CASES))
def test_cuda_fp16_matches_fp64_reference(case):
    # the reference sees the same fp16-rounded inputs: what is measured is the kernel's arithmetic
    args = [a.half().double() if a.is_floating_point() else a for a in _inputs(**CASES[case])]
    ref = ms_deform_attn_torch(*args)
    with torch.no_grad():
        out = ms_deform_attn(*_on(args, torch.float16), impl="cuda")
    assert out.dtype == torch.float16
    rel = ((out.double().cpu() - ref).abs().max() / ref.abs().max()).item()
    assert rel <= 1e-2


@gpu
def test_cuda_fp16_accumulates_in_fp32():
    """Many equal small contributions: an fp16 accumulator would lose them (1 + 2^-12 == 1 in fp16)."""
    value, shapes, starts, loc, attn = _inputs([(16, 16)] * 4, N=1, Lq=4, M=1, D=2, P=64)
    attn = torch.full_like(attn, 1.0 / attn[0, 0, 0].numel())
    value, loc, attn = (t.half().double() for t in (value, loc, attn))   # fp16-exact inputs
    ref = ms_deform_attn_torch(value, shapes, starts, loc, attn)
    with torch.no_grad():
        out = ms_deform_attn(*_on((value, shapes, starts, loc, attn), torch.float16), impl="cuda")
    assert ((out.double().cpu() - ref).abs().max() / ref.abs().max()).item() <= 2e-3


@gpu
def test_cpu_index_tensors_and_no_host_sync():
    args = _inputs(**CASES["4 levels"])
    ref = ms_deform_attn_torch(*args)
    for index_device in ("cpu", "cuda"):
        cuda_args = _on(args, torch.float32, index_device=index_device)
        ms_deform_attn(*cuda_args, impl="cuda")          # first call may upload CPU index tensors
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            with torch.no_grad():
                out = ms_deform_attn(*cuda_args)           # auto -> cuda, no synchronising call
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert (out.double().cpu() - ref).abs().max().item() <= 1e-5


@gpu
def test_cuda_graph_capture_and_replay():
    args = _on(_inputs(**CASES["4 levels"]), torch.float32)
    with torch.no_grad():
        ms_deform_attn(*args, impl="cuda")
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            out = ms_deform_attn(*args, impl="cuda")
        new = _inputs(**CASES["4 levels"], seed=1)
        args[0].copy_(new[0])
        args[3].copy_(new[3])
        args[4].copy_(new[4])
        g.replay()
        torch.cuda.synchronize()
    assert (out.double().cpu() - ms_deform_attn_torch(*new)).abs().max().item() <= 1e-5


@gpu
def test_autocast_runs_kernel_in_fp16():
    args = _on(_inputs(**CASES["4 levels"]), torch.float32)
    value = args[0].half()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        out = ms_deform_attn(value, *args[1:])
    assert out.dtype == torch.float16


@gpu
@pytest.mark.parametrize("amp", [None, "fp16"])
def test_model_encoder_and_decoder_capture_in_cuda_graphs(amp):
    """The torch backend's CUDA-graph path on the tiny model: both graphs capture (no fallback), replay
    over several frames and give the eager backend's outputs (fp32: within 1e-4; fp16: same kernels)."""
    import numpy as np

    from benchmarks.gpu_suite import model_spec
    from mdqe.backend import TorchBackend
    from runtime.clip_buffer import FeatureRing
    spec = model_spec("tiny")
    eager = TorchBackend(None, spec=spec, device="cuda", msda="cuda", amp=amp)
    graphed = TorchBackend(None, spec=spec, device="cuda", msda="cuda", amp=amp, cuda_graphs=True)
    rng = np.random.default_rng(0)
    rings = [FeatureRing(spec.num_frames), FeatureRing(spec.num_frames)]
    for _ in range(spec.num_frames + 2):
        img = rng.standard_normal((1, 3, 192, 384), dtype=np.float32)
        for ring, b in zip(rings, (eager, graphed)):
            ring.push(b.encode(img))
    outs = [b.decode(ring.clip()) for ring, b in zip(rings, (eager, graphed))]
    st = graphed.graph_status()
    assert st["encoder"]["graphs"] == 1 and not st["encoder"]["failures"], st
    assert st["decoder"]["graphs"] == 1 and not st["decoder"]["failures"], st
    tol = 1e-4 if amp is None else 1e-2
    for k, ref in outs[0].items():
        assert np.isfinite(outs[1][k]).all()
        assert np.abs(outs[1][k] - ref).max() <= tol * max(1.0, np.abs(ref).max()), k


# ----------------------------------------------------------------------------- dispatch, no GPU needed
class FakeExt:
    def __init__(self):
        self.calls = []

    def forward(self, value, shapes, starts, loc, attn, stream):
        self.calls.append((shapes, starts, loc.dtype, attn.dtype, stream))
        N, Lq, M = loc.shape[:3]
        return torch.empty(N, Lq, M * value.shape[-1], dtype=value.dtype, device=value.device)


@pytest.fixture
def fake_cuda(monkeypatch):
    """impl='cuda' on 'meta' tensors (no values to read) with a fake extension."""
    native_cuda._reset_cuda_state()
    ext = FakeExt()
    monkeypatch.setattr(native_cuda, "_cuda_ext", ext)
    monkeypatch.setattr(native_cuda, "_on_gpu", lambda t: t.device.type == "meta")
    monkeypatch.setattr(native_cuda, "_stream_handle", lambda device: 1234)
    monkeypatch.setattr(native_cuda, "_capturing", lambda: False)
    yield ext
    native_cuda._reset_cuda_state()


def _meta(args, dtype=torch.float32, index_device="meta"):
    return _on(args, dtype, device="meta", index_device=index_device)


def test_dispatch_reads_no_device_values(fake_cuda):
    args = _meta(_inputs(**CASES["4 levels"]))
    check_shapes(*args)                                   # a read of a meta tensor's values would raise
    with torch.no_grad():
        out = ms_deform_attn(*args)                       # auto -> cuda
    assert out.shape == (2, 50, 8 * 32) and len(fake_cuda.calls) == 1
    shapes, starts, loc_dtype, attn_dtype, stream = fake_cuda.calls[0]
    assert shapes is args[1] and starts is args[2] and stream == 1234


def test_dispatch_half_casts_locations_and_weights(fake_cuda):
    value, shapes, starts, loc, attn = _meta(_inputs(**CASES["4 levels"]))
    with torch.no_grad():
        out = ms_deform_attn(value.half(), shapes, starts, loc, attn, impl="cuda")
    assert out.dtype == torch.float16 and fake_cuda.calls[0][2:4] == (torch.float16, torch.float16)


def test_cpu_index_tensors_are_checked_and_cached(fake_cuda):
    args = _meta(_inputs(**CASES["4 levels"]), index_device="cpu")
    with torch.no_grad():
        ms_deform_attn(*args, impl="cuda")
        ms_deform_attn(*args, impl="cuda")
    (s1, t1, *_), (s2, t2, *_) = fake_cuda.calls
    assert s1 is s2 and t1 is t2 and s1.device.type == "meta" and s1.dtype == torch.int32
    bad = list(args)
    bad[2] = bad[2] + 1
    with pytest.raises(ValueError, match="level_start_index"):
        ms_deform_attn(*bad, impl="cuda")


def test_new_cpu_index_content_during_capture_is_refused(fake_cuda, monkeypatch):
    args = _meta(_inputs(**CASES["4 levels"]), index_device="cpu")
    monkeypatch.setattr(native_cuda, "_capturing", lambda: True)
    with pytest.raises(RuntimeError, match="first seen during CUDA-graph capture"):
        ms_deform_attn(*args, impl="cuda")


def test_native_auto_off_and_grad_fall_back_to_torch(fake_cuda, monkeypatch):
    args = _meta(_inputs(**CASES["4 levels"]))
    seen = []
    monkeypatch.setitem(dispatch._IMPLS, "torch", lambda *a: seen.append("torch"))
    with torch.no_grad(), native_auto(False):
        ms_deform_attn(*args)
    assert seen == ["torch"] and not fake_cuda.calls
    with torch.no_grad():
        ms_deform_attn(*args)
    assert len(fake_cuda.calls) == 1
    loc = args[3].clone().requires_grad_(True)
    ms_deform_attn(args[0], args[1], args[2], loc, args[4])
    assert seen == ["torch", "torch"]


# ----------------------------------------------------------------------------- build / load step
def test_load_without_build_names_the_build_command(tmp_path, monkeypatch):
    native_cuda._reset_cuda_state()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert native_cuda.load_cuda_extension(tmp_path) is None
    assert "python -m mdqe.ops.msda.build cuda" in native_cuda._cuda_error and "not built" in native_cuda._cuda_error
    native_cuda._reset_cuda_state()
    lib = tmp_path / f"{native_cuda.CUDA_EXT_NAME}.so"
    lib.write_bytes(b"")
    import os
    os.utime(lib, (1, 1))                                 # older than the sources
    assert native_cuda.load_cuda_extension(tmp_path) is None
    assert "older than" in native_cuda._cuda_error
    native_cuda._reset_cuda_state()


def test_auto_never_builds(monkeypatch, tmp_path):
    native_cuda._reset_cuda_state()
    monkeypatch.setenv("MDQE_CUDA_EXT_DIR", str(tmp_path))
    monkeypatch.setattr(native_cuda, "_on_gpu", lambda t: t.device.type == "meta")
    monkeypatch.setattr(build, "build_cuda_extension", lambda *a, **k: pytest.fail("built on a call"))
    args = _meta(_inputs(**CASES["4 levels"]))
    with pytest.warns(RuntimeWarning, match="unavailable"):
        assert native_cuda.auto_serves(args[0], args[3], args[4]) is False
    native_cuda._reset_cuda_state()


def test_build_cli_bad_input_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(build, "cuda_home", lambda: None)
    assert build.main(["cuda", "--build-dir", str(tmp_path), "--arch", "9.0"]) == 2
    assert "nvcc" in capsys.readouterr().err
