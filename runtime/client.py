"""Stream a video to the Triton ``mdqe_video`` model and write what ``runtime.infer`` writes.

    python -m runtime.client --url 127.0.0.1:8001 --video PATH --output DIR [--stream-id N] [options]
    mdqe-client ...                       (the same, as a console script)

One stream = one sequence (``--stream-id``, the correlation id; default: a random one). Frames
are sent one per request (FRAME, FRAME_INDEX; START with the first, END with an empty flush
frame after the last), and the instances of each frame that became final come back
(runtime/serving/protocol.py). Outputs, with the writers of ``runtime.outputs``:
results.json (YouTube-VIS, the same entries as ``runtime.infer`` with the pipeline options the
repository was generated with), overlay.mp4, masks/ with --save-pngs, and timing.json with the
per-frame round-trip latencies. Ctrl-C once stops reading (e.g. a camera), ends the stream and
still writes the outputs of the frames sent; a second Ctrl-C aborts. Errors: one line, exit status 2
(bad video, server unreachable, a request the server refuses; runtime/cli.py).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Dict, List, Optional

import numpy as np

from .atomic import write_json
from .cli import add_max_frames_arg, add_output_arg, add_video_arg, cli_main, make_parser
from .errors import RuntimeErrorBase
from .rle import decode_rle
from .serving import protocol as P
from .sinks import FinalFrame, OverlaySink, PngSink, ResultsSink
from .timing import StageStats
from .video import FrameSource


class ServingError(RuntimeErrorBase):
    """The server is unreachable or refused a request (the message is the server's)."""


@dataclass
class ClientOptions:
    model: str = P.VIDEO_MODEL
    save_pngs: bool = False
    overlay: bool = True
    video_id: int = 1
    vis_thr: float = 0.3
    max_frames: Optional[int] = None
    timeout_s: float = 60.0


def _grpc():
    try:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException
    except ImportError as e:
        raise ServingError("the client needs tritonclient[grpc] (pip install .[serve])") from e
    return grpcclient, InferenceServerException


def frame_request(frame: np.ndarray, index: int):
    """The two inputs of one mdqe_video request."""
    grpcclient, _ = _grpc()
    frame = np.ascontiguousarray(frame)
    x = grpcclient.InferInput(P.FRAME, list(frame.shape), "UINT8")
    x.set_data_from_numpy(frame)
    i = grpcclient.InferInput(P.FRAME_INDEX, [1], "INT64")
    i.set_data_from_numpy(np.array([index], np.int64))
    return [x, i]


def send_frame(client, model: str, stream_id: int, frame: Optional[np.ndarray], index: int, start: bool = False,
               end: bool = False, timeout_s: Optional[float] = None):
    """One request; ``frame=None`` sends the empty END flush frame. Returns (frames, pairs, open streams)."""
    _, exc = _grpc()
    if frame is None:
        frame = np.zeros((0, 0, 3), np.uint8)
    try:
        r = client.infer(model, frame_request(frame, index), sequence_id=stream_id, sequence_start=start,
                         sequence_end=end, outputs=None, client_timeout=timeout_s)
    except exc as e:
        raise ServingError(f"stream {stream_id}, frame {index}: {e.message() if hasattr(e, 'message') else e}") from e
    return P.unpack_results(r.as_numpy)


def class_names(client, model: str = P.VIDEO_MODEL) -> List[str]:
    """Class names recorded in the model's config parameters."""
    cfg = client.get_model_config(model).config
    return json.loads(cfg.parameters["class_names"].string_value)


class StreamWriter:
    """Writes the outputs of one stream as frames become final, with the sinks of runtime.infer
    (runtime/sinks.py); the overlay labels come from the server's per-frame (class, score)."""

    def __init__(self, output_dir: str, names: List[str], fps: float, opts: ClientOptions):
        self.out, self.names, self.fps, self.opts = output_dir, names, fps, opts
        os.makedirs(output_dir, exist_ok=True)
        self.labels: Dict[int, tuple] = {}      # track id -> (score, class index) of the frame being written
        self.results = ResultsSink(output_dir, opts.video_id)
        self.overlay = OverlaySink(output_dir, names, opts.vis_thr, info=self.labels.__getitem__) \
            if opts.overlay else None
        self.pngs = PngSink(output_dir) if opts.save_pngs else None
        self.pending: deque = deque()       # (index, frame) sent, not final yet
        self.per_frame: Dict[int, list] = {}
        self.frames_written = 0

    def sent(self, index: int, frame: np.ndarray) -> None:
        if self.overlay is not None:
            if self.overlay.writer is None:
                self.overlay.open(self.fps, frame.shape[:2])
            self.pending.append((index, frame))

    def final(self, f: int, items) -> None:
        """Frame f became final on the server: items [(track id, class index, score, RLE dict)]."""
        self.per_frame[f] = items
        with_masks = self.overlay is not None or self.pngs is not None
        frame = None
        if self.pending:
            idx, frame = self.pending.popleft()
            if idx != f:
                raise ServingError(f"server finalised frame {f}, expected {idx}")
        final = FinalFrame(f, frame, [(tid, decode_rle(rle) if with_masks else None, rle)
                                      for tid, _, _, rle in items])
        self.labels.clear()
        self.labels.update({tid: (score, cls) for tid, cls, score, _ in items})
        self.results.add(final)
        if self.overlay is not None and frame is not None:
            self.overlay.add(final)
        if self.pngs is not None:
            self.pngs.add(final)
        self.frames_written += 1

    def finish(self, pairs, n_frames: int) -> int:
        n = self.results.write(pairs, n_frames)
        for sink in (self.overlay, self.pngs):   # PNGs are staged and replace masks/ as a whole
            if sink is not None:
                sink.finish(None)
        return n

    def abort(self) -> None:
        for sink in (self.overlay, self.pngs):
            if sink is not None:
                sink.abort()

    def cleanup(self) -> None:
        self.results.cleanup()


def stream_video(client, source, output_dir: str, stream_id: int, opts: Optional[ClientOptions] = None,
                 names: Optional[List[str]] = None, on_frame=None, latency: Optional[StageStats] = None) -> dict:
    """Stream ``source`` (path, camera index or FrameSource) as sequence ``stream_id``; write the outputs.
    ``on_frame(index)`` (optional) is called after each frame's response (tests interleave other requests);
    ``latency`` (optional StageStats) receives each frame request's round trip in seconds (not the END flush).
    Returns the timing dict (also timing.json): frames, wall_s, fps, latency_ms (p50/p90/p99/max)."""
    opts = opts or ClientOptions()
    src = source if isinstance(source, FrameSource) else FrameSource(source, max_frames=opts.max_frames)
    names = names or class_names(client, opts.model)
    w = StreamWriter(output_dir, names, src.fps, opts)
    lat = latency if latency is not None else StageStats()
    flush_s = 0.0
    n = 0
    stop = {"interrupted": False}

    def on_sigint(signum, frame):        # first Ctrl-C: stop reading (a camera), END the stream, write outputs
        if stop["interrupted"]:
            raise KeyboardInterrupt
        stop["interrupted"] = True

    previous = (signal.signal(signal.SIGINT, on_sigint)
                if threading.current_thread() is threading.main_thread() else None)
    t0 = time.perf_counter()
    try:
        for frame in src:
            if stop["interrupted"]:
                break
            w.sent(n, frame)
            t = time.perf_counter()
            frames, _, _ = send_frame(client, opts.model, stream_id, frame, n, start=(n == 0),
                                      timeout_s=opts.timeout_s)
            lat.add(time.perf_counter() - t)
            for f, items in frames:
                w.final(f, items)
            if on_frame is not None:
                on_frame(n)
            n += 1
        if n == 0:
            raise ServingError(f"no frames decoded from {src.source}")
        t = time.perf_counter()
        frames, pairs, _ = send_frame(client, opts.model, stream_id, None, n, end=True, timeout_s=opts.timeout_s)
        flush_s = time.perf_counter() - t
        for f, items in frames:
            w.final(f, items)
        entries = w.finish(pairs, n)
        wall = time.perf_counter() - t0
    except BaseException:
        w.abort()
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        w.cleanup()
        src.close()
    ms = np.frombuffer(lat.samples, dtype=np.float64) * 1e3     # a reservoir of at most 4096 samples
    timing = {"video": src.name, "stream_id": stream_id, "frames": n, "requests": n + 1,
              "interrupted": stop["interrupted"],
              "frames_written": w.frames_written, "results_entries": entries,
              "wall_s": round(wall, 6), "fps": round(n / wall, 4) if wall > 0 else None,
              "latency_ms": {"p50": round(float(np.percentile(ms, 50)), 3), "p90": round(float(np.percentile(ms, 90)), 3),
                             "p99": round(float(np.percentile(ms, 99)), 3), "max": round(float(ms.max()), 3),
                             "end_flush": round(flush_s * 1e3, 3)},
              "counted": "decode + request round trip (server: preprocess, encoder, decoder, tracker, RLE) + "
                         "client writes; per-frame latency = one request's round trip"}
    write_json(os.path.join(output_dir, "timing.json"), timing)
    return timing


def build_parser() -> argparse.ArgumentParser:
    p = make_parser("python -m runtime.client", __doc__.split("\n\n")[0], also=("mdqe-client",))
    p.add_argument("--url", default="127.0.0.1:8001", help="Triton gRPC address host:port")
    p.add_argument("--model-name", default=P.VIDEO_MODEL,
                   help=f"name of the stateful video model in the server's repository (default {P.VIDEO_MODEL})")
    add_video_arg(p)
    add_output_arg(p)
    p.add_argument("--stream-id", type=int, default=None, help="correlation id of this stream (default random)")
    add_max_frames_arg(p)
    p.add_argument("--video-id", type=int, default=1)
    p.add_argument("--save-pngs", action="store_true")
    p.add_argument("--no-overlay", action="store_true")
    p.add_argument("--vis-thr", type=float, default=0.3)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    return p


@cli_main
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    src = FrameSource(args.video, max_frames=args.max_frames)
    grpcclient, exc = _grpc()
    client = grpcclient.InferenceServerClient(args.url)
    try:
        if not client.is_model_ready(args.model_name):
            raise ServingError(f"model {args.model_name} is not ready on {args.url}")
    except exc as e:
        raise ServingError(f"cannot reach Triton at {args.url}: {e}") from e
    sid = args.stream_id if args.stream_id is not None else random.randint(1, 2 ** 62)
    timing = stream_video(client, src, args.output, sid,
                          ClientOptions(model=args.model_name, save_pngs=args.save_pngs, overlay=not args.no_overlay,
                                        video_id=args.video_id, vis_thr=args.vis_thr, timeout_s=args.timeout))
    print(json.dumps({k: timing[k] for k in ("frames", "fps", "results_entries", "latency_ms")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
