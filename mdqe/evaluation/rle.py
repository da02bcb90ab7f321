"""RLE helpers on top of pycocotools.mask (torch-free).

All masks handled here are COCO run-length encodings ("RLE"): a dict
``{"size": [h, w], "counts": str | bytes | list[int]}``. Compressed RLE
(``counts`` a string) is what YouTube-VIS / OVIS result files carry;
ground-truth files may also hold uncompressed RLE (``counts`` a list) or
polygons (a list of ``[x0, y0, x1, y1, ...]`` lists).
"""
from __future__ import annotations

from typing import Any, List, Optional

import numpy as np
from pycocotools import mask as mask_utils


class FormatError(ValueError):
    """A ground-truth or results file does not follow the YouTube-VIS format."""


def _compressed_counts_total(counts: bytes) -> int:
    """Sum of the run lengths of a COCO compressed RLE string.

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


def check_rle(rle: Any, height: int, width: int, where: str) -> dict:
    """Validate one compressed RLE of a ``height x width`` frame.

    Returns a dict with ``counts`` as bytes (what pycocotools wants).
    Raises FormatError naming ``where`` on any problem.
    """
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
        counts = counts.encode("ascii", errors="strict") if counts.isascii() else None
        if counts is None:
            raise FormatError(f"{where}: RLE counts string is not ASCII")
    if isinstance(counts, (bytes, bytearray)):
        total = _compressed_counts_total(bytes(counts))
        if total != height * width:
            raise FormatError(f"{where}: RLE run lengths sum to {total}, expected {height}*{width}={height * width}")
        return {"size": [height, width], "counts": bytes(counts)}
    if isinstance(counts, list):  # uncompressed RLE
        if not all(isinstance(c, (int, np.integer)) and c >= 0 for c in counts):
            raise FormatError(f"{where}: uncompressed RLE counts must be non-negative integers")
        if sum(counts) != height * width:
            raise FormatError(f"{where}: RLE run lengths sum to {sum(counts)}, expected {height * width}")
        out = mask_utils.frPyObjects({"size": [height, width], "counts": list(counts)}, height, width)
        return out
    raise FormatError(f"{where}: RLE counts must be a string or a list, got {type(counts).__name__}")


def to_rle(seg: Any, height: int, width: int, where: str) -> Optional[dict]:
    """Convert one per-frame ground-truth segmentation to compressed RLE.

    ``seg`` may be None / [] (absent: returns None), an RLE dict (compressed or
    not) or a polygon list. The frame size is ``height x width``.
    """
    if seg is None or (isinstance(seg, list) and len(seg) == 0):
        return None
    if isinstance(seg, dict):
        return check_rle(seg, height, width, where)
    if isinstance(seg, list):
        polys = []
        for p in seg:
            if (not isinstance(p, (list, tuple)) or len(p) < 6 or len(p) % 2
                    or not all(isinstance(v, (int, float)) for v in p)):
                raise FormatError(f"{where}: polygon must be a flat list of >= 3 (x, y) pairs")
            polys.append([float(v) for v in p])
        return mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    raise FormatError(f"{where}: segmentation must be null, an RLE dict or a polygon list, got {type(seg).__name__}")


def encode_mask(mask: np.ndarray) -> dict:
    """Encode a binary mask [H, W] to compressed RLE with ``counts`` as a utf-8 string (JSON-ready)."""
    m = np.asfortranarray(np.asarray(mask, dtype=np.uint8))
    if m.ndim != 2:
        raise ValueError(f"encode_mask expects a 2-D mask, got shape {m.shape}")
    rle = mask_utils.encode(m)
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("utf-8")}


def rle_area(rle: Optional[dict]) -> int:
    """Pixel count of one RLE (0 for None)."""
    return 0 if rle is None else int(mask_utils.area(rle))
