"""One semantics for bad sampling locations in every CPU-runnable MSDeformAttn
implementation (the torch form, the C++ CPU kernel via ctypes and via mdqe.ops impl="cpu"), and
level_start_index validated the same way everywhere.

Rule (mdqe/ops/msda/__init__.py, msda_core.h): a sample whose location is not finite, or whose four
bilinear corners all lie outside its level, contributes exactly 0 whatever its attention weight (even
NaN or inf); the other samples of the query are unaffected.
"""
import numpy as np
import pytest
import torch

from mdqe.ops.msda import ms_deform_attn, ms_deform_attn_torch
from runtime.native import msda as native

SHAPES = torch.tensor([[4, 5], [2, 3]])
STARTS = torch.tensor([0, 20])
S = 26
N, Lq, M, L, P, D = 2, 5, 2, 2, 3, 4


def _inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    value = torch.randn(N, S, M, D, generator=g)
    loc = torch.rand(N, Lq, M, L, P, 2, generator=g)
    attn = torch.rand(N, Lq, M, L, P, generator=g)
    return value, loc, attn


def _bad(loc, attn):
    """Make some samples bad (NaN, inf, huge, far outside) and give some of them NaN/inf weights.
    Returns the modified tensors and a bool mask [N, Lq, M, L, P] of the bad samples."""
    loc, attn = loc.clone(), attn.clone()
    bad = torch.zeros(loc.shape[:-1], dtype=torch.bool)
    cases = [((0, 0, 0, 0, 0, 0), float("nan"), None), ((0, 1, 1, 1, 2, 1), float("inf"), float("nan")),
             ((1, 2, 0, 1, 0, 0), -float("inf"), float("inf")), ((1, 3, 1, 0, 1, 1), 1e30, float("nan")),
             ((0, 4, 0, 0, 2, 0), -1e30, None), ((1, 4, 1, 1, 1, 0), 1.5, float("nan")),   # 1.5*3-0.5 = 4 >= W
             ((0, 2, 1, 0, 0, 1), -0.2, float("nan"))]                                    # -0.2*4-0.5 < -1
    for idx, v, w in cases:
        loc[idx] = v
        bad[idx[:5]] = True
        if w is not None:
            attn[idx[:5]] = w
    return loc, attn, bad


def _impls():
    out = [("torch", lambda *a: ms_deform_attn(*a, impl="torch"))]
    if native.is_available():
        out.append(("mdqe.ops cpu", lambda *a: ms_deform_attn(*a, impl="cpu")))
        out.append(("ctypes cpu", lambda v, s, st, lo, at: torch.from_numpy(native.ms_deform_attn_cpu(
            v.numpy(), s.numpy(), st.numpy(), lo.numpy(), at.numpy()))))
    return out


IMPLS = _impls()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_kernel_bad_samples_contribute_zero():
    value, loc, attn = _inputs()
    bad_loc, bad_attn, _ = _bad(loc, attn)
    ref = ms_deform_attn(value, SHAPES, STARTS, bad_loc, bad_attn, impl="torch")
    with torch.no_grad():
        out = ms_deform_attn(*(t.cuda() for t in (value, SHAPES, STARTS, bad_loc, bad_attn)), impl="cuda").cpu()
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,fn", IMPLS, ids=[n for n, _ in IMPLS])
def test_bad_samples_contribute_zero(name, fn):
    value, loc, attn = _inputs()
    bad_loc, bad_attn, bad = _bad(loc, attn)
    out = fn(value, SHAPES, STARTS, bad_loc, bad_attn)
    assert torch.isfinite(out).all(), f"{name}: a bad sample leaked NaN/inf"
    # the same call with the bad samples given weight 0 at a good location
    ref_loc = torch.where(bad[..., None], loc, bad_loc)
    ref_attn = torch.where(bad, torch.zeros_like(attn), bad_attn)
    ref = fn(value, SHAPES, STARTS, ref_loc, ref_attn)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    # and the queries without a bad sample are the plain result
    clean = fn(value, SHAPES, STARTS, loc, attn)
    rows = ~bad.any(dim=(2, 3, 4))                                    # [N, Lq]
    torch.testing.assert_close(out[rows], clean[rows], rtol=0, atol=1e-6)


def test_all_implementations_agree_on_bad_samples():
    value, loc, attn = _inputs(1)
    bad_loc, bad_attn, _ = _bad(loc, attn)
    outs = {n: fn(value, SHAPES, STARTS, bad_loc, bad_attn) for n, fn in IMPLS}
    for n, o in outs.items():
        torch.testing.assert_close(o, outs["torch"], rtol=1e-5, atol=1e-5, msg=n)


def test_torch_form_gradients_stay_finite():
    value, loc, attn = _inputs(2)
    bad_loc, bad_attn, _ = _bad(loc, attn)
    value.requires_grad_(True)
    bad_attn.requires_grad_(True)
    ms_deform_attn(value, SHAPES, STARTS, bad_loc, bad_attn, impl="torch").sum().backward()
    assert torch.isfinite(value.grad).all() and torch.isfinite(bad_attn.grad).all()


BAD_STARTS = [torch.tensor([0, 19]), torch.tensor([1, 21]), torch.tensor([0, 0])]


@pytest.mark.parametrize("starts", BAD_STARTS, ids=["19", "1-21", "0-0"])
@pytest.mark.parametrize("name,fn", IMPLS + [("torch form direct", ms_deform_attn_torch)],
                         ids=[n for n, _ in IMPLS] + ["torch form direct"])
def test_level_start_index_rejected_everywhere(name, fn, starts):
    value, loc, attn = _inputs()
    with pytest.raises(ValueError, match=r"level_start_index\[\d\] = \d+ but the levels before it hold"):
        fn(value, SHAPES, starts, loc, attn)


def test_level_start_index_check_reads_no_device_values():
    """The dispatcher's check only reads CPU tensors: on other devices it returns without .tolist()/item."""
    from mdqe.ops.msda import check_level_start_index

    class Fake:
        device = torch.device("meta")

    check_level_start_index(Fake(), Fake())   # would raise AttributeError if it read values
