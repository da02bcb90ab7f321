"""The torch MSDeformAttn (grid_sample form) against the slow per-sample bilinear loop."""
import numpy as np
import pytest
import torch

from mdqe.ops import ms_deform_attn, ms_deform_attn_torch
from mdqe.ops.msda.reference import bilinear_zero_pad, ms_deform_attn_reference


def _inputs(seed, N=2, M=2, D=3, Lq=5, P=3, shapes=((4, 6), (3, 2), (1, 5)), lo=-0.3, hi=1.3):
    g = torch.Generator().manual_seed(seed)
    ss = torch.tensor(shapes, dtype=torch.int64)
    starts = torch.cat([ss.new_zeros(1), (ss[:, 0] * ss[:, 1]).cumsum(0)[:-1]])
    S = int((ss[:, 0] * ss[:, 1]).sum())
    L = len(shapes)
    value = torch.randn(N, S, M, D, generator=g, dtype=torch.float64)
    loc = lo + (hi - lo) * torch.rand(N, Lq, M, L, P, 2, generator=g, dtype=torch.float64)
    attn = torch.rand(N, Lq, M, L, P, generator=g, dtype=torch.float64)
    return value, ss, starts, loc, attn


def test_bilinear_reference_hand_case():
    fmap = np.arange(6, dtype=np.float64).reshape(2, 3, 1)      # [[0,1,2],[3,4,5]]
    assert bilinear_zero_pad(fmap, 1.0, 1.0)[0] == 4.0           # exactly on pixel (x=1, y=1)
    assert bilinear_zero_pad(fmap, 0.5, 0.0)[0] == 0.5           # between 0 and 1
    assert bilinear_zero_pad(fmap, 2.5, 0.0)[0] == 1.0           # half of pixel 2, half outside (zero)
    assert bilinear_zero_pad(fmap, -1.0, 0.0)[0] == 0.0          # fully outside


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_torch_form_equals_reference_loop(seed):
    value, ss, starts, loc, attn = _inputs(seed)
    assert (loc < 0).any() and (loc > 1).any()                   # locations outside [0, 1] are exercised
    ref = ms_deform_attn_reference(value, ss, starts, loc, attn)
    got = ms_deform_attn_torch(value, ss, starts, loc, attn)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-10)
    got32 = ms_deform_attn(value.float(), ss, starts, loc.float(), attn.float(), impl="torch")
    np.testing.assert_allclose(got32.numpy(), ref, rtol=1e-4, atol=1e-5)


def test_far_outside_locations_give_zero():
    value, ss, starts, loc, attn = _inputs(3)
    loc = loc + 5.0
    out = ms_deform_attn_torch(value, ss, starts, loc, attn)
    assert torch.count_nonzero(out) == 0
    np.testing.assert_array_equal(ms_deform_attn_reference(value, ss, starts, loc, attn), 0.0)
