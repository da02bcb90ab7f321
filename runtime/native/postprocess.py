"""Torch-free ctypes binding of the post-processing kernels in libmdqe_msda.so
(trt_plugins/include/mdqe_msda/postprocess_cpu.h).

The per-clip filter (runtime.clip_filter), the tracker's mask IoU (runtime.tracker) and the final
masks' RLE (runtime.masks) use these when the library has them, and their numpy form otherwise
(the tests check both give the same results). ``MDQE_POSTPROCESS=numpy`` in the environment forces
the numpy form (``use_native(False)`` does the same in-process); ``MDQE_PP_SIMD=off`` keeps the
kernels but selects their portable bit-set paths instead of AVX2 (what non-x86 machines run).

    filter_masks(masks [Q,T,h,w], idx [K], F, frame_step) -> MaskTerms (nonblank, mask-quality terms,
        NMS sample sums, soft-IoU NMS overlap among the non-blank ones, bits [K,F,wpf] of logits > 0)
    positive_bits(X [*,T,h,w], rx [n], fx [F]) -> [n,F,wpf] uint64 bit sets of X > 0
    bit_intersections(A [*,TA,wpf], ra [na], fa [F], B [*,TB,wpf], rb [nb], fb [F])
        -> inter [na,nb] int64, area_a [na], area_b [nb]
    accumulate(S [*,TS,h,w], rs [n], fs [F], X [*,TX,h,w], rx [n], bits=None, fresh=None)
        (in place: S[rs[k], fs[f]] += X[rx[k], f], or = where fresh[k, f]; bits [*,TS,wpf] refreshed
        for those maps)
    prepare_taps((r0, r1, a0, a1) over H, (c0, c1, b0, b1) over W) -> Taps (converted, checked once)
    mask_runs(S [*,T,h,w], taps, rows [n], pos, divisors=None, bits=None)
        -> list of n uint32 run-length arrays (column-major, COCO order) or None for empty masks of
        the maps S[rows[i], pos] / divisors[i], read in place; bits [n,wpf]: the bit sets of those
        sums > 0 (bound the work)
"""
from __future__ import annotations

import ctypes
import math
import os
import threading
from typing import List, NamedTuple, Optional, Sequence

import numpy as np

from ..contract import POSTPROCESS_ABI_VERSION
from . import msda

_state = {"checked": False, "lib": None, "enabled": os.environ.get("MDQE_POSTPROCESS", "").lower() != "numpy"}
_P = ctypes.c_void_p
_I = ctypes.c_int64


def _library():
    if not _state["checked"]:
        _state["checked"] = True
        lib = msda.load_library()
        if lib is not None and hasattr(lib, "mdqe_pp_abi_version"):
            lib.mdqe_pp_abi_version.restype = ctypes.c_int
            if lib.mdqe_pp_abi_version() == POSTPROCESS_ABI_VERSION:
                for name, args in (
                        ("mdqe_pp_filter_masks", [_P, _I, _I, _I, _P, _I, _I, _I, _P, _P, _P, _P, _P, _P, _P]),
                        ("mdqe_pp_positive_bits", [_P, _I, _P, _I, _P, _I, _I, _I, _P]),
                        ("mdqe_pp_bit_intersections", [_P, _I, _P, _I, _P, _P, _I, _P, _I, _P, _I, _I, _P, _P, _P]),
                        ("mdqe_pp_accumulate", [_P, _I, _P, _P, _P, _I, _P, _P, _I, _I, _I, _I, _P]),
                        ("mdqe_pp_mask_runs", [_P, _I, _P, _I, _P, _P, _I, _I, _I, _P, _P, _P, _P, _I, _P, _P,
                                               _P, _P, _I, _P, _I, _P])):
                    fn = getattr(lib, name)
                    fn.restype, fn.argtypes = ctypes.c_int, args
                _state["lib"] = lib
    return _state["lib"]


def available() -> bool:
    """True when the kernels are loaded and not switched off (MDQE_POSTPROCESS=numpy / use_native)."""
    return _state["enabled"] and _library() is not None


def use_native(enabled: bool) -> bool:
    """Switch the native kernels on or off for this process; returns the previous setting."""
    prev = _state["enabled"]
    _state["enabled"] = bool(enabled)
    return prev


def _ptr(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]          # (cheaper than a.ctypes.data)


def _out_of_range(a: np.ndarray, hi: int) -> bool:
    """Some index of ``a`` outside [0, hi) (a Python pass for the short index lists of a clip: numpy's
    reductions cost more per call than the whole list)."""
    if a.size <= 256:
        v = a.tolist()
        return bool(v) and (min(v) < 0 or max(v) >= hi)
    return bool(a.size) and bool(a.min() < 0 or a.max() >= hi)


def _check(status: int, name: str) -> None:
    if status != 0:
        raise ValueError(f"{name} refused its arguments (status {status})")


_scratch = threading.local()


def scratch(name: str, shape, dtype) -> np.ndarray:
    """A reusable per-thread buffer of ``shape`` (uninitialised): fresh multi-megabyte arrays per
    clip cost more in page faults than the kernels that fill them. Valid until the next request of
    the same ``name`` in this thread."""
    pool = _scratch.__dict__.setdefault("pool", {})
    n = math.prod(int(d) for d in shape)
    buf = pool.get(name)
    if buf is None or buf.dtype != np.dtype(dtype) or buf.size < n:
        buf = pool[name] = np.empty(max(n, 1), dtype)
    return buf[:n].reshape(shape)


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, np.float32)


def _i64(a) -> np.ndarray:
    return np.ascontiguousarray(a, np.int64)


class MaskTerms(NamedTuple):
    """What filter_masks gives for K candidates (rank order)."""
    nonblank: np.ndarray        # [K] bool: some logit > 0
    quality_sum: np.ndarray     # [K] float64: sum of sigmoid > 0.5 over the whole mask
    quality_count: np.ndarray   # [K] int64: their number
    soft_sum: np.ndarray        # [K] float64: sum of the NMS sample's sigmoid
    hard_count: np.ndarray      # [K] int64: sample values > 0.5
    overlap: np.ndarray         # [K] float32: max soft IoU with a higher-ranked non-blank one (0: none, blank)
    bits: np.ndarray            # [K,F,wpf] uint64 bit sets of the logits > 0 (scratch)


def filter_masks(masks: np.ndarray, idx, F: int, frame_step: int) -> MaskTerms:
    """See the module docstring; masks [Q,T,h,w] float32 logits, idx the K candidate queries in rank
    order. ``bits`` is a scratch buffer: valid until this thread's next call."""
    masks, idx = _f32(masks), _i64(idx)
    Q, T, h, w = masks.shape
    if _out_of_range(idx, Q):
        raise ValueError(f"candidate index out of range [0, {Q})")
    if not 1 <= int(F) <= T or int(frame_step) < 1:
        raise ValueError(f"filter_masks: need 1 <= F <= {T} and frame_step >= 1, got {F}, {frame_step}")
    K = idx.size
    nonblank = np.zeros(K, np.uint8)
    qsum, ssum = np.zeros(K, np.float64), np.zeros(K, np.float64)
    qcnt, hcnt = np.zeros(K, np.int64), np.zeros(K, np.int64)
    overlap = np.zeros(K, np.float32)
    bits = scratch("filter.bits", (K, int(F), words_per_map(h, w)), np.uint64)
    _check(_library().mdqe_pp_filter_masks(_ptr(masks), T, h, w, _ptr(idx), K, int(F), int(frame_step),
                                           _ptr(nonblank), _ptr(qsum), _ptr(qcnt), _ptr(ssum), _ptr(hcnt),
                                           _ptr(overlap), _ptr(bits)), "mdqe_pp_filter_masks")
    return MaskTerms(nonblank.astype(bool), qsum, qcnt, ssum, hcnt, overlap, bits)


def words_per_map(h: int, w: int) -> int:
    """uint64 words of one [h, w] map's bit set: h rows of ceil(w / 64) words (bit x % 64 of word
    x // 64 of its row is pixel x)."""
    return int(h) * ((int(w) + 63) // 64)


def positive_bits(X: np.ndarray, rx, fx) -> np.ndarray:
    """[n, F, wpf] uint64 bit sets of X[rx[k], fx[f]] > 0 (X [*,T,h,w] float32)."""
    X = _f32(X)
    rx, fx = _i64(rx), _i64(fx)
    if _out_of_range(rx, X.shape[0]) or _out_of_range(fx, X.shape[1]):
        raise ValueError(f"index out of range for maps of shape {X.shape}")
    h, w = X.shape[2:]
    bits = np.empty((rx.size, fx.size, words_per_map(h, w)), np.uint64)
    _check(_library().mdqe_pp_positive_bits(_ptr(X), X.shape[1], _ptr(rx), rx.size, _ptr(fx), fx.size, h, w,
                                            _ptr(bits)), "mdqe_pp_positive_bits")
    return bits


def bit_intersections(A: np.ndarray, ra, fa, B: np.ndarray, rb, fb):
    """Pixel counts of A[ra[i], fa] & B[rb[j], fb] summed over the frames ([na, nb] int64) and the
    areas [na], [nb]; A [*,TA,wpf], B [*,TB,wpf] uint64 bit sets (positive_bits)."""
    A, B = np.ascontiguousarray(A, np.uint64), np.ascontiguousarray(B, np.uint64)
    ra, fa, rb, fb = _i64(ra), _i64(fa), _i64(rb), _i64(fb)
    if A.shape[2:] != B.shape[2:] or fa.size != fb.size:
        raise ValueError(f"bit sets {A.shape} and {B.shape} / frame lists {fa.size}, {fb.size} disagree")
    for name, r, f, X in (("A", ra, fa, A), ("B", rb, fb, B)):
        if _out_of_range(r, X.shape[0]) or _out_of_range(f, X.shape[1]):
            raise ValueError(f"index out of range for {name} of shape {X.shape}")
    inter = np.zeros((ra.size, rb.size), np.int64)
    area_a, area_b = np.zeros(ra.size, np.int64), np.zeros(rb.size, np.int64)
    _check(_library().mdqe_pp_bit_intersections(_ptr(A), A.shape[1], _ptr(ra), ra.size, _ptr(fa), _ptr(B),
                                                B.shape[1], _ptr(rb), rb.size, _ptr(fb), fa.size, A.shape[2],
                                                _ptr(inter), _ptr(area_a), _ptr(area_b)),
           "mdqe_pp_bit_intersections")
    return inter, area_a, area_b


def accumulate(S: np.ndarray, rs, fs, X: np.ndarray, rx, bits: Optional[np.ndarray] = None,
               fresh: Optional[np.ndarray] = None) -> None:
    """In place: S[rs[k], fs[f]] += X[rx[k], f] for every k and f < len(fs) (S [*,TS,h,w] float32
    C-contiguous, X [*,TX,h,w]; the rs[k] differ); where ``fresh`` [n, F] (bool) is set the map holds
    no term yet and is overwritten (its memory need not be zero). ``bits`` [*,TS,wpf] uint64
    (C-contiguous), when given, gets the bit sets of the updated maps."""
    if S.dtype != np.float32 or not S.flags.c_contiguous or not S.flags.writeable:
        raise ValueError("accumulate needs a writable C-contiguous float32 S")
    if bits is not None and (bits.dtype != np.uint64 or not bits.flags.c_contiguous
                             or bits.shape != S.shape[:2] + (words_per_map(*S.shape[2:]),)):
        raise ValueError(f"accumulate: bits must be C-contiguous uint64 {S.shape[:2]} + (wpf,)")
    X = _f32(X)
    rs, fs, rx = _i64(rs), _i64(fs), _i64(rx)
    if S.shape[2:] != X.shape[2:] or rs.size != rx.size or fs.size > X.shape[1]:
        raise ValueError(f"accumulate: S {S.shape}, X {X.shape}, {rs.size} rows / {rx.size} sources, {fs.size} frames")
    if _out_of_range(rs, S.shape[0]) or _out_of_range(rx, X.shape[0]):
        raise ValueError("accumulate: row index out of range")
    if len(set(rs.tolist())) != rs.size:
        raise ValueError("accumulate: repeated row index")
    if _out_of_range(fs, S.shape[1]):
        raise ValueError("accumulate: frame index out of range")
    if fresh is not None:
        fresh = np.ascontiguousarray(fresh, np.uint8)
        if fresh.shape != (rs.size, fs.size):
            raise ValueError(f"accumulate: fresh must be [{rs.size}, {fs.size}], got {fresh.shape}")
    _check(_library().mdqe_pp_accumulate(_ptr(S), S.shape[1], _ptr(rs), _ptr(fs), _ptr(X), X.shape[1], _ptr(rx),
                                         _ptr(fresh) if fresh is not None else None, rs.size, fs.size, S.shape[2],
                                         S.shape[3], _ptr(bits) if bits is not None else None), "mdqe_pp_accumulate")


class Taps(NamedTuple):
    """Separable resampling taps, converted and checked once (prepare_taps): rows (r0, r1, a0, a1) over
    H outputs, columns (c0, c1, b0, b1) over W; reach: the largest source row and column they read."""
    r0: np.ndarray
    r1: np.ndarray
    a0: np.ndarray
    a1: np.ndarray
    c0: np.ndarray
    c1: np.ndarray
    b0: np.ndarray
    b1: np.ndarray
    row_reach: int
    col_reach: int


def prepare_taps(ytaps: Sequence[np.ndarray], xtaps: Sequence[np.ndarray]) -> Taps:
    """Taps for mask_runs: int64 / float32 C-contiguous, checked (non-negative, equal lengths per axis)."""
    r0, r1, c0, c1 = (_i64(t) for t in (ytaps[0], ytaps[1], xtaps[0], xtaps[1]))
    a0, a1, b0, b1 = (_f32(t) for t in (ytaps[2], ytaps[3], xtaps[2], xtaps[3]))
    if not (r0.size == r1.size == a0.size == a1.size >= 1 and c0.size == c1.size == b0.size == b1.size >= 1):
        raise ValueError("resampling taps: each axis needs equal, non-empty index and weight arrays")
    if min(r0.min(), r1.min(), c0.min(), c1.min()) < 0:
        raise ValueError("resampling taps: negative source index")
    return Taps(r0, r1, a0, a1, c0, c1, b0, b1, int(max(r0.max(), r1.max())), int(max(c0.max(), c1.max())))


def mask_runs(S: np.ndarray, taps: Taps, rows, pos: int, divisors=None,
              bits: Optional[np.ndarray] = None) -> List[Optional[np.ndarray]]:
    """COCO run lengths of the n maps S[rows[i], pos] / divisors[i] (sums S [*,T,h,w] float32, read in
    place; float32 division, None: 1), resampled by ``taps`` (prepare_taps) and thresholded at 0.
    ``bits`` [n,wpf] uint64: the bit sets of the (undivided) maps > 0, exact (see positive_bits); they
    bound the pixels read, else the kernel computes them. The run-length arrays are views of a
    scratch buffer: valid until this thread's next call."""
    if S.dtype != np.float32 or not S.flags.c_contiguous or S.ndim != 4:
        raise ValueError("mask_runs: sums must be C-contiguous float32 [*, T, h, w]")
    rows = _i64(rows)
    n, TS, (h, w) = rows.size, S.shape[1], S.shape[2:]
    if _out_of_range(rows, S.shape[0]) or not 0 <= int(pos) < TS:
        raise ValueError(f"mask_runs: row or frame index out of range for sums of shape {S.shape}")
    div = None
    if divisors is not None:
        div = np.ascontiguousarray(divisors, np.int32)
        if div.shape != (n,) or (n and div.min() < 1):
            raise ValueError("mask_runs: divisors must be n integers >= 1")
    if bits is not None:
        bits = np.ascontiguousarray(bits, np.uint64)
        if bits.shape != (n, words_per_map(h, w)):
            raise ValueError(f"mask_runs: bits must be [{n}, {words_per_map(h, w)}], got {bits.shape}")
    if taps.row_reach >= h or taps.col_reach >= w:
        raise ValueError("resampling taps out of range of the maps")
    H, W = taps.r0.size, taps.c0.size
    cap = max(4096, n * 2 * (W + 2) + n * 2)
    offsets = np.zeros(n + 1, np.int64)
    while True:
        counts = scratch("runs.counts", (cap,), np.uint32)
        status = _library().mdqe_pp_mask_runs(_ptr(S), TS, _ptr(rows), int(pos), _ptr(div) if div is not None else None,
                                              _ptr(bits) if bits is not None else None, n, h, w, _ptr(taps.r0),
                                              _ptr(taps.r1), _ptr(taps.a0), _ptr(taps.a1), H, _ptr(taps.c0),
                                              _ptr(taps.c1), _ptr(taps.b0), _ptr(taps.b1), W, _ptr(counts), cap,
                                              _ptr(offsets))
        if status == 2:                      # MDQE_PP_ERR_CAPACITY: more runs than room
            cap = n * (H * W + 2)
            continue
        _check(status, "mdqe_pp_mask_runs")
        break
    bounds = offsets.tolist()
    return [counts[a:b] if b > a else None for a, b in zip(bounds[:-1], bounds[1:])]
