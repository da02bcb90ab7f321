"""YouTube-VIS results, streamed with bounded memory.

While the video runs, each final frame's RLEs are appended to one small spool
file per track (``<output>/.spool-*/track_<id>.txt``, one line per frame:
``frame<TAB>height<TAB>width<TAB>counts``). At the end the selected
(track, class) pairs are written to ``results.json`` one entry at a time
(temp file + rename), each with one segmentation (RLE dict or null) per
frame, and the spool is deleted. Memory: one track's RLE list at a time.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Iterable, List, Optional, Tuple

from ..atomic import atomic_path


class ResultsSpool:
    """Collects per-frame RLEs per track on disk and writes the results JSON."""

    def __init__(self, output_dir: str):
        os.makedirs(output_dir, exist_ok=True)
        self.dir = tempfile.mkdtemp(prefix=".spool-", dir=output_dir)

    def _path(self, track_id: int) -> str:
        return os.path.join(self.dir, f"track_{track_id}.txt")

    def add_frame(self, frame: int, items: Iterable[Tuple[int, dict]]) -> None:
        """Append the RLE of each (track id, rle) of ``frame``."""
        for tid, rle in items:
            with open(self._path(tid), "a", encoding="utf-8") as f:
                f.write(f"{frame}\t{rle['size'][0]}\t{rle['size'][1]}\t{rle['counts']}\n")

    def segmentations(self, track_id: int, num_frames: int) -> List[Optional[dict]]:
        """[RLE or None] * num_frames for one track."""
        segs: List[Optional[dict]] = [None] * num_frames
        p = self._path(track_id)
        if os.path.exists(p):
            with open(p, encoding="utf-8") as f:
                for line in f:
                    fr, h, w, counts = line.rstrip("\n").split("\t", 3)
                    fr = int(fr)
                    if 0 <= fr < num_frames:
                        segs[fr] = {"size": [int(h), int(w)], "counts": counts}
        return segs

    def write_json(self, path: str, pairs, num_frames: int, video_id=1, with_track_id: bool = True) -> int:
        """Write results.json for ``pairs`` [(track id, class index, score)]; category_id = class index + 1.
        Returns the number of entries."""
        with atomic_path(path, suffix=".json") as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write("[")
                for i, (tid, cls, score) in enumerate(pairs):
                    entry = {"video_id": video_id, "category_id": int(cls) + 1, "score": round(float(score), 6),
                             "segmentations": self.segmentations(tid, num_frames)}
                    if with_track_id:
                        entry["track_id"] = int(tid)
                    f.write(("," if i else "") + "\n" + json.dumps(entry, separators=(",", ":")))
                f.write("\n]\n")
        return len(pairs)

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
