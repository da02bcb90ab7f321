"""The near-online pipeline (paper Sec. 3.4, Fig. 4; shared DESIGN.md section 4).

decode -> preprocess -> encoder ONCE per frame -> ring buffer of the last T
frames' features -> decoder per clip (stride 1, overlap T-1) -> per-clip
filtering -> Hungarian clip tracker -> streaming outputs.

Clip c covers frames c .. c+T-1. After clip c, no future clip covers frame
c, so frame c is final: for each track, its mask logits are the mean over
the clips that matched the track and cover the frame; the mask is upsampled
to the original size, RLE-encoded, spooled, drawn on the overlay, and the
frame's data is dropped. Memory is bounded by T frames of features, T
original frames and at most T stride-4 mask maps per live track.

As the authors do, the end of a video adds one truncated clip of its last
T-1 frames (``TrackerParams.tail_clip``); a video shorter than T gets one
clip of its frames. Our decoder has a fixed T, so such a clip is padded by
repeating its last frame's features (no extra encoder run) and only its real
frames are used (the authors run their decoder on the shorter clip).
Frames whose mask is empty at the original size are written as null.

Post-processing (per-clip filter, tracker, masks) is the authors' by default
(runtime.clip_filter, runtime.tracker, runtime.masks; docs/runtime.md).
"""
from __future__ import annotations

import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np
from tqdm import tqdm

from .atomic import write_json
from .backends.base import Backend
from .clip_buffer import FeatureRing
from .clip_filter import FilterParams, filter_clip, require_embedding
from .errors import ModelDirError, VideoError
from .masks import MaskPostprocessor
from .model_dir import check_decoder_outputs, check_encoder_features, check_finite
from .output_dir import OutputLock, check_output_dir, remove_stale
from .outputs.overlay import OverlayWriter, draw_overlay
from .outputs.pngs import MaskPngWriter
from .outputs.results import ResultsSpool
from .preprocess import Preprocessor
from .timing import StageTimer
from .tracker import TrackerParams, make_tracker, select_pairs
from .video import FrameSource


@dataclass
class RunOptions:
    """Options of one run (CLI flags of the same names)."""
    filter: FilterParams = field(default_factory=FilterParams)
    tracker: TrackerParams = field(default_factory=TrackerParams)
    save_pngs: bool = False
    overlay: bool = True
    max_frames: Optional[int] = None
    video_id: int = 1
    progress: bool = True
    vis_thr: float = 0.3          # overlay shows tracks whose running video score >= vis_thr
    min_pair_score: float = 0.05  # per-video selection: keep max(#pairs > this, min_pairs)
    min_pairs: int = 10


class StreamState:
    """The per-video state of the near-online pipeline, driven one frame at a time.

    ``push(frame)`` preprocesses and encodes one BGR frame [H0,W0,3]; once T frames are buffered
    it decodes and tracks the clip that ends with it and returns the index of the frame that
    thereby became final (else None). ``finish()`` after the last frame runs the padded clip of a
    video shorter than T (else the truncated last clip of T-1 frames), closes the tracker and
    returns the frames still to finalise. ``final(f)`` pops frame f's instances: [(track id, uint8
    mask [H0,W0], RLE dict)], masks empty at the original size left out (null). Used by
    ``run_video`` and by the Triton ``mdqe_video`` model (runtime/serving), so both compute the
    same results.
    """

    def __init__(self, backend: Backend, filter_params: FilterParams, tracker_params: TrackerParams,
                 timer: Optional[StageTimer] = None):
        spec = backend.spec
        self.backend, self.filter_params = backend, filter_params
        self.T = spec.num_frames
        self.pre = Preprocessor(spec.preprocess)
        self.ring = FeatureRing(self.T)
        self.tracker_params = tracker_params
        self.tracker = make_tracker(spec.num_classes, tracker_params, num_frames=self.T)
        self.timer = timer or StageTimer()
        self.post: Optional[MaskPostprocessor] = None
        self.n_frames = 0
        self.encoder_frames = 0
        self.clips = 0

    def _clip(self, start: int, n_real: int) -> None:
        feats = self.ring.clip(last=n_real if n_real < len(self.ring) else 0)
        with self.timer("decoder"):
            outputs = self.backend.decode(feats)
            if self.clips == 0:
                check_decoder_outputs(self.backend.spec, outputs)
            check_finite("decoder", outputs)
        emb = self.tracker_params.embedding
        if self.clips == 0:
            problem = require_embedding(outputs, emb)
            if problem:
                raise ModelDirError(problem)
        with self.timer("tracker"):
            dets = filter_clip(outputs, n_real, self.post.valid_hw(), self.filter_params, start=start,
                               embedding=emb)
            self.tracker.update(dets)
        self.clips += 1

    def push(self, frame) -> Optional[int]:
        i = self.n_frames
        with self.timer("preprocess"):
            image = self.pre(frame)
        if self.post is None:
            self.post = MaskPostprocessor(self.pre.geometry, self.backend.spec.mask_stride,
                                          self.tracker_params.mask_resize)
        with self.timer("encoder"):
            # the valid (unpadded) area: the graphs derive the padding masks from it
            feats = self.backend.encode(image[None], np.array([self.pre.geometry.resized], np.int64))
            if self.encoder_frames == 0:
                check_encoder_features(self.backend.spec, image[None].shape, feats)
            check_finite("encoder", feats)
        self.encoder_frames += 1
        self.n_frames += 1
        self.ring.push(feats)
        if len(self.ring) == self.T:
            start = i - self.T + 1
            self._clip(start, self.T)
            return start
        return None

    @property
    def padded(self) -> bool:
        return self.n_frames < self.T

    def finish(self) -> range:
        if self.padded:                      # one clip of repeated last-frame features
            self._clip(0, self.n_frames)
        elif self.tracker_params.tail_clip:  # the authors' truncated last clip of T-1 frames
            self._clip(self.n_frames - self.T + 1, self.T - 1)
        self.tracker.finish()
        return range(0 if self.padded else self.n_frames - self.T + 1, self.n_frames)

    def final(self, f: int, masks: bool = True):
        """Pop frame f: [(track id, uint8 mask [H0,W0] or None if not ``masks``, RLE dict)] for the
        tracks whose mask is not empty at the original size (empty ones stay null)."""
        with self.timer("postprocess"):
            items = self.tracker.pop_frame(f)
            finals = self.post.finals([logits for _, logits in items], with_masks=masks)
            return [(tid, mask, rle) for (tid, _), (mask, rle) in zip(items, finals) if rle is not None]


class _Run:
    def __init__(self, source: FrameSource, output_dir: str, backend: Backend, opts: RunOptions):
        self.source, self.out, self.backend, self.opts = source, output_dir, backend, opts
        self.class_names = backend.spec.class_names
        self.frames = deque()                 # (index, original BGR frame) not yet final
        self.timer = StageTimer()
        self.stream = StreamState(backend, opts.filter, opts.tracker, self.timer)
        self.tracker = self.stream.tracker
        self.spool = ResultsSpool(output_dir)
        self.pngs = MaskPngWriter(output_dir) if opts.save_pngs else None
        self.overlay: Optional[OverlayWriter] = None
        self.frames_written = 0
        self.interrupted = False
        self.signal_name: Optional[str] = None   # "SIGINT" / "SIGTERM" received during the run
        self.source_done = False
        self.signal_stopped_reading = False

    # -- per final frame ----------------------------------------------------
    def _finalize(self, f: int) -> None:
        items = self.stream.final(f, masks=self.overlay is not None or self.pngs is not None)
        with self.timer("write"):
            tids = [tid for tid, _, _ in items]
            masks = [m for _, m, _ in items]
            self.spool.add_frame(f, [(tid, r) for tid, _, r in items])
            idx, frame = self.frames.popleft()
            assert idx == f, (idx, f)
            if self.overlay is not None:
                shown = []
                for tid, m in zip(tids, masks):
                    score, cls = self.tracker.display_info(tid)
                    if score >= self.opts.vis_thr:
                        shown.append((tid, m, f"{tid} {self.class_names[cls]} {score:.2f}"))
                self.overlay.write(draw_overlay(frame, shown))
            if self.pngs is not None:
                for tid, m in zip(tids, masks):
                    self.pngs.write(f, tid, m)
        self.frames_written += 1

    def _install_signals(self):
        """First Ctrl-C or SIGTERM (docker stop, systemd, timeout): stop reading frames and finish the
        outputs for the frames so far (e.g. a camera); a second one aborts (SignalAbort, temporaries
        removed). Only in the main thread; returns the previous handlers."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum, frame):
            if self.interrupted:
                raise SignalAbort(signum)
            self.interrupted = True
            self.signal_name = signal.Signals(signum).name
            self.signal_stopped_reading = not self.source_done   # after the last frame it stops nothing

        return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def run(self) -> dict:
        t_start = time.perf_counter()
        bar = tqdm(total=self.source.frame_count, unit="frame", desc="mdqe", disable=not self.opts.progress,
                   dynamic_ncols=True)
        it = iter(self.source)
        previous_handlers = self._install_signals()
        try:
            while True:
                t0 = time.perf_counter()
                frame = None if self.interrupted else next(it, None)
                if frame is None:
                    self.source_done = True
                    break
                self.timer.add("decode", time.perf_counter() - t0)
                i = self.stream.n_frames
                final = self.stream.push(frame)
                if self.overlay is None and self.opts.overlay:
                    self.overlay = OverlayWriter(os.path.join(self.out, "overlay.mp4"), self.source.fps,
                                                 self.stream.pre.geometry.original)
                self.frames.append((i, frame))
                if final is not None:
                    self._finalize(final)
                bar.update(1)
            if self.stream.n_frames == 0:
                raise VideoError(f"no frames decoded from {self.source.source}")
            padded = self.stream.padded
            for f in self.stream.finish():
                self._finalize(f)
            # per-video scores and results JSON
            with self.timer("write"):
                pairs = select_pairs(self.tracker.summaries(), self.opts.min_pair_score, self.opts.min_pairs)
                n_entries = self.spool.write_json(os.path.join(self.out, "results.json"), pairs, self.stream.n_frames,
                                                  self.opts.video_id)
                if self.overlay is not None:
                    self.overlay.close()
                if self.pngs is not None:
                    self.pngs.commit()
            wall = time.perf_counter() - t_start
        except BaseException:
            if self.overlay is not None:
                self.overlay.abort()
            if self.pngs is not None:
                self.pngs.abort()
            raise
        finally:
            for sig, h in previous_handlers.items():
                signal.signal(sig, h)
            bar.close()
            self.spool.cleanup()
            self.source.close()
        g = self.stream.pre.geometry
        n = self.stream.n_frames
        if self.signal_stopped_reading:
            stop_reason = f"stopped by {self.signal_name} after {n} frames"
        else:
            stop_reason = getattr(self.source, "stop_reason", None)
        timing = {
            "video": self.source.name,
            "frames": n,
            "encoder_frames": self.stream.encoder_frames,
            "decoder_clips": self.stream.clips,
            "clip_length": self.stream.T,
            "padded_clip": padded,
            "interrupted": self.interrupted,
            "signal": self.signal_name,
            "stopped_early": stop_reason is not None,
            "stop_reason": stop_reason,
            "reconnects": getattr(self.source, "reconnects", 0),
            "frames_written": self.frames_written,
            "overlay_frames": self.overlay.frames if self.overlay is not None else 0,
            "fps": round(n / wall, 4) if wall > 0 else None,
            "wall_s": round(wall, 6),
            "counted": "decode + preprocess + encoder + decoder + tracker + postprocess + write "
                       "(all outputs); model loading excluded",
            "original_size": list(g.original),
            "resized_size": list(g.resized),
            "input_size": list(g.padded),
            "backend": self.backend.describe(),
            "tracks": self.tracker.next_id - 1,
            "results_entries": n_entries,
            "png_files": self.pngs.count if self.pngs is not None else 0,
            "stages": self.timer.summary(),
        }
        write_json(os.path.join(self.out, "timing.json"), timing)
        written = ["results.json", "timing.json"] + (["overlay.mp4"] if self.overlay is not None else []) \
            + (["masks"] if self.pngs is not None else [])
        remove_stale(self.out, written)
        return timing


class SignalAbort(KeyboardInterrupt):
    """A second SIGINT/SIGTERM during a run: abort now (temporaries are removed, nothing is written)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def run_video(video: Union[str, int, FrameSource], output_dir: str, backend: Backend,
              options: Optional[RunOptions] = None) -> dict:
    """Run the near-online pipeline on ``video`` with ``backend``; write to ``output_dir``:
    results.json, overlay.mp4 (unless disabled), masks/ (if save_pngs), timing.json.
    Returns the timing dict (also written as timing.json)."""
    opts = options or RunOptions()
    check_output_dir(output_dir)
    source = video if isinstance(video, FrameSource) else FrameSource(video, max_frames=opts.max_frames)
    with OutputLock(output_dir):
        return _Run(source, output_dir, backend, opts).run()
