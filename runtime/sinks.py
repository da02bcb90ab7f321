"""Output sinks of a runtime run: each consumes the final frames of ``runtime.pipeline.VideoLoop``
(``FinalFrame``: frame index, original BGR frame [H0, W0, 3], [(track id, uint8 mask [H0, W0] or
None, RLE dict)]) and writes one kind of output.

A sink has ``start(stream, source)`` (after the first frame is encoded: sizes known), ``add(final)``
(per final frame, in frame order), ``finish(stream)`` (after the last frame: write and publish),
``abort()`` (a failure: remove temporaries, publish nothing), ``cleanup()`` (always, last) and
``written`` (the names it leaves in the output folder).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import numpy as np

from .outputs.overlay import OverlayWriter, draw_overlay
from .outputs.pngs import MaskPngWriter
from .outputs.results import ResultsSpool
from .tracker import select_pairs


@dataclass
class FinalFrame:
    """A frame no later clip covers: its index, the original BGR frame [H0, W0, 3] and its instances
    [(track id, uint8 mask [H0, W0] or None when masks were not asked for, RLE dict)] (tracks whose
    mask is empty at the original size are left out)."""
    index: int
    frame: np.ndarray
    instances: List[Tuple[int, Optional[np.ndarray], dict]]


class Sink:
    """No-op base of the sink protocol (see the module doc)."""
    written: List[str] = []

    def start(self, stream, source) -> None:
        pass

    def add(self, final) -> None:
        pass

    def finish(self, stream) -> None:
        pass

    def abort(self) -> None:
        pass

    def cleanup(self) -> None:
        pass


class ResultsSink(Sink):
    """results.json (YouTube-VIS style, one entry per selected track/class pair): RLEs spooled to disk
    per frame, the per-video selection (``select_pairs``) and the JSON written at the end."""
    written = ["results.json"]

    def __init__(self, output_dir: str, video_id=1, min_pair_score: float = 0.05, min_pairs: int = 10):
        self.out, self.video_id = output_dir, video_id
        self.min_pair_score, self.min_pairs = min_pair_score, min_pairs
        self.spool = ResultsSpool(output_dir)
        self.entries = 0

    def add(self, final) -> None:
        self.spool.add_frame(final.index, [(tid, r) for tid, _, r in final.instances])

    def finish(self, stream) -> None:
        """The per-video selection of the stream's tracks, then results.json."""
        self.write(select_pairs(stream.tracker.summaries(), self.min_pair_score, self.min_pairs), stream.n_frames)

    def write(self, pairs, num_frames: int) -> int:
        """results.json for ``pairs`` [(track id, class index, score)] over ``num_frames`` frames;
        returns (and keeps in ``entries``) the number of entries."""
        self.entries = self.spool.write_json(os.path.join(self.out, "results.json"), pairs, num_frames,
                                             self.video_id)
        return self.entries

    def cleanup(self) -> None:
        self.spool.cleanup()


class OverlaySink(Sink):
    """overlay.mp4: each frame with the masks of the tracks whose video score >= vis_thr, labelled
    "id class score"; ``info(track id) -> (score, class index)`` gives the label (in a run: the
    tracker's running ``display_info``, set by ``start``)."""
    written = ["overlay.mp4"]

    def __init__(self, output_dir: str, class_names, vis_thr: float = 0.3,
                 info: Optional[Callable[[int], Tuple[float, int]]] = None):
        self.path, self.class_names, self.vis_thr = os.path.join(output_dir, "overlay.mp4"), class_names, vis_thr
        self.writer: Optional[OverlayWriter] = None
        self.info = info

    def start(self, stream, source) -> None:
        self.info = stream.tracker.display_info
        self.open(source.fps, stream.pre.geometry.original)

    def open(self, fps: float, size_hw) -> None:
        """Create the video writer (frames of the original size [H0, W0])."""
        self.writer = OverlayWriter(self.path, fps, size_hw)

    def add(self, final) -> None:
        shown = []
        for tid, m, _ in final.instances:
            score, cls = self.info(tid)
            if score >= self.vis_thr:
                shown.append((tid, m, f"{tid} {self.class_names[cls]} {score:.2f}"))
        self.writer.write(draw_overlay(final.frame, shown))

    @property
    def frames(self) -> int:
        return self.writer.frames if self.writer is not None else 0

    def finish(self, stream) -> None:
        if self.writer is not None:
            self.writer.close()

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.abort()


class PngSink(Sink):
    """masks/: one PNG per frame and track (published as a whole at the end)."""
    written = ["masks"]

    def __init__(self, output_dir: str):
        self.writer = MaskPngWriter(output_dir)

    def add(self, final) -> None:
        for tid, m, _ in final.instances:
            self.writer.write(final.index, tid, m)

    @property
    def count(self) -> int:
        return self.writer.count

    def finish(self, stream) -> None:
        self.writer.commit()

    def abort(self) -> None:
        self.writer.abort()
