"""The C++ CPU kernel (runtime.native.msda, no torch) against the grid_sample reference
(mdqe.ops.ms_deform_attn_torch): randomized shapes, border locations, layouts, bad arguments."""
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mdqe.ops import ms_deform_attn_torch
from runtime.native import msda

TOL = 1e-5


def make_inputs(rng, N, M, D, Lq, P, shapes, special_fraction=0.5):
    shapes = np.asarray(shapes, dtype=np.int64).reshape(-1, 2)
    L = len(shapes)
    areas = shapes[:, 0] * shapes[:, 1]
    starts = np.concatenate([[0], np.cumsum(areas)[:-1]]).astype(np.int64)
    S = int(areas.sum())
    value = rng.uniform(-1, 1, (N, S, M, D)).astype(np.float32)
    loc = rng.uniform(-0.3, 1.3, (N, Lq, M, L, P, 2)).astype(np.float32)
    # Border locations per level: 0, 1, pixel centres (k+0.5)/size, pixel edges k/size, just outside.
    for lvl in range(L):
        for axis, size in ((0, shapes[lvl, 1]), (1, shapes[lvl, 0])):
            view = loc[:, :, :, lvl, :, axis]
            k = rng.integers(-1, size + 2, view.shape)
            kind = rng.integers(0, 5, view.shape)
            special = np.select([kind == 0, kind == 1, kind == 2, kind == 3],
                                [np.float32(0.0), np.float32(1.0), (k + 0.5) / size, k / size],
                                np.where(rng.random(view.shape) < 0.5, -1e-7, 1 + 1e-7))
            mask = rng.random(view.shape) < special_fraction
            view[mask] = special[mask].astype(np.float32)
    attn = rng.uniform(0, 1, (N, Lq, M, L, P)).astype(np.float32)
    return value, shapes, starts, loc, attn


def reference(value, shapes, starts, loc, attn):
    out = ms_deform_attn_torch(*(torch.from_numpy(a) for a in (value, shapes, starts, loc, attn)))
    return out.numpy()


def assert_matches(args, num_threads=0):
    out = msda.ms_deform_attn_cpu(*args, num_threads=num_threads)
    ref = reference(*args)
    assert out.shape == ref.shape and out.dtype == np.float32
    err = float(np.abs(out - ref).max()) if out.size else 0.0
    assert err <= TOL, f"max abs error {err}"


def test_library_is_built():
    assert msda.is_available(), "libmdqe_msda.so missing: `pip install -e .` builds it"
    assert Path(msda.library_path()).is_file()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(N=st.integers(1, 2), M=st.integers(1, 3), D=st.integers(1, 9), Lq=st.integers(1, 6), P=st.integers(1, 4),
       shapes=st.lists(st.tuples(st.integers(1, 7), st.integers(1, 7)), min_size=1, max_size=4),
       seed=st.integers(0, 2**31 - 1), threads=st.integers(0, 3))
def test_matches_grid_sample_random(N, M, D, Lq, P, shapes, seed, threads):
    assert_matches(make_inputs(np.random.default_rng(seed), N, M, D, Lq, P, shapes), threads)


@pytest.mark.parametrize("loc_value", [0.0, 1.0, 0.5, -1e-7, 1 + 1e-7, -0.5, 1.5, -5.0, 7.0])
def test_exact_border_locations(loc_value):
    rng = np.random.default_rng(1)
    value, shapes, starts, loc, attn = make_inputs(rng, 1, 2, 3, 4, 2, [(3, 5), (2, 2)], special_fraction=0)
    loc[...] = loc_value
    assert_matches((value, shapes, starts, loc, attn))


def test_pixel_centres_and_edges_of_every_pixel():
    rng = np.random.default_rng(2)
    H, W = 4, 6
    ys, xs = np.meshgrid(np.arange(-1, 2 * H + 2) / (2 * H), np.arange(-1, 2 * W + 2) / (2 * W), indexing="ij")
    grid = np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float32)  # every centre and every edge
    value, shapes, starts, _, _ = make_inputs(rng, 1, 2, 4, 1, 1, [(H, W)])
    loc = grid.reshape(1, -1, 1, 1, 1, 2).repeat(2, axis=2)
    attn = np.ones(loc.shape[:-1], np.float32)
    assert_matches((value, shapes, starts, loc, attn))


def test_single_level_single_point_1x1():
    rng = np.random.default_rng(3)
    assert_matches(make_inputs(rng, 2, 2, 5, 7, 1, [(1, 1)]))


def test_tca_layout_frames_as_levels():
    # One feature level of T=4 frames: value [1, T*H*W, M, D], spatial_shapes = (H, W) repeated T times.
    rng = np.random.default_rng(4)
    T, H, W = 4, 6, 10
    value, shapes, starts, loc, attn = make_inputs(rng, 1, 4, 8, 20, 4, [(H, W)] * T)
    assert list(starts) == [t * H * W for t in range(T)]
    assert_matches((value, shapes, starts, loc, attn))


def test_multi_scale_encoder_like_shape_multithreaded():
    rng = np.random.default_rng(5)
    shapes = [(12, 20), (6, 10), (3, 5), (2, 3)]
    S = sum(h * w for h, w in shapes)
    assert_matches(make_inputs(rng, 1, 8, 32, S, 4, shapes), num_threads=2)


def test_empty_queries():
    rng = np.random.default_rng(6)
    value, shapes, starts, loc, attn = make_inputs(rng, 1, 2, 4, 0, 2, [(2, 3)])
    assert msda.ms_deform_attn_cpu(value, shapes, starts, loc, attn).shape == (1, 0, 8)


def test_non_contiguous_and_float64_inputs_are_converted():
    rng = np.random.default_rng(7)
    value, shapes, starts, loc, attn = make_inputs(rng, 1, 2, 4, 5, 2, [(3, 4), (2, 2)])
    value_f = np.asfortranarray(value.astype(np.float64))
    ref = reference(value, shapes, starts, loc, attn)
    out = msda.ms_deform_attn_cpu(value_f, shapes.astype(np.int32), starts, loc, attn)
    assert np.abs(out - ref).max() <= TOL


def _valid():
    return make_inputs(np.random.default_rng(8), 1, 2, 4, 3, 2, [(3, 4), (2, 2)])


@pytest.mark.parametrize("mutate, message", [
    (lambda a: (a[0], a[1], np.array([0, 11]), a[3], a[4]), r"level_start_index\[1\] = 11"),
    (lambda a: (a[0][:, :-1], *a[1:]), r"S = 15 pixels but spatial_shapes sum to 16"),
    (lambda a: (a[0], np.array([[3, 4], [0, 2]]), *a[2:]), r"spatial_shapes\[1\] = \(0, 2\)"),
    (lambda a: (a[0], a[1][:, :1], *a[2:]), r"spatial_shapes must be \[L,2\]"),
    (lambda a: (a[0], a[1], a[2][:1], a[3], a[4]), r"level_start_index must be \[L=2\]"),
    (lambda a: (a[0][0], *a[1:]), r"value must be \[N,S,M,D\]"),
    (lambda a: (a[0], a[1], a[2], a[3][:, :, :1], a[4]), r"sampling_locations must be \[N=1,Lq,M=2,L=2,P,2\]"),
    (lambda a: (*a[:4], a[4][..., :1]), r"attention_weights must have shape"),
    (lambda a: (a[0], a[1].astype(np.float32), *a[2:]), r"spatial_shapes must be an integer array"),
])
def test_invalid_arguments_raise_clear_errors(mutate, message):
    with pytest.raises(ValueError, match=message):
        msda.ms_deform_attn_cpu(*mutate(_valid()))


def test_negative_thread_count_rejected():
    with pytest.raises(ValueError, match="num_threads"):
        msda.ms_deform_attn_cpu(*_valid(), num_threads=-1)
