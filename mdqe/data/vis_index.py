"""Torch-free index of a YouTube-VIS / OVIS annotation file (and of COCO image files).

``load_vis_index(json_path, image_root)`` parses the JSON once and keeps, per
video, its frame paths and its instances (category label, instance id,
per-frame segmentation in the file's own encoding). Masks are decoded lazily
for the sampled frames only (``VISIndex.decode``).

Labels are 0-based: ``label = category_ids.index(category_id)`` with
``category_ids`` the file's category ids sorted ascending (a results writer
maps back with ``category_ids[label]``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from mdqe.evaluation.io import _read_json
from mdqe.evaluation.rle import FormatError, decode_rles, to_rles


@dataclass
class VISInstance:
    id: int
    label: int
    segmentations: List[object]  # per frame: RLE / polygons / None, as in the file
    iscrowd: bool = False


@dataclass
class VISVideo:
    id: int
    height: int
    width: int
    frame_paths: List[str]
    instances: List[VISInstance] = field(default_factory=list)

    @property
    def length(self) -> int:
        return len(self.frame_paths)


@dataclass
class VISIndex:
    videos: List[VISVideo]
    category_ids: List[int]
    category_names: List[str]

    def decode(self, video: VISVideo, instance: VISInstance, frames: Sequence[int]) -> np.ndarray:
        """[len(frames), H, W] bool mask of ``instance`` on the given frame indices (False where absent)."""
        out = np.zeros((len(frames), video.height, video.width), bool)
        rles = to_rles([instance.segmentations[f] for f in frames], video.height, video.width,
                       f"video {video.id} instance {instance.id} frames {list(frames)}")
        present = [i for i, r in enumerate(rles) if r is not None]
        if present:
            out[present] = decode_rles([rles[i] for i in present])
        return out


def load_vis_index(json_path: str, image_root: str, skip_crowd: bool = True) -> VISIndex:
    """Index a YouTube-VIS / OVIS JSON; frame paths are ``image_root/<file_name>``."""
    data = _read_json(json_path, "annotation")
    for key in ("videos", "annotations", "categories"):
        if key not in data:
            raise FormatError(f"{json_path}: missing top-level key {key!r}")
    cat_ids = sorted(int(c["id"]) for c in data["categories"])
    names = {int(c["id"]): str(c.get("name", c["id"])) for c in data["categories"]}
    label_of = {c: i for i, c in enumerate(cat_ids)}
    videos: Dict[int, VISVideo] = {}
    for i, v in enumerate(data["videos"]):
        for key in ("id", "height", "width", "file_names"):
            if key not in v:
                raise FormatError(f"{json_path}: videos[{i}] missing key {key!r}")
        paths = [os.path.join(image_root, fn) for fn in v["file_names"]]
        videos[int(v["id"])] = VISVideo(int(v["id"]), int(v["height"]), int(v["width"]), paths)
    for i, a in enumerate(data["annotations"]):
        for key in ("id", "video_id", "category_id", "segmentations"):
            if key not in a:
                raise FormatError(f"{json_path}: annotations[{i}] missing key {key!r}")
        vid, cid = int(a["video_id"]), int(a["category_id"])
        if vid not in videos:
            raise FormatError(f"{json_path}: annotations[{i}] has unknown video_id {vid}")
        if cid not in label_of:
            raise FormatError(f"{json_path}: annotations[{i}] has unknown category_id {cid}")
        video = videos[vid]
        if len(a["segmentations"]) != video.length:
            raise FormatError(f"{json_path}: annotations[{i}] has {len(a['segmentations'])} segmentations, "
                              f"video {vid} has {video.length} frames")
        crowd = bool(a.get("iscrowd", 0))
        if crowd and skip_crowd:
            continue
        video.instances.append(VISInstance(int(a["id"]), label_of[cid], list(a["segmentations"]), crowd))
    return VISIndex([videos[k] for k in sorted(videos)], cat_ids, [names[c] for c in cat_ids])


def find_split(root: str, split: Optional[str]) -> str:
    """Path of ``root/annotations/<split>.json``; with split None the only (or 'train', else first) file."""
    ann_dir = os.path.join(root, "annotations")
    if split is not None:
        path = os.path.join(ann_dir, f"{split}.json")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"annotation file not found: {path}")
        return path
    if not os.path.isdir(ann_dir):
        raise FileNotFoundError(f"no annotations/ folder in {root}")
    files = sorted(f for f in os.listdir(ann_dir) if f.endswith(".json"))
    if not files:
        raise FileNotFoundError(f"no annotation JSON in {ann_dir}")
    return os.path.join(ann_dir, "train.json" if "train.json" in files else files[0])
