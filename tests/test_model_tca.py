"""Temporal cross-attention attends over the T frames; refined boxes stay in [0, 1]."""
import torch

import mdqe
from mdqe.model import deform_attn as da
from mdqe.model.decoder import clip_box
from mdqe.model.deform_attn import MSDeformAttn


def _tca_inputs(T=4, C=16, Q=5, sizes=((6, 8), (3, 4))):
    g = torch.Generator().manual_seed(0)
    S = sum(h * w for h, w in sizes)
    memory = torch.randn(2, T, S, C, generator=g)
    query = torch.randn(2, Q, C, generator=g)
    ref = torch.cat([torch.rand(2, Q, 2, generator=g) * 0.5 + 0.25, torch.full((2, Q, 2), 0.4)], -1)
    ss = torch.tensor(sizes, dtype=torch.int64)
    return query, ref, memory, ss, list(sizes)


def _tca(T=4, C=16):
    torch.manual_seed(0)
    m = MSDeformAttn(C, 4, T, 4, 8.0, mode="box")
    with torch.no_grad():   # non-trivial attention weights and learned offsets
        m.attention_weights.weight.normal_(0, 0.5)
        m.sampling_grid_offsets.weight.normal_(0, 0.5)
    return m


def test_tca_sees_the_T_frames_as_levels(monkeypatch):
    T = 4
    calls = []
    real = da.ms_deform_attn

    def spy(value, spatial_shapes, level_start_index, loc, attn, impl="auto"):
        calls.append((tuple(value.shape), spatial_shapes.tolist(), level_start_index.tolist(), tuple(loc.shape)))
        return real(value, spatial_shapes, level_start_index, loc, attn, impl)

    monkeypatch.setattr(da, "ms_deform_attn", spy)
    query, ref, memory, ss, sizes = _tca_inputs(T)
    _tca(T).forward_temporal(query, ref, memory, ss, sizes)
    assert len(calls) == 2                                          # once per feature level
    for (h, w), (vshape, shapes, starts, lshape) in zip(sizes, calls):
        assert vshape == (2, T * h * w, 4, 4)
        assert shapes == [[h, w]] * T
        assert starts == [t * h * w for t in range(T)]
        assert lshape[3] == T


def test_perturbing_one_frame_changes_tca_output():
    T = 4
    query, ref, memory, ss, sizes = _tca_inputs(T)
    m = _tca(T)
    base = m.forward_temporal(query, ref, memory, ss, sizes)
    for t in range(T):
        pert = memory.clone()
        pert[:, t] += torch.randn_like(pert[:, t])
        out = m.forward_temporal(query, ref, pert, ss, sizes)
        assert (out - base).abs().max() > 1e-3, f"frame {t} does not reach the TCA output"


def test_tca_output_is_not_a_single_frame():
    """Zeroing every frame but one changes the result: all frames contribute at once."""
    T = 4
    query, ref, memory, ss, sizes = _tca_inputs(T)
    m = _tca(T)
    base = m.forward_temporal(query, ref, memory, ss, sizes)
    only0 = memory.clone()
    only0[:, 1:] = 0
    assert (m.forward_temporal(query, ref, only0, ss, sizes) - base).abs().max() > 1e-3


def test_clip_box_is_union_and_in_unit_square():
    boxes = torch.tensor([[[0.2, 0.3, 0.2, 0.2]], [[0.9, 0.5, 0.4, 0.2]]]).view(1, 2, 1, 4)  # [B, T, Q, 4]
    u = clip_box(boxes)[0, 0]
    # x from 0.1 to min(1.1, 1) = 1.0, y from 0.2 to 0.6
    torch.testing.assert_close(u, torch.tensor([0.55, 0.4, 0.9, 0.4]))


def test_refined_boxes_stay_in_unit_interval_with_extreme_heads():
    torch.manual_seed(0)
    model = mdqe.build_model("tiny").eval()
    with torch.no_grad():
        last = model.decoder.bbox_embed.layers[-1]
        last.weight.normal_(0, 50.0)
        last.bias.copy_(torch.tensor([60.0, -60.0, 80.0, -80.0]))
    with torch.no_grad():
        out = model(torch.randn(4, 3, 64, 96) * 3)
    for o in [out] + out["aux_outputs"]:
        b = o["pred_boxes"]
        assert torch.isfinite(b).all()
        assert b.min() >= 0 and b.max() <= 1
