"""The output folder of a batch: per-video outputs, resume, merged results, summary.

Layout of ``--output OUT``::

    OUT/batch.json                  what produced the results (model, backend, per-video options)
    OUT/videos/<key>/results.json   per video, as runtime.infer writes them (+ timing.json,
    OUT/videos/<key>/timing.json      overlay.mp4, masks/ when asked for)
    OUT/videos/<key>/video.json     the video (key, video_id, source), the worker, the attempt
    OUT/results.json                all finished videos merged, in input order (atomic)
    OUT/summary.json                counts, failures with their errors, FPS overall and per worker
    OUT/metrics.json                with --evaluate

A video's folder appears in one step: its files are written into ``videos/.partial-<key>-*``
and the folder is renamed to ``videos/<key>`` (a rename is atomic), so a video folder either
holds every output of the video or does not exist. A rerun skips videos whose folder exists
and removes partial folders a killed job left. One job at a time per output folder (a lock file).
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
from typing import Dict, Iterable, List, Optional

from ..atomic import atomic_path, current_umask, file_sha256, write_json
from .inputs import BatchInputError, VideoItem

PARTIAL_PREFIX = ".partial-"


class BatchStore:
    def __init__(self, output_dir: str):
        self.out = os.path.abspath(output_dir)
        self.videos_dir = os.path.join(self.out, "videos")
        self._lock_file = None

    # -- setup ---------------------------------------------------------------
    def open(self) -> None:
        """Create the folders, take the lock (BatchInputError when another job holds it) and remove
        partial video folders left by a killed job."""
        try:
            os.makedirs(self.videos_dir, exist_ok=True)
        except OSError as e:
            raise BatchInputError(f"cannot create output folder {self.out}: {e.strerror}") from None
        self._lock_file = open(os.path.join(self.out, ".batch.lock"), "a+")
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            self._lock_file.close()
            self._lock_file = None
            if e.errno in (errno.EAGAIN, errno.EACCES):
                raise BatchInputError(f"another batch job is writing to {self.out}") from None
            raise
        for name in os.listdir(self.videos_dir):
            if name.startswith(PARTIAL_PREFIX):
                shutil.rmtree(os.path.join(self.videos_dir, name), ignore_errors=True)

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def check_config(self, config: dict) -> None:
        """Record what produces the results; refuse to mix results of a different model or options
        into an output folder that already has some."""
        path = os.path.join(self.out, "batch.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                old = json.load(f)
            if old != config:
                diff = sorted(k for k in set(old) | set(config) if old.get(k) != config.get(k))
                raise BatchInputError(f"{self.out} holds results of another configuration (differs in "
                                      f"{', '.join(diff)}); use a new --output or the same model and options")
            return
        write_json(path, config)

    # -- per video -------------------------------------------------------------
    def video_dir(self, item: VideoItem) -> str:
        return os.path.join(self.videos_dir, item.key)

    @staticmethod
    def _identity(item: VideoItem) -> dict:
        return {"key": item.key, "video_id": item.video_id, "source": item.describe(),
                "frames_listed": len(item.frames) or None}

    def is_done(self, item: VideoItem) -> bool:
        """True when the video's folder exists (it only appears complete). BatchInputError when it
        belongs to another video (the input changed under the same output folder)."""
        d = self.video_dir(item)
        if not os.path.isdir(d):
            return False
        try:
            with open(os.path.join(d, "video.json"), encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError):
            raise BatchInputError(f"{d} is not a finished video folder of runtime.batch") from None
        mine = self._identity(item)
        if any(meta.get(k) != v for k, v in mine.items()):
            raise BatchInputError(f"{d} holds the results of another video ({meta.get('source')}, video_id "
                                  f"{meta.get('video_id')}); use a new --output for this input")
        return True

    def save(self, item: VideoItem, files: Dict[str, bytes], extra: dict) -> str:
        """Write one video's files and make its folder appear in one rename. Returns the folder."""
        final = self.video_dir(item)
        partial = tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{item.key}-", dir=self.videos_dir)
        try:
            for rel, data in files.items():
                p = os.path.join(partial, *rel.split("/"))
                os.makedirs(os.path.dirname(p), exist_ok=True)
                with open(p, "wb") as f:
                    f.write(data)
            write_json(os.path.join(partial, "video.json"), {**self._identity(item), **extra})
            os.chmod(partial, 0o777 & ~current_umask())
            os.rename(partial, final)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        return final

    def video_timing(self, item: VideoItem) -> Optional[dict]:
        p = os.path.join(self.video_dir(item), "timing.json")
        try:
            with open(p, encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    # -- whole batch -------------------------------------------------------------
    def merge_results(self, items: Iterable[VideoItem], path: Optional[str] = None) -> dict:
        """Write OUT/results.json: the entries of every finished video's results.json, videos in
        input order, one entry per line (the layout of runtime.infer's results.json). One video's
        entries are in memory at a time. Returns {"videos", "entries", "path"}."""
        path = path or os.path.join(self.out, "results.json")
        n_videos = n_entries = 0
        with atomic_path(path, suffix=".json") as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write("[")
                for item in items:
                    p = os.path.join(self.video_dir(item), "results.json")
                    if not os.path.isdir(self.video_dir(item)):
                        continue
                    with open(p, encoding="utf-8") as g:
                        entries = json.load(g)
                    for e in entries:
                        f.write(("," if n_entries else "") + "\n" + json.dumps(e, separators=(",", ":")))
                        n_entries += 1
                    n_videos += 1
                f.write("\n]\n")
        return {"videos": n_videos, "entries": n_entries, "path": path}

    def write_summary(self, summary: dict) -> str:
        path = os.path.join(self.out, "summary.json")
        write_json(path, summary)
        return path


def batch_config(run_ns, model_dir: Optional[str]) -> dict:
    """What decides a batch's results: the model (export.json hash), the backend kind and the
    per-video options (runtime.infer flags other than threads, providers, devices, progress)."""
    ignore = {"video", "output", "video_id", "no_progress", "threads", "providers", "device", "plugin_lib",
              "engine_dir", "model"}
    opts = {k: v for k, v in sorted(vars(run_ns).items()) if k not in ignore}
    export_json = os.path.join(model_dir, "export.json") if model_dir else None
    return {"format": 1, "backend": run_ns.backend,
            "export_json_sha256": file_sha256(export_json) if export_json and os.path.isfile(export_json) else None,
            "options": opts}


__all__: List[str] = ["BatchStore", "batch_config", "file_sha256", "PARTIAL_PREFIX"]
