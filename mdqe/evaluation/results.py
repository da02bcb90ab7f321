"""Writing YouTube-VIS results files (torch-free).

A results file is a JSON list of
``{"video_id", "category_id", "score", "segmentations": [RLE | null] * length}``
with compressed RLE ``counts`` as utf-8 strings, at the video's resolution.
"""
from __future__ import annotations

from typing import Any, Iterable, List, Optional, Sequence

import numpy as np

from runtime.rle import encode_rles


def make_result(video_id: int, category_id: int, score: float,
                masks: Sequence[Optional[np.ndarray]]) -> dict:
    """One result entry from per-frame binary masks ([H, W] arrays, or None where absent).

    An all-zero mask is written as null (no detection on that frame).
    """
    rles = iter(encode_rles([m for m in masks if m is not None]))
    segs = [None if m is None else next(rles) for m in masks]
    return {"video_id": int(video_id), "category_id": int(category_id), "score": float(score),
            "segmentations": segs}


def write_json_atomic(obj: Any, path: str, indent: Optional[int] = None) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file in the same folder and a rename."""
    from runtime.atomic import write_json
    write_json(path, obj, indent=indent)


def save_results(results: Iterable[dict], path: str) -> List[dict]:
    """Write a results list atomically; returns it as a list."""
    results = list(results)
    write_json_atomic(results, path)
    return results
