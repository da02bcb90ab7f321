"""Worker pool of Ray actors: each actor holds one VideoWorker (one loaded backend).

``--address`` unset: a local Ray cluster is started (and shut down at the end) on this machine;
``--address auto|HOST:PORT``: the job joins an existing cluster (``ray start --head`` ...). If Ray
is already initialised in this process (a library caller, the tests), that connection is used
and left open. Each actor asks for ``num_cpus=cpus_per_worker`` and ``num_gpus=gpus_per_worker``
(Ray sets CUDA_VISIBLE_DEVICES for it). One video is in flight per actor. An actor that dies
(node lost, process killed, out of memory) makes its video come back as ``died``; ``restart``
kills what is left of it and starts a fresh actor in its slot (``max_restarts=0``: the batch,
not Ray, decides about retries so that they are bounded and counted).
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Tuple

from .inputs import BatchInputError, VideoItem

THREAD_ENV = ("OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def use_loopback_cluster() -> None:
    """Make a local cluster started by this process bind and advertise 127.0.0.1 only.

    Ray picks the node address once, when it is first imported: with this variable at "0" it
    takes the loopback address (its single-machine mode) instead of the host's network address,
    so a local cluster never listens on, or sends to, another interface. Call it before the
    first ``import ray`` and only when no ``--address`` of an existing cluster is given.
    """
    os.environ.setdefault(LOOPBACK_ENV, "0")


def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


class RayPool:
    """See the module docstring; same interface as LocalPool."""

    kind = "ray"

    def __init__(self, size: int, run_args: List[str], threads: Optional[int] = None, cpus_per_worker: float = 1.0,
                 gpus_per_worker: float = 0.0, address: Optional[str] = None, num_cpus: Optional[int] = None,
                 start_timeout: float = 600.0):
        self.size = size
        self.run_args = list(run_args)
        self.threads = threads
        self.cpus_per_worker = cpus_per_worker
        self.gpus_per_worker = gpus_per_worker
        self.address = address
        self.num_cpus = num_cpus
        self.start_timeout = start_timeout
        self._owns_ray = False
        self._actors: list = [None] * size
        self._pids: List[Optional[int]] = [None] * size
        self._inflight: Dict[object, Tuple[int, VideoItem]] = {}
        self._cls = None
        self.cluster: dict = {}

    # -- cluster -----------------------------------------------------------------
    def _connect(self) -> None:
        import ray
        if ray.is_initialized():
            return
        kw = dict(logging_level=logging.WARNING, log_to_driver=False)
        if self.address:
            try:
                ray.init(address=self.address, **kw)
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise BatchInputError(f"cannot connect to the Ray cluster at {self.address}: "
                                      f"{str(e).splitlines()[0]}") from None
        else:
            need = int(-(-self.size * self.cpus_per_worker // 1))
            ray.init(num_cpus=max(self.num_cpus or os.cpu_count() or 1, need), include_dashboard=False, **kw)
        self._owns_ray = True

    def start(self) -> List[dict]:
        import ray
        self._connect()
        total = ray.cluster_resources()
        self.cluster = {"address": ray.get_runtime_context().gcs_address, "resources": {
            k: v for k, v in total.items() if k in ("CPU", "GPU", "memory")},
            "nodes": sum(1 for n in ray.nodes() if n.get("Alive"))}
        for res, need in (("CPU", self.cpus_per_worker), ("GPU", self.gpus_per_worker)):
            if need > 0 and total.get(res, 0) < need:
                raise BatchInputError(f"one worker needs {need:g} {res} but the Ray cluster has "
                                      f"{total.get(res, 0):g} {res} in all")
        from .worker import VideoWorker
        env = {v: os.environ.get(v, "1") for v in THREAD_ENV}
        self._cls = ray.remote(VideoWorker).options(
            num_cpus=self.cpus_per_worker, num_gpus=self.gpus_per_worker, max_restarts=0, max_task_retries=0,
            runtime_env={"env_vars": env})
        for slot in range(self.size):
            self._actors[slot] = self._cls.remote(self.run_args, self.threads)
        return [self._ready(slot) for slot in range(self.size)]

    def _ready(self, slot: int) -> dict:
        import ray
        ref = self._actors[slot].info.remote()
        done, _ = ray.wait([ref], timeout=self.start_timeout)
        if not done:
            raise BatchInputError(f"Ray worker {slot} did not start within {self.start_timeout:g} s (the cluster "
                                  f"may lack {self.cpus_per_worker:g} CPU / {self.gpus_per_worker:g} GPU for it)")
        try:
            info = ray.get(ref)
        except ray.exceptions.RayError as e:
            raise BatchInputError(f"Ray worker {slot} failed to start: {str(e).splitlines()[0]}") from None
        if info.get("error"):
            raise BatchInputError(info["error"])
        self._pids[slot] = info["pid"]
        return info

    # -- work ----------------------------------------------------------------------
    def submit(self, slot: int, item: VideoItem) -> None:
        ref = self._actors[slot].run.remote(item)
        self._inflight[ref] = (slot, item)

    def busy(self) -> int:
        return len(self._inflight)

    def worker_pid(self, slot: int) -> Optional[int]:
        return self._pids[slot]

    def next_result(self, timeout: Optional[float] = None) -> Optional[Tuple[int, VideoItem, dict]]:
        import ray
        if not self._inflight:
            return None
        done, _ = ray.wait(list(self._inflight), num_returns=1, timeout=timeout)
        if not done:
            return None
        ref = done[0]
        slot, item = self._inflight.pop(ref)
        try:
            return slot, item, ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError, ray.exceptions.ObjectLostError,
                ray.exceptions.NodeDiedError, ray.exceptions.OutOfMemoryError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            return slot, item, {"status": "died", "pid": self._pids[slot],
                                "error": f"Ray worker died ({type(e).__name__}: {first[:300]})"}
        except ray.exceptions.RayTaskError as e:   # VideoWorker.run catches everything; kept for safety
            return slot, item, {"status": "failed", "error": f"{type(e.cause).__name__}: {e.cause}"}

    def restart(self, slot: int) -> dict:
        import ray
        old = self._actors[slot]
        if old is not None:
            try:
                ray.kill(old, no_restart=True)
            except Exception:  # already gone
                pass
        self._actors[slot] = self._cls.remote(self.run_args, self.threads)
        return self._ready(slot)

    def close(self) -> None:
        import ray
        if not ray.is_initialized():
            return
        for a in self._actors:
            if a is not None:
                try:
                    ray.kill(a, no_restart=True)
                except Exception:
                    pass
        self._actors = [None] * self.size
        self._inflight.clear()
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False
