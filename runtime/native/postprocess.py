"""Torch-free ctypes binding of the post-processing kernels in libmdqe_msda.so
(trt_plugins/include/mdqe_msda/postprocess_cpu.h).

The per-clip filter (runtime.clip_filter), the tracker's mask IoU (runtime.tracker) and the final
masks' RLE (runtime.masks) use these when the library has them, and their numpy form otherwise
(the tests check both give the same results). ``MDQE_POSTPROCESS=numpy`` in the environment forces
the numpy form (``use_native(False)`` does the same in-process).

    scan_candidates(masks [Q,T,h,w], idx [K], F, frame_step) -> ScanResult (soft [K,P] sample sigmoid,
        nonblank, mask-quality terms, soft sums, hard pixels, bits [K,F,wpf] of logits > 0)
    soft_iou_max(scan, rows [n]) -> [n] float32
    positive_bits(X [*,T,h,w], rx [n], fx [F]) -> [n,F,wpf] uint64 bit sets of X > 0
    bit_intersections(A [*,TA,wpf], ra [na], fa [F], B [*,TB,wpf], rb [nb], fb [F])
        -> inter [na,nb] int64, area_a [na], area_b [nb]
    accumulate(S [*,TS,h,w], rs [n], fs [F], X [*,TX,h,w], rx [n], bits=None)
        (in place: S[rs[k], fs[f]] += X[rx[k], f]; bits [*,TS,wpf] refreshed for those maps)
    mask_runs(L [n,h,w], (r0, r1, a0, a1) over H, (c0, c1, b0, b1) over W)
        -> list of n uint32 run-length arrays (column-major, COCO order) or None for empty masks
"""
from __future__ import annotations

import ctypes
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
                        ("mdqe_pp_scan_candidates", [_P, _I, _I, _I, _P, _I, _I, _I, _P, _P, _P, _P, _P, _P, _P, _P]),
                        ("mdqe_pp_soft_iou_max", [_P, _I, _I, _P, _I, _P, _P, _P, _P]),
                        ("mdqe_pp_positive_bits", [_P, _I, _P, _I, _P, _I, _I, _I, _P]),
                        ("mdqe_pp_bit_intersections", [_P, _I, _P, _I, _P, _P, _I, _P, _I, _P, _I, _I, _P, _P, _P]),
                        ("mdqe_pp_accumulate", [_P, _I, _P, _P, _P, _I, _P, _I, _I, _I, _I, _P]),
                        ("mdqe_pp_mask_runs", [_P, _I, _I, _I, _P, _P, _P, _P, _I, _P, _P, _P, _P, _I, _P, _I,
                                               _P])):
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
    return a.ctypes.data


def _check(status: int, name: str) -> None:
    if status != 0:
        raise ValueError(f"{name} refused its arguments (status {status})")


_scratch = threading.local()


def scratch(name: str, shape, dtype) -> np.ndarray:
    """A reusable per-thread buffer of ``shape`` (uninitialised): fresh multi-megabyte arrays per
    clip cost more in page faults than the kernels that fill them. Valid until the next request of
    the same ``name`` in this thread."""
    pool = _scratch.__dict__.setdefault("pool", {})
    n = int(np.prod(shape))
    buf = pool.get(name)
    if buf is None or buf.dtype != np.dtype(dtype) or buf.size < n:
        buf = pool[name] = np.empty(max(n, 1), dtype)
    return buf[:n].reshape(shape)


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, np.float32)


def _i64(a) -> np.ndarray:
    return np.ascontiguousarray(a, np.int64)


class ScanResult(NamedTuple):
    """What scan_candidates gives for K candidates (P = sampled pixels per candidate)."""
    soft: np.ndarray            # [K,P] float32 sigmoid of the NMS sample
    nonblank: np.ndarray        # [K] bool: some logit > 0
    quality_sum: np.ndarray     # [K] float64: sum of sigmoid > 0.5 over the whole mask
    quality_count: np.ndarray   # [K] int64: their number
    soft_sum: np.ndarray        # [K] float64: sum of soft
    hard_count: np.ndarray      # [K] int64: soft > 0.5 in the sample
    hard_index: np.ndarray      # [K,P] int32: their positions (first hard_count[k] of row k)
    bits: np.ndarray            # [K,F,wpf] uint64 bit sets of the logits > 0


def scan_candidates(masks: np.ndarray, idx, F: int, frame_step: int) -> ScanResult:
    """See the module docstring; masks [Q,T,h,w] float32 logits, idx the K candidate queries.
    soft, hard_index and bits are scratch buffers: valid until this thread's next scan."""
    masks, idx = _f32(masks), _i64(idx)
    Q, T, h, w = masks.shape
    if idx.size and (idx.min() < 0 or idx.max() >= Q):
        raise ValueError(f"candidate index out of range [0, {Q})")
    K = idx.size
    nf = -(-int(F) // int(frame_step))
    P = nf * (h // 2) * (w // 2)
    soft = scratch("scan.soft", (K, P), np.float32)
    nonblank = np.zeros(K, np.uint8)
    qsum, ssum = np.zeros(K, np.float64), np.zeros(K, np.float64)
    qcnt, hcnt = np.zeros(K, np.int64), np.zeros(K, np.int64)
    bits = scratch("scan.bits", (K, int(F), words_per_map(h, w)), np.uint64)
    hard = scratch("scan.hard", (K, P), np.int32)
    _check(_library().mdqe_pp_scan_candidates(_ptr(masks), T, h, w, _ptr(idx), K, int(F), int(frame_step),
                                              _ptr(soft), _ptr(nonblank), _ptr(qsum), _ptr(qcnt), _ptr(ssum),
                                              _ptr(hcnt), _ptr(hard), _ptr(bits)), "mdqe_pp_scan_candidates")
    return ScanResult(soft, nonblank.astype(bool), qsum, qcnt, ssum, hcnt, hard, bits)


def soft_iou_max(scan: "ScanResult", rows) -> np.ndarray:
    """[n] max soft IoU of each of ``rows`` (rank order, indices into the scanned candidates) with
    any earlier one (0 for the first)."""
    rows = _i64(rows)
    K, P = scan.soft.shape
    if rows.size and (rows.min() < 0 or rows.max() >= K):
        raise ValueError(f"row index out of range [0, {K})")
    out = np.zeros(rows.size, np.float32)
    _check(_library().mdqe_pp_soft_iou_max(_ptr(scan.soft), K, P, _ptr(rows), rows.size, _ptr(scan.soft_sum),
                                           _ptr(scan.hard_count), _ptr(scan.hard_index), _ptr(out)),
           "mdqe_pp_soft_iou_max")
    return out


def words_per_map(h: int, w: int) -> int:
    """uint64 words of one [h, w] map's bit set: h rows of ceil(w / 64) words (bit x % 64 of word
    x // 64 of its row is pixel x)."""
    return int(h) * ((int(w) + 63) // 64)


def positive_bits(X: np.ndarray, rx, fx) -> np.ndarray:
    """[n, F, wpf] uint64 bit sets of X[rx[k], fx[f]] > 0 (X [*,T,h,w] float32)."""
    X = _f32(X)
    rx, fx = _i64(rx), _i64(fx)
    if (rx.size and (rx.min() < 0 or rx.max() >= X.shape[0])) or (fx.size and (fx.min() < 0 or fx.max() >= X.shape[1])):
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
        if (r.size and (r.min() < 0 or r.max() >= X.shape[0])) or (f.size and (f.min() < 0 or f.max() >= X.shape[1])):
            raise ValueError(f"index out of range for {name} of shape {X.shape}")
    inter = np.zeros((ra.size, rb.size), np.int64)
    area_a, area_b = np.zeros(ra.size, np.int64), np.zeros(rb.size, np.int64)
    _check(_library().mdqe_pp_bit_intersections(_ptr(A), A.shape[1], _ptr(ra), ra.size, _ptr(fa), _ptr(B),
                                                B.shape[1], _ptr(rb), rb.size, _ptr(fb), fa.size, A.shape[2],
                                                _ptr(inter), _ptr(area_a), _ptr(area_b)),
           "mdqe_pp_bit_intersections")
    return inter, area_a, area_b


def accumulate(S: np.ndarray, rs, fs, X: np.ndarray, rx, bits: Optional[np.ndarray] = None) -> None:
    """In place: S[rs[k], fs[f]] += X[rx[k], f] for every k and f < len(fs) (S [*,TS,h,w] float32
    C-contiguous, X [*,TX,h,w]; the rs[k] differ); ``bits`` [*,TS,wpf] uint64 (C-contiguous), when
    given, gets the bit sets of the updated maps."""
    if S.dtype != np.float32 or not S.flags.c_contiguous or not S.flags.writeable:
        raise ValueError("accumulate needs a writable C-contiguous float32 S")
    if bits is not None and (bits.dtype != np.uint64 or not bits.flags.c_contiguous
                             or bits.shape != S.shape[:2] + (words_per_map(*S.shape[2:]),)):
        raise ValueError(f"accumulate: bits must be C-contiguous uint64 {S.shape[:2]} + (wpf,)")
    X = _f32(X)
    rs, fs, rx = _i64(rs), _i64(fs), _i64(rx)
    if S.shape[2:] != X.shape[2:] or rs.size != rx.size or fs.size > X.shape[1]:
        raise ValueError(f"accumulate: S {S.shape}, X {X.shape}, {rs.size} rows / {rx.size} sources, {fs.size} frames")
    if rs.size and (rs.min() < 0 or rs.max() >= S.shape[0] or rx.min() < 0 or rx.max() >= X.shape[0]
                    or np.unique(rs).size != rs.size):
        raise ValueError("accumulate: row index out of range or repeated")
    if fs.size and (fs.min() < 0 or fs.max() >= S.shape[1]):
        raise ValueError("accumulate: frame index out of range")
    _check(_library().mdqe_pp_accumulate(_ptr(S), S.shape[1], _ptr(rs), _ptr(fs), _ptr(X), X.shape[1], _ptr(rx),
                                         rs.size, fs.size, S.shape[2], S.shape[3],
                                         _ptr(bits) if bits is not None else None), "mdqe_pp_accumulate")


def mask_runs(L: np.ndarray, ytaps: Sequence[np.ndarray], xtaps: Sequence[np.ndarray]) -> List[Optional[np.ndarray]]:
    """COCO run lengths of each of the n maps L [n,h,w] resampled by the taps and thresholded at 0."""
    L = _f32(L)
    n, h, w = L.shape
    r0, r1, c0, c1 = (_i64(t) for t in (ytaps[0], ytaps[1], xtaps[0], xtaps[1]))
    a0, a1, b0, b1 = (_f32(t) for t in (ytaps[2], ytaps[3], xtaps[2], xtaps[3]))
    H, W = r0.size, c0.size
    if min(r0.min(), c0.min()) < 0 or r1.max() >= h or c1.max() >= w:
        raise ValueError("resampling taps out of range of the maps")
    cap = max(4096, n * 2 * (W + 2) + n * 2)
    offsets = np.zeros(n + 1, np.int64)
    while True:
        counts = scratch("runs.counts", (cap,), np.uint32)
        status = _library().mdqe_pp_mask_runs(_ptr(L), n, h, w, _ptr(r0), _ptr(r1), _ptr(a0), _ptr(a1), H,
                                              _ptr(c0), _ptr(c1), _ptr(b0), _ptr(b1), W, _ptr(counts), cap,
                                              _ptr(offsets))
        if status == 2:                      # MDQE_PP_ERR_CAPACITY: more runs than room
            cap = n * (H * W + 2)
            continue
        _check(status, "mdqe_pp_mask_runs")
        break
    # (copies: counts is a scratch buffer)
    return [counts[offsets[i]:offsets[i + 1]].copy() if offsets[i + 1] > offsets[i] else None for i in range(n)]
