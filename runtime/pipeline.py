"""The near-online pipeline (paper Sec. 3.4, Fig. 4; docs/runtime.md).

decode -> preprocess -> encoder ONCE per frame -> ring buffer of the last T
frames' features -> decoder per clip (stride 1, overlap T-1) -> per-clip
filtering -> Hungarian clip tracker -> streaming outputs. ``VideoLoop`` /
``iterate_video`` are that loop, yielding each frame once it is final;
``run_video`` feeds it to the output sinks of ``runtime.sinks``.

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
from typing import Callable, Iterator, List, Optional, Union

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
from .preprocess import Preprocessor
from .sinks import FinalFrame, OverlaySink, PngSink, ResultsSink, Sink
from .timing import StageTimer
from .tracker import TrackerParams, make_tracker
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
            frame_maps = self.tracker.pop_frame_maps(f)
            finals = self.post.finals(frame_maps, with_masks=masks)
            return [(tid, mask, rle) for tid, (mask, rle) in zip(frame_maps.ids, finals) if rle is not None]


class VideoLoop:
    """The runtime loop: decode a frame from ``source`` -> ``stream.push`` (preprocess, encoder once,
    ring buffer; when T frames are buffered: decoder on the clip, per-clip filter, tracker) -> the
    frame that became final -> ``stream.final`` (per-frame masks at the original size). Iterating
    yields a FinalFrame per frame in order; after the last frame ``stream.finish()`` runs the padded /
    tail clip and closes the tracker, and the remaining frames are yielded.

    ``stop()`` (checked before each read) ends reading early; ``on_first_frame(stream)`` runs once
    after the first frame is encoded (its geometry is then known); ``on_frame()`` after each frame
    read. ``source_done`` is True once reading has ended; ``padded`` says whether the video was
    shorter than T. Raises VideoError if no frame was decoded.
    """

    def __init__(self, source: FrameSource, stream: StreamState, masks: bool = True,
                 stop: Optional[Callable[[], bool]] = None,
                 on_first_frame: Optional[Callable[[StreamState], None]] = None,
                 on_frame: Optional[Callable[[], None]] = None):
        self.source, self.stream, self.masks = source, stream, masks
        self.stop, self.on_first_frame, self.on_frame = stop, on_first_frame, on_frame
        self.frames = deque()                 # (index, original BGR frame) not yet final
        self.source_done = False
        self.padded = False

    def _final(self, f: int) -> FinalFrame:
        items = self.stream.final(f, masks=self.masks)
        idx, frame = self.frames.popleft()
        assert idx == f, (idx, f)
        return FinalFrame(f, frame, items)

    def __iter__(self) -> Iterator[FinalFrame]:
        stream, timer = self.stream, self.stream.timer
        it = iter(self.source)
        while True:
            t0 = time.perf_counter()
            frame = None if self.stop is not None and self.stop() else next(it, None)
            if frame is None:
                self.source_done = True
                break
            timer.add("decode", time.perf_counter() - t0)
            i = stream.n_frames
            final = stream.push(frame)
            if i == 0 and self.on_first_frame is not None:
                self.on_first_frame(stream)
            self.frames.append((i, frame))
            if final is not None:
                yield self._final(final)
            if self.on_frame is not None:
                self.on_frame()
        if stream.n_frames == 0:
            raise VideoError(f"no frames decoded from {self.source.source}")
        self.padded = stream.padded
        for f in stream.finish():
            yield self._final(f)


def iterate_video(video: Union[str, int, FrameSource], backend: Backend, options: Optional[RunOptions] = None,
                  masks: bool = True) -> Iterator[FinalFrame]:
    """The near-online pipeline in-process, writing nothing: yields the FinalFrame of every frame of
    ``video`` in order (tracker and filter from ``options``). For outputs on disk use ``run_video``."""
    opts = options or RunOptions()
    source = video if isinstance(video, FrameSource) else FrameSource(video, max_frames=opts.max_frames)
    try:
        yield from VideoLoop(source, StreamState(backend, opts.filter, opts.tracker), masks=masks)
    finally:
        source.close()


class _Run:
    """One run of ``run_video``: a VideoLoop feeding the output sinks (runtime.sinks: results.json,
    overlay.mp4, masks/), then timing.json; signal handling around it."""

    def __init__(self, source: FrameSource, output_dir: str, backend: Backend, opts: RunOptions):
        self.source, self.out, self.backend, self.opts = source, output_dir, backend, opts
        self.timer = StageTimer()
        self.stream = StreamState(backend, opts.filter, opts.tracker, self.timer)
        self.results = ResultsSink(output_dir, opts.video_id, opts.min_pair_score, opts.min_pairs)
        self.overlay = OverlaySink(output_dir, backend.spec.class_names, opts.vis_thr) if opts.overlay else None
        self.pngs = PngSink(output_dir) if opts.save_pngs else None
        self.sinks: List[Sink] = [s for s in (self.results, self.overlay, self.pngs) if s is not None]
        self.loop = VideoLoop(source, self.stream, masks=self.overlay is not None or self.pngs is not None,
                              stop=lambda: self.interrupted, on_first_frame=self._start_sinks)
        self.frames_written = 0
        self.interrupted = False
        self.signal_name: Optional[str] = None   # "SIGINT" / "SIGTERM" received during the run
        self.signal_stopped_reading = False

    def _start_sinks(self, stream: StreamState) -> None:
        for sink in self.sinks:
            sink.start(stream, self.source)

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
            self.signal_stopped_reading = not self.loop.source_done   # after the last frame it stops nothing

        return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    def run(self) -> dict:
        t_start = time.perf_counter()
        bar = tqdm(total=self.source.frame_count, unit="frame", desc="mdqe", disable=not self.opts.progress,
                   dynamic_ncols=True)
        self.loop.on_frame = lambda: bar.update(1)
        previous_handlers = self._install_signals()
        try:
            for final in self.loop:
                with self.timer("write"):
                    for sink in self.sinks:
                        sink.add(final)
                self.frames_written += 1
            with self.timer("write"):
                for sink in self.sinks:
                    sink.finish(self.stream)
            wall = time.perf_counter() - t_start
        except BaseException:
            for sink in self.sinks:
                sink.abort()
            raise
        finally:
            for sig, h in previous_handlers.items():
                signal.signal(sig, h)
            bar.close()
            for sink in self.sinks:
                sink.cleanup()
            self.source.close()
        timing = self.timing(wall)
        write_json(os.path.join(self.out, "timing.json"), timing)
        remove_stale(self.out, [name for sink in self.sinks for name in sink.written] + ["timing.json"])
        return timing

    def timing(self, wall: float) -> dict:
        """The timing.json record of the finished run (wall = seconds from start to the last output)."""
        g = self.stream.pre.geometry
        n = self.stream.n_frames
        if self.signal_stopped_reading:
            stop_reason = f"stopped by {self.signal_name} after {n} frames"
        else:
            stop_reason = getattr(self.source, "stop_reason", None)
        return {
            "video": self.source.name,
            "frames": n,
            "encoder_frames": self.stream.encoder_frames,
            "decoder_clips": self.stream.clips,
            "clip_length": self.stream.T,
            "padded_clip": self.loop.padded,
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
            "tracks": self.stream.tracker.next_id - 1,
            "results_entries": self.results.entries,
            "png_files": self.pngs.count if self.pngs is not None else 0,
            "stages": self.timer.summary(),
        }


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
