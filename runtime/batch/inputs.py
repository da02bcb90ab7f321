"""What to run: the videos of a batch, from a dataset, a folder or a list file.

``discover_videos(spec, frames_root=None) -> (items, dataset_json or None)``:

- a YouTube-VIS / OVIS annotation JSON (``{"videos": [{"id", "file_names"}...]}``): one item per
  video, in the file's order, ``video_id`` = the dataset's id, frames = ``file_names`` joined to the
  frames folder (``--frames-root``, else ``<json dir>/JPEGImages``, ``<json dir>/../JPEGImages``,
  ``<json dir>``); the key (output folder name) is the folder of the video's frames;
- a folder holding ``annotations/*.json`` and ``JPEGImages/`` (the dataset layout): as above with
  its single annotation file (several: name the one to use);
- a folder of video files (``.mp4 .avi .mov .mkv .webm .m4v .mpg .mpeg``) and/or of sub-folders of
  images (one video each): sorted by name, ``video_id`` 1..N in that order;
- a text file with one video path (file or folder of frames) per line (``#`` comments, blank lines
  ignored; relative paths are relative to the list file): ``video_id`` 1..N in list order.

Keys are unique (a repeated base name gets ``__2``, ``__3`` ...) and stable for the same input,
so a rerun finds the videos it already finished. Bad input raises BatchInputError (one line).
"""
from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from ..errors import RuntimeErrorBase
from ..video import IMAGE_EXTENSIONS

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


class BatchInputError(RuntimeErrorBase):
    """The --videos input (dataset, folder or list) or the output folder cannot be used."""


@dataclass(frozen=True)
class VideoItem:
    """One video of the batch (plain data: travels to Ray actors and worker processes).

    key: output folder name (unique in the batch); video_id: ``video_id`` in results.json;
    source: video file or folder of frames (None when ``frames`` is given); frames: image files in
    order (dataset videos).
    """
    key: str
    video_id: int
    source: Optional[str] = None
    frames: Tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        """Where the video comes from (summary, resume checks)."""
        if self.source is not None:
            return self.source
        return os.path.dirname(self.frames[0]) if self.frames else ""

    def open(self, max_frames: Optional[int] = None):
        """The frame source (runtime.video) of this video; raises VideoError."""
        from ..video import FrameListSource, FrameSource
        if self.source is not None:
            return FrameSource(self.source, max_frames=max_frames)
        return FrameListSource(list(self.frames), name=self.key, max_frames=max_frames)


def _unique_keys(names: List[str]) -> List[str]:
    seen: Dict[str, int] = {}
    out = []
    for n in names:
        n = n.replace(os.sep, "_") or "video"
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}__{seen[n]}")
    return out


def _is_frames_folder(path: str) -> bool:
    try:
        return any(f.lower().endswith(IMAGE_EXTENSIONS) for f in os.listdir(path))
    except OSError:
        return False


def _frames_root(json_path: str, frames_root: Optional[str], file_names: List[str]) -> str:
    if frames_root is not None:
        if not os.path.isdir(frames_root):
            raise BatchInputError(f"--frames-root not found: {frames_root}")
        return frames_root
    base = os.path.dirname(os.path.abspath(json_path))
    candidates = [os.path.join(base, "JPEGImages"), os.path.join(os.path.dirname(base), "JPEGImages"), base]
    for c in candidates:
        if file_names and os.path.isfile(os.path.join(c, file_names[0])):
            return c
    raise BatchInputError(f"frames of {json_path} not found (looked for {file_names[0] if file_names else '?'} "
                          f"under {', '.join(candidates)}); pass --frames-root DIR")


def from_dataset(json_path: str, frames_root: Optional[str] = None) -> List[VideoItem]:
    """Items of a YouTube-VIS / OVIS annotation file (see the module docstring)."""
    try:
        with open(json_path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise BatchInputError(f"cannot read dataset {json_path}: {e}") from None
    videos = data.get("videos") if isinstance(data, dict) else None
    if not isinstance(videos, list) or not videos:
        raise BatchInputError(f"{json_path} has no 'videos' list (not a YouTube-VIS / OVIS annotation file)")
    for v in videos:
        if not isinstance(v, dict) or "id" not in v or not v.get("file_names"):
            raise BatchInputError(f"{json_path}: every video needs 'id' and a non-empty 'file_names'")
    ids = [v["id"] for v in videos]
    if len(set(ids)) != len(ids):
        raise BatchInputError(f"{json_path}: repeated video ids")
    root = _frames_root(json_path, frames_root, videos[0]["file_names"])
    names = [os.path.dirname(v["file_names"][0]) or str(v["id"]) for v in videos]
    return [VideoItem(key=k, video_id=int(v["id"]),
                      frames=tuple(os.path.join(root, fn) for fn in v["file_names"]))
            for k, v in zip(_unique_keys(names), videos)]


def from_paths(paths: List[str]) -> List[VideoItem]:
    """Items for video files / frame folders, ``video_id`` 1..N in the given order."""
    names = [os.path.basename(os.path.normpath(p)) for p in paths]
    return [VideoItem(key=k, video_id=i + 1, source=p) for i, (k, p) in enumerate(zip(_unique_keys(names), paths))]


def from_folder(folder: str) -> List[VideoItem]:
    """Video files and frame sub-folders of ``folder``, sorted by name."""
    paths = []
    for name in sorted(os.listdir(folder)):
        p = os.path.join(folder, name)
        if os.path.isfile(p) and name.lower().endswith(VIDEO_EXTENSIONS):
            paths.append(p)
        elif os.path.isdir(p) and _is_frames_folder(p):
            paths.append(p)
    if not paths:
        raise BatchInputError(f"no videos in {folder} (video files {' '.join(VIDEO_EXTENSIONS)}, folders of "
                              "images, or a dataset layout annotations/*.json + JPEGImages/)")
    return from_paths(paths)


def from_list(list_path: str) -> List[VideoItem]:
    """Items of a list file: one path per line (see the module docstring)."""
    base = os.path.dirname(os.path.abspath(list_path))
    paths = []
    with open(list_path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                paths.append(line if os.path.isabs(line) else os.path.join(base, line))
    if not paths:
        raise BatchInputError(f"list file {list_path} names no videos")
    return from_paths(paths)


def discover_videos(spec: str, frames_root: Optional[str] = None) -> Tuple[List[VideoItem], Optional[str]]:
    """Items for ``--videos spec``; the second value is the dataset JSON when the input is a dataset."""
    if not os.path.exists(spec):
        raise BatchInputError(f"--videos not found: {spec}")
    if os.path.isdir(spec):
        anns = sorted(glob.glob(os.path.join(spec, "annotations", "*.json")))
        if anns and os.path.isdir(os.path.join(spec, "JPEGImages")):
            if len(anns) > 1:
                raise BatchInputError(f"{spec} holds {len(anns)} annotation files "
                                      f"({', '.join(os.path.basename(a) for a in anns)}); pass one as --videos")
            return from_dataset(anns[0], frames_root), anns[0]
        return from_folder(spec), None
    if spec.lower().endswith(".json"):
        return from_dataset(spec, frames_root), spec
    if spec.lower().endswith(VIDEO_EXTENSIONS):
        return from_paths([spec]), None
    return from_list(spec), None
