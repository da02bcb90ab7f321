"""The per-worker part of a batch: one loaded backend, videos run one at a time.

``VideoWorker(run_args)`` builds the backend once (``runtime.infer.backend_from_args``) and the
per-video options (``runtime.infer.options_from_args``) from the same flags ``python -m
runtime.infer`` takes, so a video in a batch is computed exactly as ``runtime.infer`` computes
it. ``run(item)`` runs ``runtime.pipeline.run_video`` into a private temporary folder and returns
the files it wrote (``{relative path: bytes}``) with the video's counts; the driver writes them
into the output folder (so workers on other nodes need no shared output filesystem, and a worker
that dies leaves nothing half-written). A video that fails (missing, corrupt, decoder error) is
returned as ``{"status": "failed", "error": ...}``; it never raises.

The same class is the Ray actor (``ray.remote(VideoWorker)``) and the body of a local worker
process; this module imports neither Ray nor the backends at import time.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import socket
import tempfile
import time
import traceback
from typing import Dict, List, Optional

from ..errors import RuntimeErrorBase
from .inputs import VideoItem


def parse_run_args(run_args: List[str], threads: Optional[int] = None) -> argparse.Namespace:
    """The ``python -m runtime.infer`` flags of one video (``--model``, ``--backend``, ``--score-thr``
    ...) as its parser reads them; ``--video``/``--output``/``--video-id`` are set per video.
    ``threads`` replaces ``--threads 0`` (ONNX Runtime's default: every core) for the ort backend.
    Raises BatchInputError for a flag runtime.infer does not know."""
    from ..infer import build_parser
    from .inputs import BatchInputError

    for flag in ("--video", "--video-id", "--output"):
        if any(a == flag or a.startswith(flag + "=") for a in run_args):
            raise BatchInputError(f"{flag} is set per video by runtime.batch; remove it")
    parser = build_parser()
    parser.prog = "python -m runtime.batch"

    def fail(message):
        raise BatchInputError(message)

    parser.error = fail
    ns = parser.parse_args(list(run_args) + ["--video", "-", "--output", "-"])
    if ns.model is None and ns.backend != "fake":
        raise BatchInputError("--model DIR is required (except with --backend fake)")
    if threads and ns.backend == "ort" and ns.threads == 0:
        ns.threads = int(threads)
    ns.no_progress = True
    return ns


def collect_files(folder: str) -> Dict[str, bytes]:
    """Every file under ``folder`` as {relative path with '/': bytes}."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            p = os.path.join(root, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, folder).replace(os.sep, "/")] = f.read()
    return out


class VideoWorker:
    """Holds one backend for its lifetime; ``run`` processes one video (see the module docstring).

    A backend that cannot be created does not raise here (a Ray actor would die): ``info()``
    reports the error and the driver stops the batch with it.
    """

    def __init__(self, run_args: List[str], threads: Optional[int] = None):
        from ..infer import backend_from_args, options_from_args

        self.host, self.pid = socket.gethostname(), os.getpid()
        self.error: Optional[str] = None
        self.backend = None
        t0 = time.perf_counter()
        try:
            self.ns = parse_run_args(run_args, threads)
            self.options = dataclasses.replace(options_from_args(self.ns), progress=False)
            self.backend = backend_from_args(self.ns)
        except RuntimeErrorBase as e:
            self.error = str(e)
        except Exception as e:  # an unexpected failure to load is reported, not hidden
            self.error = f"{type(e).__name__}: {e}"
        self.load_s = time.perf_counter() - t0

    def info(self) -> dict:
        """{host, pid, error (None when the backend loaded), load_s, backend description}."""
        desc = None
        if self.backend is not None:
            try:
                desc = self.backend.describe()
            except Exception:  # describe is informational
                desc = None
        return {"host": self.host, "pid": self.pid, "error": self.error, "load_s": round(self.load_s, 3),
                "backend": desc, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}

    def run(self, item: VideoItem) -> dict:
        """Run one video. Returns {"status": "ok", "files", "frames", "wall_s", "fps", ...} or
        {"status": "failed", "error": one line}; plus host and pid."""
        from ..pipeline import run_video

        base = {"key": item.key, "host": self.host, "pid": self.pid}
        if self.backend is None:
            return {**base, "status": "failed", "error": f"backend not loaded: {self.error}"}
        tmp = tempfile.mkdtemp(prefix="mdqe-batch-")
        try:
            opts = dataclasses.replace(self.options, video_id=item.video_id)
            source = item.open(max_frames=opts.max_frames)
            timing = run_video(source, tmp, self.backend, opts)
            return {**base, "status": "ok", "frames": int(timing["frames"]), "wall_s": float(timing["wall_s"]),
                    "fps": timing["fps"], "results_entries": int(timing["results_entries"]),
                    "files": collect_files(tmp)}
        except RuntimeErrorBase as e:
            return {**base, "status": "failed", "error": f"{type(e).__name__}: {e}"}
        except Exception as e:  # decoder/ONNX Runtime errors: recorded, never stop the batch
            where = traceback.extract_tb(e.__traceback__)[-1:]
            at = f" (at {os.path.basename(where[0].filename)}:{where[0].lineno})" if where else ""
            return {**base, "status": "failed", "error": f"{type(e).__name__}: {e}{at}"}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None
