"""CUDA kernel parity (impl="cuda") with the grid_sample form: fp32 within 1e-5 abs, fp16 within
1e-2 relative. Needs a CUDA build of torch, a GPU and nvcc (the extension is JIT-built);
skipped elsewhere."""
import pytest
import torch

from mdqe.ops import ms_deform_attn, ms_deform_attn_torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _inputs(dtype, shapes, N=2, Lq=50, M=8, D=32, P=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(shapes)
    areas = shapes[:, 0] * shapes[:, 1]
    starts = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    S, L = int(areas.sum()), len(shapes)
    value = torch.rand(N, S, M, D, generator=g) * 2 - 1
    loc = torch.rand(N, Lq, M, L, P, 2, generator=g) * 1.2 - 0.1
    loc[:, :, :, :, 0] = torch.tensor([0.0, 1.0])  # exact borders
    attn = torch.rand(N, Lq, M, L, P, generator=g)
    attn = attn / attn.sum((-1, -2), keepdim=True)
    return [t.cuda().to(dtype) if t.is_floating_point() else t.cuda() for t in (value, shapes, starts, loc, attn)]


@pytest.mark.parametrize("shapes", [[(12, 20), (6, 10), (3, 5), (2, 3)], [(6, 10)] * 4, [(1, 1)]])
def test_cuda_fp32_matches_torch(shapes):
    args = _inputs(torch.float32, shapes)
    with torch.no_grad():
        out = ms_deform_attn(*args, impl="cuda")
        ref = ms_deform_attn_torch(*args)
    assert (out - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("D", [32, 7])  # half2 path and scalar-half path
def test_cuda_fp16_matches_torch(D):
    args = _inputs(torch.float16, [(12, 20), (6, 10)], D=D)
    with torch.no_grad():
        out = ms_deform_attn(*args, impl="cuda").float()
        ref = ms_deform_attn_torch(*[a.float() if a.is_floating_point() else a for a in args])
    rel = ((out - ref).abs().max() / ref.abs().max()).item()
    assert rel <= 1e-2


def test_auto_picks_cuda_for_inference():
    args = _inputs(torch.float32, [(6, 10)])
    with torch.no_grad():
        out = ms_deform_attn(*args)
    assert out.is_cuda and (out - ms_deform_attn_torch(*args)).abs().max().item() <= 1e-5
