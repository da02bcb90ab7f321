"""RLE helpers on top of pycocotools.mask (torch-free).

All masks handled here are COCO run-length encodings ("RLE"): a dict
``{"size": [h, w], "counts": str | bytes | list[int]}``. Compressed RLE
(``counts`` a string) is what YouTube-VIS / OVIS result files carry;
ground-truth files may also hold uncompressed RLE (``counts`` a list) or
polygons (a list of ``[x0, y0, x1, y1, ...]`` lists).
"""
from __future__ import annotations

import warnings
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
from pycocotools import mask as mask_utils


class FormatError(ValueError):
    """A ground-truth or results file does not follow the YouTube-VIS format."""


def _compressed_counts_total(counts: bytes) -> int:
    """Sum of the run lengths of a COCO compressed RLE string (scalar reference version).

    The format (pycocotools ``rleFrString``): each run length is written in
    5-bit groups, least significant first, each group + 48 as one ASCII
    character; bit 0x20 marks "more groups follow", bit 0x10 of the last group
    is the sign; from the third run on, values are stored as the difference to
    the run two positions earlier.
    """
    runs: List[int] = []
    pos, n = 0, len(counts)
    while pos < n:
        value, shift, more = 0, 0, True
        while more:
            if pos >= n:
                raise FormatError("truncated RLE counts string")
            c = counts[pos] - 48
            if c < 0 or c > 63:
                raise FormatError(f"invalid character {chr(counts[pos])!r} in RLE counts")
            value |= (c & 0x1F) << (5 * shift)
            more = bool(c & 0x20)
            pos += 1
            shift += 1
            if not more and (c & 0x10):
                value |= -1 << (5 * shift)
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    if any(r < 0 for r in runs):
        raise FormatError("negative run length in RLE counts")
    return int(sum(runs))


def compressed_totals(counts_list: Sequence[bytes]) -> Tuple[np.ndarray, np.ndarray]:
    """Vectorised ``_compressed_counts_total`` over many COCO RLE strings.

    Returns (totals [n] int64, bad [n] bool) where ``bad`` marks strings that
    are truncated, hold characters outside the format, absurdly long run
    values or negative run lengths (their totals are meaningless).
    """
    n = len(counts_list)
    lens = np.fromiter((len(c) for c in counts_list), np.int64, n)
    totals = np.zeros(n, np.int64)
    bad = np.zeros(n, bool)
    nchar = int(lens.sum())
    if nchar == 0:
        return totals, bad
    starts = np.cumsum(lens) - lens
    buf = np.frombuffer(b"".join(counts_list), np.uint8)
    badc = (buf < 48) | (buf > 111)
    if badc.any():
        bad[np.searchsorted(starts, np.flatnonzero(badc), side="right") - 1] = True
    c = np.where(badc, 48, buf) - np.uint8(48)            # uint8 in 0..63
    gend = (c & 0x20) == 0
    nonempty = lens > 0
    last = (starts + lens - 1)[nonempty]
    bad[nonempty] |= ~gend[last]                             # truncated string
    gend[last] = True                                        # groups never cross strings
    gstart = np.flatnonzero(np.r_[True, gend[:-1]])
    glen = np.diff(np.r_[gstart, nchar])
    if glen.max() > 11:                                      # > 55 bits: not a real mask
        bad[np.searchsorted(starts, gstart[glen > 11], side="right") - 1] = True
        glen = np.minimum(glen, 11)
    x = np.zeros(gstart.size, np.int64)
    for j in range(int(glen.max())):
        sel = np.flatnonzero(glen > j)
        x[sel] += (c[gstart[sel] + j] & 0x1F).astype(np.int64) << (5 * j)
    neg = (c[gstart + glen - 1] & 0x10) != 0
    x[neg] -= np.left_shift(np.int64(1), 5 * glen[neg])
    # undo the delta coding: run[i] = x[i] + run[i - 2] for i > 2, per string and parity
    owner = np.searchsorted(starts, gstart, side="right") - 1
    ngroups = np.bincount(owner, minlength=n)
    first = np.cumsum(ngroups) - ngroups
    idx = np.arange(gstart.size) - first[owner]
    runs = np.where(idx == 0, x, 0)
    for parity, lo in ((1, 1), (0, 2)):
        part = np.where((idx % 2 == parity) & (idx >= lo), x, 0)
        cs = np.cumsum(part)
        base = (cs - part)[first[owner]]                     # cumulative sum before this string
        runs += np.where((idx % 2 == parity) & (idx >= lo), cs - base, 0)
    bad |= np.bincount(owner, weights=runs < 0, minlength=n) > 0
    np.add.at(totals, owner, runs)
    return totals, bad


def check_rles(rles: Sequence[Any], height: int, width: int, wheres: Sequence[str]) -> List[dict]:
    """Validate compressed or uncompressed RLEs of ``height x width`` frames.

    Returns dicts with ``counts`` as bytes (what pycocotools wants); raises
    FormatError naming the offending ``wheres[i]`` on any problem.
    """
    out: List[Optional[dict]] = []
    strings, string_pos = [], []
    for i, (rle, where) in enumerate(zip(rles, wheres)):
        if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
            raise FormatError(f"{where}: expected an RLE dict with 'size' and 'counts', got {type(rle).__name__}")
        size = rle["size"]
        if (not isinstance(size, (list, tuple)) or len(size) != 2
                or not all(isinstance(s, (int, np.integer)) for s in size)):
            raise FormatError(f"{where}: RLE 'size' must be [height, width], got {size!r}")
        if int(size[0]) != height or int(size[1]) != width:
            raise FormatError(f"{where}: RLE size {list(size)} does not match the video size [{height}, {width}]")
        counts = rle["counts"]
        if isinstance(counts, str):
            if not counts.isascii():
                raise FormatError(f"{where}: RLE counts string is not ASCII")
            counts = counts.encode("ascii")
        if isinstance(counts, (bytes, bytearray)):
            strings.append(bytes(counts))
            string_pos.append(i)
            out.append({"size": [height, width], "counts": bytes(counts)})
        elif isinstance(counts, list):  # uncompressed RLE
            if not all(isinstance(c, (int, np.integer)) and c >= 0 for c in counts):
                raise FormatError(f"{where}: uncompressed RLE counts must be non-negative integers")
            if sum(counts) != height * width:
                raise FormatError(f"{where}: RLE run lengths sum to {sum(counts)}, expected {height * width}")
            out.append(mask_utils.frPyObjects({"size": [height, width], "counts": list(counts)}, height, width))
        else:
            raise FormatError(f"{where}: RLE counts must be a string or a list, got {type(counts).__name__}")
    totals, bad = compressed_totals(strings)
    for j in np.flatnonzero(bad | (totals != height * width)):
        where = wheres[string_pos[j]]
        try:  # the scalar decoder gives the precise message
            total = _compressed_counts_total(strings[j])
        except FormatError as e:
            raise FormatError(f"{where}: {e}") from None
        raise FormatError(f"{where}: RLE run lengths sum to {total}, expected {height}*{width}={height * width}")
    return out  # type: ignore[return-value]


def check_rle(rle: Any, height: int, width: int, where: str) -> dict:
    """Validate one RLE; see check_rles."""
    return check_rles([rle], height, width, [where])[0]


def to_rles(segs: Sequence[Any], height: int, width: int, where: str) -> List[Optional[dict]]:
    """Convert the per-frame segmentations of one track to compressed RLE (None where absent).

    Each entry may be None / [] (absent), an RLE dict (compressed or not) or a
    polygon list; ``where`` prefixes error messages (``where[t]``).
    """
    out: List[Optional[dict]] = [None] * len(segs)
    dict_idx = []
    for t, seg in enumerate(segs):
        if seg is None or (isinstance(seg, list) and len(seg) == 0):
            continue
        if isinstance(seg, dict):
            dict_idx.append(t)
        elif isinstance(seg, list):
            out[t] = _polygons_to_rle(seg, height, width, f"{where}[{t}]")
        else:
            raise FormatError(f"{where}[{t}]: segmentation must be null, an RLE dict or a polygon list, "
                              f"got {type(seg).__name__}")
    checked = check_rles([segs[t] for t in dict_idx], height, width, [f"{where}[{t}]" for t in dict_idx])
    for t, rle in zip(dict_idx, checked):
        out[t] = rle
    return out


def _polygons_to_rle(seg: list, height: int, width: int, where: str) -> dict:
    polys = []
    for p in seg:
        if (not isinstance(p, (list, tuple)) or len(p) < 6 or len(p) % 2
                or not all(isinstance(v, (int, float)) for v in p)):
            raise FormatError(f"{where}: polygon must be a flat list of >= 3 (x, y) pairs")
        polys.append([float(v) for v in p])
    return mask_utils.merge(mask_utils.frPyObjects(polys, height, width))


def to_rle(seg: Any, height: int, width: int, where: str) -> Optional[dict]:
    """Convert one per-frame segmentation to compressed RLE (None where absent); see to_rles."""
    if seg is None or (isinstance(seg, list) and len(seg) == 0):
        return None
    if isinstance(seg, dict):
        return check_rle(seg, height, width, where)
    if isinstance(seg, list):
        return _polygons_to_rle(seg, height, width, where)
    raise FormatError(f"{where}: segmentation must be null, an RLE dict or a polygon list, got {type(seg).__name__}")


def decode_rles(rles: Sequence[dict]) -> np.ndarray:
    """[n, H, W] bool masks of n validated RLEs of one size (pycocotools decode).

    pycocotools 2.0.x triggers a numpy-2 DeprecationWarning ("__array__
    implementation doesn't accept a copy keyword") inside decode; it is
    silenced here, nothing else is.
    """
    if len(rles) == 0:
        raise ValueError("decode_rles needs at least one RLE")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"__array__ implementation doesn't accept a copy keyword",
                                category=DeprecationWarning)
        out = mask_utils.decode(list(rles))
    return np.ascontiguousarray(out.transpose(2, 0, 1)).astype(bool)


def rle_area(rle: Optional[dict]) -> int:
    """Pixel count of one RLE (0 for None)."""
    return 0 if rle is None else int(mask_utils.area(rle))
