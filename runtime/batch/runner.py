"""Run a batch: schedule videos on a worker pool, retry after worker deaths, write the outputs.

``run_batch(BatchSpec(...)) -> summary dict`` (also written to OUT/summary.json). The pool is Ray
(``RayPool``) or local processes (``LocalPool``); see runtime/batch/__init__.py for the whole
picture and docs/batch.md for usage.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from tqdm import tqdm

from .inputs import BatchInputError, discover_videos
from .store import BatchStore, batch_config
from .worker import parse_run_args

EXECUTORS = ("auto", "ray", "local")


@dataclass
class BatchSpec:
    """One batch job (the CLI flags of python -m runtime.batch).

    run_args: the per-video flags of ``python -m runtime.infer`` (``--model``, ``--backend``,
    ``--score-thr`` ...). workers: pool size. executor: ``ray``, ``local`` (processes on this
    machine) or ``auto`` (Ray when installed). cpus_per_worker: Ray CPUs per actor, also ONNX
    Runtime's intra-op threads when ``--threads`` is 0 (default: this machine's cores / workers;
    1 with ``address``).
    max_retries: how often a video is retried after its worker died (failed videos are not retried).
    """
    videos: str
    output: str
    run_args: List[str]
    workers: int = 2
    executor: str = "auto"
    address: Optional[str] = None
    cpus_per_worker: Optional[float] = None
    gpus_per_worker: float = 0.0
    max_retries: int = 2
    frames_root: Optional[str] = None
    evaluate: Optional[str] = None
    progress: bool = True
    start_timeout: float = 600.0
    num_cpus: Optional[int] = None   # local Ray cluster size (default: this machine's cores)


@dataclass
class _WorkerStats:
    slot: int
    hosts: List[str] = field(default_factory=list)
    pids: List[int] = field(default_factory=list)
    restarts: int = 0
    videos: int = 0
    failed: int = 0
    frames: int = 0
    busy_s: float = 0.0
    load_s: List[float] = field(default_factory=list)

    def started(self, info: dict) -> None:
        self.hosts.append(info.get("host"))
        self.pids.append(info.get("pid"))
        self.load_s.append(info.get("load_s"))

    def as_dict(self) -> dict:
        return {"worker": self.slot, "hosts": sorted(set(self.hosts)), "pids": self.pids, "restarts": self.restarts,
                "model_load_s": self.load_s, "videos": self.videos, "failed": self.failed, "frames": self.frames,
                "busy_s": round(self.busy_s, 3),
                "fps": round(self.frames / self.busy_s, 3) if self.busy_s > 0 else None}


def choose_executor(spec: BatchSpec) -> str:
    from .ray_pool import ray_available, use_loopback_cluster
    if not spec.address:
        use_loopback_cluster()
    if spec.executor not in EXECUTORS:
        raise BatchInputError(f"--executor must be one of {', '.join(EXECUTORS)}")
    if spec.executor == "local":
        if spec.address:
            raise BatchInputError("--address needs the Ray executor (not --executor local)")
        return "local"
    if ray_available():
        return "ray"
    if spec.executor == "ray" or spec.address:
        raise BatchInputError("Ray is not installed: pip install 'mdqe-deploy[cluster]' "
                              "(or run without --address to use local processes)")
    return "local"


def _make_pool(kind: str, spec: BatchSpec, threads: Optional[int], cpus: float):
    if kind == "ray":
        from .ray_pool import RayPool
        return RayPool(spec.workers, spec.run_args, threads, cpus_per_worker=cpus,
                       gpus_per_worker=spec.gpus_per_worker, address=spec.address, num_cpus=spec.num_cpus,
                       start_timeout=spec.start_timeout)
    from .local_pool import LocalPool
    return LocalPool(spec.workers, spec.run_args, threads, gpus_per_worker=spec.gpus_per_worker,
                     start_timeout=spec.start_timeout)


def run_evaluation(gt: str, results: str, output: str) -> dict:
    """Score ``results`` against ``gt`` with the project's torch-free evaluator, run as its own
    process (``python -m mdqe.evaluate``): the runtime does not import mdqe (layering)."""
    cmd = [sys.executable, "-m", "mdqe.evaluate", "--gt", gt, "--results", results, "--output", output]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        msg = (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1]
        raise BatchInputError(f"evaluation failed: {msg}")
    with open(output, encoding="utf-8") as f:
        return {"metrics": json.load(f), "table": r.stdout.strip()}


def run_batch(spec: BatchSpec, on_event: Optional[Callable[..., None]] = None) -> dict:
    """Run every video of ``spec.videos`` not finished yet in ``spec.output``; merge; summarise.

    ``on_event(kind, **info)`` is called in the driver for "start" (slot, item, pid),
    "done", "failed" and "retry" (after a worker died) - progress hooks for callers and tests.
    Raises BatchInputError for bad input (model, videos, output folder, cluster).
    Returns the summary (see docs/batch.md).
    """
    t_start = time.perf_counter()
    emit = on_event or (lambda kind, **info: None)
    if spec.workers < 1:
        raise BatchInputError("--workers must be >= 1")
    if spec.max_retries < 0:
        raise BatchInputError("--max-retries must be >= 0")
    if spec.evaluate and not os.path.isfile(spec.evaluate):
        raise BatchInputError(f"--evaluate ground truth not found: {spec.evaluate}")
    kind = choose_executor(spec)
    items, dataset = discover_videos(spec.videos, spec.frames_root)
    ns = parse_run_args(spec.run_args)
    from ..backends import require_backend
    require_backend(ns.backend)                         # torch: registered by mdqe (not in a runtime-only process)
    if ns.model is not None:
        from ..model_dir import load_model_dir, require_graph_files
        model_spec = load_model_dir(ns.model)           # bad model directory: fail before any worker starts
        if ns.backend in ("ort",):
            require_graph_files(model_spec)
    # default: split this machine's cores between the workers; one CPU each on an existing cluster
    cpus = spec.cpus_per_worker or (1 if spec.address else max(1, (os.cpu_count() or 1) // spec.workers))
    threads = max(1, int(cpus)) if spec.gpus_per_worker == 0 else None

    store = BatchStore(spec.output)
    store.open()
    pool = None
    try:
        store.check_config(batch_config(ns, ns.model))
        done_before = [it for it in items if store.is_done(it)]
        done_keys = {it.key for it in done_before}
        pending = deque(it for it in items if it.key not in done_keys)
        stats = [_WorkerStats(i) for i in range(spec.workers)]
        failures: List[dict] = []
        retries: List[dict] = []
        attempts: Dict[str, int] = {}
        frames = 0
        t_work = None
        if pending:
            pool = _make_pool(kind, spec, threads, cpus)
            for i, info in enumerate(pool.start()):
                stats[i].started(info)
            t_work = time.perf_counter()
            idle = list(range(spec.workers))
            bar = tqdm(total=len(items), initial=len(done_before), unit="video", desc="videos",
                       disable=not spec.progress, dynamic_ncols=True)
            try:
                while pending or pool.busy():
                    while idle and pending:
                        slot, item = idle.pop(0), pending.popleft()
                        attempts[item.key] = attempts.get(item.key, 0) + 1
                        pool.submit(slot, item)
                        emit("start", slot=slot, item=item, pid=pool.worker_pid(slot), attempt=attempts[item.key])
                    got = pool.next_result(timeout=1.0)
                    if got is None:
                        continue
                    slot, item, out = got
                    st = stats[slot]
                    if out["status"] == "ok":
                        store.save(item, out["files"], {"worker": slot, "host": out.get("host"), "pid": out.get("pid"),
                                                        "attempt": attempts[item.key]})
                        st.videos += 1
                        st.frames += out["frames"]
                        st.busy_s += out["wall_s"]
                        frames += out["frames"]
                        emit("done", slot=slot, item=item, frames=out["frames"])
                        bar.update(1)
                    elif out["status"] == "failed":
                        st.failed += 1
                        failures.append({"video": item.key, "video_id": item.video_id, "source": item.describe(),
                                         "error": out["error"], "attempts": attempts[item.key]})
                        tqdm.write(f"failed: {item.key}: {out['error']}", file=sys.stderr)
                        emit("failed", slot=slot, item=item, error=out["error"])
                        bar.update(1)
                    else:   # the worker died: replace it, retry the video (bounded)
                        st.restarts += 1
                        retry = attempts[item.key] <= spec.max_retries
                        retries.append({"video": item.key, "worker": slot, "pid": out.get("pid"), "error": out["error"],
                                        "attempt": attempts[item.key], "retried": retry})
                        tqdm.write(f"worker {slot} died while running {item.key} ({out['error']}); "
                                   + ("retrying" if retry else f"giving up after {attempts[item.key]} attempts"),
                                   file=sys.stderr)
                        if retry:
                            pending.appendleft(item)
                        else:
                            failures.append({"video": item.key, "video_id": item.video_id,
                                             "source": item.describe(),
                                             "error": f"worker died {attempts[item.key]} times: {out['error']}",
                                             "attempts": attempts[item.key]})
                            bar.update(1)
                        emit("retry", slot=slot, item=item, error=out["error"], retried=retry)
                        st.started(pool.restart(slot))
                    idle.append(slot)
                    if t_work is not None and frames:
                        bar.set_postfix_str(f"{frames / (time.perf_counter() - t_work):.2f} frames/s")
            finally:
                bar.close()
        work_s = time.perf_counter() - t_work if t_work is not None else 0.0
        merged = store.merge_results(items)
        frames_total = 0
        for it in items:
            t = store.video_timing(it)
            if t is not None:
                frames_total += int(t.get("frames", 0))
        summary = {
            "videos": len(items),
            "finished": merged["videos"],
            "processed": len(items) - len(done_before) - len(failures),
            "skipped_already_done": len(done_before),
            "failed": len(failures),
            "frames": frames,
            "frames_all_finished_videos": frames_total,
            "wall_s": round(time.perf_counter() - t_start, 3),
            "startup_s": round((t_work - t_start) if t_work is not None else 0.0, 3),
            "work_s": round(work_s, 3),
            "fps": round(frames / work_s, 3) if work_s > 0 else None,
            "fps_counted": "frames processed by this job / work_s (first video submitted to last result; "
                           "cluster start and model loading excluded, in startup_s)",
            "executor": kind, "workers": spec.workers, "cpus_per_worker": cpus,
            "gpus_per_worker": spec.gpus_per_worker,
            "cluster": getattr(pool, "cluster", None) or None,
            "per_worker": [s.as_dict() for s in stats] if t_work is not None else [],
            "failures": failures,
            "worker_deaths": retries,
            "dataset": dataset,
            "results": merged["path"],
            "results_entries": merged["entries"],
        }
    finally:
        if pool is not None:
            pool.close()
        store.close()
    summary["summary"] = os.path.join(store.out, "summary.json")
    store.write_summary(summary)
    if spec.evaluate:
        ev = run_evaluation(spec.evaluate, summary["results"], os.path.join(store.out, "metrics.json"))
        summary["metrics"] = ev["metrics"]
        summary["metrics_table"] = ev["table"]
        summary["wall_s"] = round(time.perf_counter() - t_start, 3)
        store.write_summary(summary)
    return summary
