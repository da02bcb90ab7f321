"""Batch inference over many videos: a pool of workers, each holding one loaded model.

    python -m runtime.batch --model DIR --videos FOLDER|GT.json|LIST.txt --output DIR
        [--address auto|HOST:PORT] [--workers N] [--gpus-per-worker G] [--backend ort|trt|torch]
        [--evaluate [GT.json]] [any per-video option of python -m runtime.infer]

One task per video on a pool of Ray actors (a local Ray cluster by default, an existing one with
``--address``), or of local processes when Ray is not installed (``--executor local`` forces it).
Each worker loads the model once and runs videos with ``runtime.pipeline.run_video`` - the same
computation as ``python -m runtime.infer`` on each video. Per-video outputs appear atomically
under OUT/videos/<key>/; a rerun skips finished videos; OUT/results.json merges them; a failed
video is recorded in OUT/summary.json and never stops the others; a worker that dies is replaced
and its video retried (``--max-retries``). Modules:

- inputs.py     what to run (dataset / folder / list file -> VideoItem)
- worker.py     VideoWorker: one backend, one video at a time (the Ray actor / process body)
- ray_pool.py   Ray actors; local_pool.py: local processes (same interface)
- store.py      the output folder: atomic per-video folders, resume, merge, summary
- runner.py     scheduling, retries, progress bar, summary; __main__.py: the CLI

Nothing here imports Ray, torch or mdqe at import time (``--evaluate`` runs ``python -m
mdqe.evaluate`` as a separate process).
"""
import os as _os

# Same rule as runtime.infer: small BLAS products, one thread (worker processes inherit this).
for _var in ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS"):
    _os.environ.setdefault(_var, "1")

from .inputs import BatchInputError, VideoItem, discover_videos  # noqa: E402
from .runner import BatchSpec, run_batch  # noqa: E402

__all__ = ["BatchSpec", "run_batch", "BatchInputError", "VideoItem", "discover_videos"]
