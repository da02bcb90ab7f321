"""Mask post-processing: stride-4 mask logits -> binary masks at the original frame size -> RLE.

Default (``resize="nearest"``), as the authors' inference does (mdqe/mdqe.py,
``inference_vis`` / ``inference_video``): the logits of the whole padded
map [h,w] are upsampled with ``aligned_bilinear`` (x4: replicate pad of one
row/column, bilinear align_corners=True to 4h+1, shift by 2), cropped to the
resized image, resized with NEAREST to the original size (torch's index rule
``floor(i * in/out)`` in float32) and thresholded at sigmoid > 0.5 (here:
logit > 0; float32 sigmoid rounds to exactly 0.5 for logits below ~2e-7).

Only the rows/columns whose bilinear neighbours include a positive logit are
computed (the result elsewhere is exactly 0), and RLEs are built from that
block, so the cost follows the mask's size, not the frame's.

``resize="bilinear"``: this project's earlier path (bilinear x4, crop,
bilinear to the original size) for the paper-style preset.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .native import postprocess as native_pp
from .preprocess import FrameGeometry
from .rle import decode_rle, rle_from_block, rles_from_counts

Block = Tuple[int, int, np.ndarray]      # (y0, x0, bool [bh, bw]) inside an [H0, W0] frame


class FrameMaps:
    """Final mask logits of one frame, one [h,w] float32 map per track: map i (track ``ids[i]``) is
    ``sums[rows[i], pos] / counts[i]`` of the tracker's logit sums [*, T, h, w] (the mean over the
    clips that matched the track), read in place: valid until the tracker's next call. ``bits``
    (optional, [n, wpf] uint64): the bit sets of those sums > 0 (runtime/native/postprocess.py), which
    bound the native kernel's work. ``FrameMaps.stack(ids, maps)`` wraps ready maps (counts 1)."""
    __slots__ = ("ids", "sums", "rows", "pos", "counts", "bits")

    def __init__(self, ids: Sequence[int], sums: np.ndarray, rows: np.ndarray, pos: int, counts: np.ndarray,
                 bits: Optional[np.ndarray] = None):
        self.ids, self.sums, self.pos = list(ids), sums, int(pos)
        self.rows, self.counts = np.asarray(rows, np.int64), np.asarray(counts, np.int32)
        self.bits = bits

    @classmethod
    def stack(cls, ids: Sequence[int], maps: Sequence[np.ndarray]) -> "FrameMaps":
        if not len(maps):
            return cls([], np.zeros((0, 1, 1, 1), np.float32), [], 0, [])
        sums = np.stack([np.asarray(m, np.float32) for m in maps])[:, None]
        return cls(ids, sums, np.arange(len(maps)), 0, np.ones(len(maps), np.int32))

    def __len__(self) -> int:
        return len(self.ids)

    def maps(self) -> np.ndarray:
        """[n,h,w] float32 mean logits (a copy)."""
        return self.sums[self.rows, self.pos] / self.counts.astype(np.float32)[:, None, None]

    def items(self) -> List[Tuple[int, np.ndarray]]:
        """[(track id, [h,w] logits)]."""
        return list(zip(self.ids, self.maps()))


def nearest_index(n_out: int, n_in: int) -> np.ndarray:
    """torch ``interpolate(mode="nearest")`` source index of each of n_out outputs."""
    if n_out == n_in:
        return np.arange(n_out, dtype=np.int64)
    scale = np.float32(n_in) / np.float32(n_out)
    idx = np.floor(np.arange(n_out, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(idx, n_in - 1)


def aligned_bilinear_taps(n_low: int, out_index: np.ndarray, factor: int):
    """For output positions ``out_index`` of aligned_bilinear(x, factor) along one axis of length
    n_low: (i0, i1, w0, w1) with value = w0 * x[i0] + w1 * x[i1] (torch's align_corners rule)."""
    o = np.maximum(out_index - factor // 2, 0)
    src = o.astype(np.float32) * (np.float32(n_low) / np.float32(factor * n_low))
    i0 = np.floor(src).astype(np.int64)
    w1 = (src - i0.astype(np.float32)).astype(np.float32)
    w0 = (np.float32(1.0) - w1).astype(np.float32)
    i1 = np.where(i0 < n_low, i0 + 1, i0)           # padded input has n_low + 1 rows (replicate)
    return np.minimum(i0, n_low - 1), np.minimum(i1, n_low - 1), w0, w1


class MaskPostprocessor:
    """Turn stride-``stride`` mask logits [h,w] into binary masks at the original frame size.

    ``block(logits)`` -> (y0, x0, bool block) or None when the mask is empty at the original
    size; ``rle(block)`` -> COCO RLE or None; ``paste(block)`` -> uint8 [H0,W0];
    ``__call__(logits)`` -> uint8 [H0,W0].
    """

    def __init__(self, geometry: FrameGeometry, stride: int = 4, resize: str = "nearest"):
        if resize not in ("nearest", "bilinear"):
            raise ValueError(f"resize must be nearest or bilinear, got {resize!r}")
        self.g = geometry
        self.stride = stride
        self.resize = resize
        self._axes = {}
        self._native_taps = {}

    def valid_hw(self):
        """(h, w) of the valid (unpadded) area at mask resolution."""
        rh, rw = self.g.resized
        s = self.stride
        return (rh + s - 1) // s, (rw + s - 1) // s

    def _taps(self, h: int, w: int):
        key = (h, w)
        if key not in self._axes:
            (rh, rw), (H0, W0) = self.g.resized, self.g.original
            ys = aligned_bilinear_taps(h, nearest_index(H0, rh), self.stride)
            xs = aligned_bilinear_taps(w, nearest_index(W0, rw), self.stride)
            self._axes[key] = (ys, xs)
        return self._axes[key]

    def block(self, logits: np.ndarray) -> Optional[Block]:
        """The part of the final mask that can be non-zero, as (y0, x0, bool [bh, bw]); None if empty."""
        if self.resize == "bilinear":
            m = self._bilinear(logits)
            return (0, 0, m.astype(bool)) if m.any() else None
        h, w = logits.shape
        pos = logits > 0
        rows = np.flatnonzero(pos.any(axis=1))
        if rows.size == 0:
            return None
        cols = np.flatnonzero(pos.any(axis=0))
        (r0, r1, a0, a1), (c0, c1, b0, b1) = self._taps(h, w)
        # outputs whose taps reach the positive rows/cols (taps are monotone in the output index)
        ya, yb = np.searchsorted(r1, rows[0], "left"), np.searchsorted(r0, rows[-1], "right")
        xa, xb = np.searchsorted(c1, cols[0], "left"), np.searchsorted(c0, cols[-1], "right")
        if ya >= yb or xa >= xb:
            return None
        R0, R1, A0, A1 = r0[ya:yb], r1[ya:yb], a0[ya:yb, None], a1[ya:yb, None]
        C0, C1, B0, B1 = c0[xa:xb], c1[xa:xb], b0[xa:xb], b1[xa:xb]
        lo, hi = R0[0], R1[-1] + 1
        sub = logits[lo:hi]
        hor = B0 * sub[:, C0] + B1 * sub[:, C1]                   # [rows, bw]
        val = A0 * hor[R0 - lo] + A1 * hor[R1 - lo]               # [bh, bw]
        blk = val > 0
        if not blk.any():
            return None
        return int(ya), int(xa), blk

    def finals(self, maps, with_masks: bool = False) -> List[Tuple[Optional[np.ndarray], Optional[dict]]]:
        """Final masks of several [h,w] logit maps (a sequence, or FrameMaps read in place): [(uint8
        [H0,W0] or None when not ``with_masks``, COCO RLE)] with (None, None) for a mask empty at the
        original size. The native kernel (runtime/native/postprocess.py) when loaded and
        ``resize="nearest"``, else ``block``/``rle`` (same results)."""
        if not len(maps):
            return []
        if self.resize == "nearest" and native_pp.available():
            fm = maps if isinstance(maps, FrameMaps) else FrameMaps.stack(range(len(maps)), maps)
            hw = fm.sums.shape[2:]
            taps = self._native_taps.get(hw)
            if taps is None:
                taps = self._native_taps[hw] = native_pp.prepare_taps(*self._taps(*hw))
            H0, W0 = self.g.original
            runs = native_pp.mask_runs(fm.sums, taps, fm.rows, fm.pos, divisors=fm.counts, bits=fm.bits)
            live = [i for i, r in enumerate(runs) if r is not None]
            rles = rles_from_counts([runs[i] for i in live], H0, W0)
            out: List[Tuple[Optional[np.ndarray], Optional[dict]]] = [(None, None)] * len(fm)
            for i, r in zip(live, rles):
                out[i] = (decode_rle(r) if with_masks else None, r)
            return out
        if isinstance(maps, FrameMaps):
            maps = maps.maps()
        out = []
        for m in maps:
            b = self.block(m)
            if b is None:
                out.append((None, None))
            else:
                out.append((self.paste(b) if with_masks else None, self.rle(b)))
        return out

    def _bilinear(self, logits: np.ndarray) -> np.ndarray:
        h, w = logits.shape
        s = self.stride
        rh, rw = self.g.resized
        H0, W0 = self.g.original
        up = cv2.resize(np.ascontiguousarray(logits, np.float32), (w * s, h * s), interpolation=cv2.INTER_LINEAR)
        up = up[:rh, :rw]
        if (rh, rw) != (H0, W0):
            up = cv2.resize(up, (W0, H0), interpolation=cv2.INTER_LINEAR)
        return (up > 0).astype(np.uint8)

    def rle(self, blk: Optional[Block]) -> Optional[dict]:
        """COCO RLE (compressed ``counts`` str) of a block at the original size; None if empty."""
        if blk is None:
            return None
        H0, W0 = self.g.original
        return rle_from_block(H0, W0, *blk)

    def paste(self, blk: Optional[Block]) -> np.ndarray:
        """uint8 [H0,W0] mask of a block (zeros for None)."""
        H0, W0 = self.g.original
        out = np.zeros((H0, W0), np.uint8)
        if blk is not None:
            y0, x0, b = blk
            out[y0:y0 + b.shape[0], x0:x0 + b.shape[1]] = b
        return out

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        return self.paste(self.block(logits))
