"""Load and validate YouTube-VIS / OVIS ground truth and results (torch-free).

Ground truth (docs/data_eval.md)::

    {"videos": [{"id", "width", "height", "length", "file_names"}...],
     "annotations": [{"id", "video_id", "category_id", "iscrowd",
                      "segmentations": [seg | null] * length,
                      "areas": [float | null] * length,          # optional
                      "occlusion": [label | null] * length}...], # optional (OVIS)
     "categories": [{"id", "name"}...]}

Results: a list of ``{"video_id", "category_id", "score",
"segmentations": [RLE | null] * length}``.

Everything is turned into plain Python objects (``GTVideo``, ``GTInstance``,
``Detection``) holding compressed RLEs with ``counts`` as bytes.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Union

from .rle import FormatError, check_rles, rle_area, to_rles

# OVIS occlusion labels and the scores the OVIS evaluation gives them.
OCCLUSION_SCORES = {"no_occlusion": 0.0, "slight_occlusion": 0.25, "severe_occlusion": 0.75}


@dataclass
class GTVideo:
    id: int
    height: int
    width: int
    length: int
    file_names: List[str] = field(default_factory=list)


@dataclass
class GTInstance:
    """One ground-truth track. ``masks``: [length] RLE or None per frame."""
    id: int
    video_id: int
    category_id: int
    iscrowd: bool
    masks: List[Optional[dict]]
    avg_area: float
    occlusion: Optional[List[Optional[float]]] = None  # per-frame score in [0, 1] or None
    occlusion_score: Optional[float] = None            # OVIS instance score (see occlusion_score)


@dataclass
class Detection:
    """One predicted track. ``masks``: [length] RLE or None per frame."""
    index: int  # position in the results list (ties in score keep this order)
    video_id: int
    category_id: int
    score: float
    masks: List[Optional[dict]]
    avg_area: float


@dataclass
class GroundTruth:
    videos: Dict[int, GTVideo]
    categories: Dict[int, str]
    instances: List[GTInstance]
    has_occlusion: bool


def _read_json(obj_or_path: Union[str, os.PathLike, Any], what: str) -> Any:
    if isinstance(obj_or_path, (str, os.PathLike)):
        path = os.fspath(obj_or_path)
        if os.path.isdir(path):
            raise FormatError(f"{what} {path} is a directory, not a JSON file")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{what} file not found: {path}")
        try:
            with open(path, "r", encoding="utf-8") as f:
                return json.load(f)
        except json.JSONDecodeError as e:
            raise FormatError(f"{what} file {path} is not valid JSON: {e}") from None
        except UnicodeDecodeError as e:
            raise FormatError(f"{what} file {path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at "
                              f"offset {e.start})") from None
        except RecursionError:
            raise FormatError(f"{what} file {path} is nested too deeply to be a {what} file") from None
        except OSError as e:
            raise FormatError(f"cannot read {what} file {path}: {e.strerror or e}") from None
    return obj_or_path


def _list_field(d: dict, key: str, where: str) -> list:
    v = d[key]
    if not isinstance(v, list):
        raise FormatError(f"{where}: {key!r} must be a list, got {json.dumps(v)[:40] if _jsonable(v) else type(v).__name__}")
    return v


def _jsonable(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str, list, dict))


def _require(d: Any, keys: Sequence[str], where: str) -> None:
    if not isinstance(d, dict):
        raise FormatError(f"{where}: expected an object, got {type(d).__name__}")
    missing = [k for k in keys if k not in d]
    if missing:
        raise FormatError(f"{where}: missing key(s) {missing}")


def _as_int(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v:
        raise FormatError(f"{where}: expected an integer, got {v!r}")
    return int(v)


def mean_nonzero_area(areas: Sequence[Optional[float]]) -> float:
    """Mean over frames with a non-null, non-zero area (the official ``avg_area``); 0 if none."""
    vals = [float(a) for a in areas if a]
    return sum(vals) / len(vals) if vals else 0.0


def occlusion_score(frame_scores: Sequence[Optional[float]]) -> float:
    """OVIS instance occlusion score: mean of the top ceil(n/2) of its n non-null per-frame scores."""
    vals = sorted(s for s in frame_scores if s is not None)
    if not vals:
        raise ValueError("no occlusion label on any frame")
    top = vals[len(vals) - math.ceil(len(vals) / 2):]
    return sum(top) / len(top)


def occlusion_value(label: Any, where: str) -> Optional[float]:
    """Map one per-frame occlusion label (OVIS string or number in [0, 1]) to its score."""
    if label is None:
        return None
    if isinstance(label, str):
        if label not in OCCLUSION_SCORES:
            raise FormatError(f"{where}: unknown occlusion label {label!r}; expected one of {sorted(OCCLUSION_SCORES)}")
        return OCCLUSION_SCORES[label]
    if isinstance(label, (int, float)) and not isinstance(label, bool) and 0.0 <= float(label) <= 1.0:
        return float(label)
    raise FormatError(f"{where}: occlusion label must be a string, a number in [0, 1] or null, got {label!r}")


def load_ground_truth(gt: Union[str, os.PathLike, dict]) -> GroundTruth:
    """Parse and validate a YouTube-VIS / OVIS ground-truth dict or JSON path."""
    data = _read_json(gt, "ground truth")
    _require(data, ["videos", "annotations", "categories"], "ground truth")
    categories: Dict[int, str] = {}
    for i, c in enumerate(_list_field(data, "categories", "ground truth")):
        _require(c, ["id"], f"categories[{i}]")
        categories[_as_int(c["id"], f"categories[{i}].id")] = str(c.get("name", c["id"]))
    videos: Dict[int, GTVideo] = {}
    for i, v in enumerate(_list_field(data, "videos", "ground truth")):
        where = f"videos[{i}]"
        _require(v, ["id", "width", "height"], where)
        vid = _as_int(v["id"], f"{where}.id")
        h, w = _as_int(v["height"], f"{where}.height"), _as_int(v["width"], f"{where}.width")
        if h <= 0 or w <= 0:
            raise FormatError(f"{where}: non-positive size {h}x{w}")
        names = list(v.get("file_names") or [])
        if "length" in v:
            length = _as_int(v["length"], f"{where}.length")
            if names and len(names) != length:
                raise FormatError(f"{where}: length {length} != len(file_names) {len(names)}")
        elif names:
            length = len(names)
        else:
            raise FormatError(f"{where}: needs 'length' or 'file_names'")
        if vid in videos:
            raise FormatError(f"{where}: duplicate video id {vid}")
        videos[vid] = GTVideo(vid, h, w, length, names)

    instances: List[GTInstance] = []
    occ_flags = []
    for i, a in enumerate(_list_field(data, "annotations", "ground truth")):
        where = f"annotations[{i}]"
        _require(a, ["id", "video_id", "category_id", "segmentations"], where)
        vid = _as_int(a["video_id"], f"{where}.video_id")
        cid = _as_int(a["category_id"], f"{where}.category_id")
        if vid not in videos:
            raise FormatError(f"{where}: unknown video_id {vid}")
        if cid not in categories:
            raise FormatError(f"{where}: unknown category_id {cid}")
        video = videos[vid]
        segs = a["segmentations"]
        if not isinstance(segs, list) or len(segs) != video.length:
            n = len(segs) if isinstance(segs, list) else type(segs).__name__
            raise FormatError(f"{where}: segmentations has length {n}, video {vid} has {video.length} frames")
        masks = to_rles(segs, video.height, video.width, f"{where}.segmentations")
        areas = a.get("areas")
        if areas is None:
            areas = [rle_area(m) if m is not None else None for m in masks]
        elif (not isinstance(areas, list) or len(areas) != video.length
              or not all(x is None or (isinstance(x, (int, float)) and not isinstance(x, bool)) for x in areas)):
            raise FormatError(f"{where}: areas must be a list of {video.length} numbers or nulls")
        else:
            bad = [t for t, x in enumerate(areas) if x is not None and not (math.isfinite(x) and x >= 0)]
            if bad:
                raise FormatError(f"{where}: areas[{bad[0]}] = {areas[bad[0]]!r}; areas must be finite and >= 0 "
                                  "(or null)")
        occ, occ_score = None, None
        if "occlusion" in a:
            labels = a["occlusion"]
            if not isinstance(labels, list) or len(labels) != video.length:
                raise FormatError(f"{where}: occlusion must be a list of length {video.length}")
            occ = [occlusion_value(x, f"{where}.occlusion[{t}]") for t, x in enumerate(labels)]
            if all(x is None for x in occ):
                raise FormatError(f"{where}: occlusion has no label on any frame")
            occ_score = occlusion_score(occ)
        occ_flags.append(occ is not None)
        instances.append(GTInstance(
            id=_as_int(a["id"], f"{where}.id"), video_id=vid, category_id=cid,
            iscrowd=bool(a.get("iscrowd", 0)), masks=masks,
            avg_area=mean_nonzero_area(areas), occlusion=occ, occlusion_score=occ_score))
    if any(occ_flags) and not all(occ_flags):
        missing = occ_flags.index(False)
        raise FormatError(f"annotations[{missing}]: some annotations have 'occlusion' labels and this one has none")
    return GroundTruth(videos, categories, instances, has_occlusion=bool(occ_flags) and all(occ_flags))


def load_results(results: Union[str, os.PathLike, list], gt: GroundTruth) -> List[Detection]:
    """Parse and validate a results list (or JSON path) against the ground truth ``gt``."""
    data = _read_json(results, "results")
    if not isinstance(data, list):
        raise FormatError(f"results: expected a list of detections, got {type(data).__name__}")
    dets: List[Detection] = []
    for i, r in enumerate(data):
        where = f"results[{i}]"
        _require(r, ["video_id", "category_id", "score", "segmentations"], where)
        vid = _as_int(r["video_id"], f"{where}.video_id")
        cid = _as_int(r["category_id"], f"{where}.category_id")
        if vid not in gt.videos:
            raise FormatError(f"{where}: video_id {vid} is not in the ground truth")
        if cid not in gt.categories:
            raise FormatError(f"{where}: category_id {cid} is not in the ground truth")
        score = r["score"]
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise FormatError(f"{where}: score must be a finite number, got {score!r}")
        video = gt.videos[vid]
        segs = r["segmentations"]
        if not isinstance(segs, list) or len(segs) != video.length:
            n = len(segs) if isinstance(segs, list) else type(segs).__name__
            raise FormatError(f"{where}: segmentations has length {n}, video {vid} has {video.length} frames")
        present = [t for t, s in enumerate(segs) if s is not None]
        checked = check_rles([segs[t] for t in present], video.height, video.width,
                             [f"{where}.segmentations[{t}]" for t in present])
        masks: List[Optional[dict]] = [None] * len(segs)
        for t, m in zip(present, checked):
            masks[t] = m
        dets.append(Detection(i, vid, cid, float(score), masks,
                              mean_nonzero_area([rle_area(m) if m is not None else None for m in masks])))
    return dets
