"""Worker pool of local processes (used when Ray is not installed, or with --executor local).

Each worker is a ``spawn``-ed process that builds one VideoWorker (one loaded backend) and then
runs the videos it is sent over its pipe, one at a time. A worker that dies (killed, crashed,
out of memory) is noticed through its process sentinel; the pool reports the video it was
running as ``died`` and ``restart`` starts a fresh process in its slot. Workers die with the
parent (Linux ``PR_SET_PDEATHSIG``) and exit when their pipe closes.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
from multiprocessing.connection import wait as mp_wait
from typing import Dict, List, Optional, Tuple

from .inputs import BatchInputError, VideoItem


def _die_with_parent(parent_pid: int) -> None:
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):                 # not Linux: the closed pipe ends the worker
        pass
    if os.getppid() != parent_pid:                    # the parent died before prctl
        os._exit(1)


def _worker_main(conn, run_args: List[str], threads: Optional[int], parent_pid: int,
                 env: Dict[str, str]) -> None:
    _die_with_parent(parent_pid)
    os.environ.update(env)
    from .worker import VideoWorker
    worker = VideoWorker(run_args, threads)
    conn.send(worker.info())
    if worker.error is not None:
        return
    try:
        while True:
            try:
                item = conn.recv()
            except (EOFError, OSError):
                return
            if item is None:
                return
            conn.send(worker.run(item))
    finally:
        worker.close()


class LocalPool:
    """``size`` worker processes; see the module docstring. Interface shared with RayPool:
    start() -> [info], submit(slot, item), next_result(timeout) -> (slot, item, outcome) | None,
    restart(slot) -> info, busy(), close()."""

    kind = "local"

    def __init__(self, size: int, run_args: List[str], threads: Optional[int] = None,
                 gpus_per_worker: float = 0.0, start_timeout: float = 600.0):
        self.size = size
        self.run_args = list(run_args)
        self.threads = threads
        self.gpus_per_worker = gpus_per_worker
        self.start_timeout = start_timeout
        self._ctx = mp.get_context("spawn")
        self._procs: List[Optional[mp.Process]] = [None] * size
        self._conns: list = [None] * size
        self._inflight: Dict[int, VideoItem] = {}

    def _env(self, slot: int) -> Dict[str, str]:
        env = {}
        if self.gpus_per_worker > 0:
            visible = os.environ.get("CUDA_VISIBLE_DEVICES")
            devices = [d for d in (visible.split(",") if visible else []) if d.strip()]
            if devices:   # round-robin over the visible GPUs, whole GPUs per worker
                n = max(1, int(self.gpus_per_worker))
                env["CUDA_VISIBLE_DEVICES"] = ",".join(devices[(slot * n + k) % len(devices)] for k in range(n))
        return env

    def _spawn(self, slot: int) -> dict:
        parent, child = self._ctx.Pipe()
        p = self._ctx.Process(target=_worker_main, name=f"mdqe-batch-worker-{slot}",
                              args=(child, self.run_args, self.threads, os.getpid(), self._env(slot)), daemon=True)
        p.start()
        child.close()
        self._procs[slot], self._conns[slot] = p, parent
        ready = mp_wait([parent, p.sentinel], timeout=self.start_timeout)
        info = None
        if parent in ready:
            try:
                info = parent.recv()
            except (EOFError, OSError):
                info = None
        if info is None:
            self._stop(slot)
            raise BatchInputError(f"local worker {slot} did not start (exit code {p.exitcode})")
        if info.get("error"):
            self._stop(slot)
            raise BatchInputError(info["error"])
        return info

    def start(self) -> List[dict]:
        return [self._spawn(i) for i in range(self.size)]

    def submit(self, slot: int, item: VideoItem) -> None:
        self._inflight[slot] = item
        self._conns[slot].send(item)

    def busy(self) -> int:
        return len(self._inflight)

    def next_result(self, timeout: Optional[float] = None) -> Optional[Tuple[int, VideoItem, dict]]:
        if not self._inflight:
            return None
        waitables = {}
        for slot in self._inflight:
            waitables[self._conns[slot]] = slot
            waitables[self._procs[slot].sentinel] = slot
        ready = mp_wait(list(waitables), timeout=timeout)
        if not ready:
            return None
        slot = waitables[ready[0]]
        item = self._inflight.pop(slot)
        conn, proc = self._conns[slot], self._procs[slot]
        try:
            if conn.poll():
                return slot, item, conn.recv()
        except (EOFError, OSError):
            pass
        proc.join(timeout=5)
        code = proc.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return slot, item, {"status": "died", "error": f"worker process {proc.pid} died ({how})",
                            "pid": proc.pid}

    def worker_pid(self, slot: int) -> Optional[int]:
        p = self._procs[slot]
        return p.pid if p is not None else None

    def restart(self, slot: int) -> dict:
        self._stop(slot)
        return self._spawn(slot)

    def _stop(self, slot: int, graceful: bool = False) -> None:
        p, conn = self._procs[slot], self._conns[slot]
        if conn is not None:
            if graceful:
                try:
                    conn.send(None)
                except (OSError, ValueError):
                    pass
            conn.close()
        if p is not None:
            p.join(timeout=10 if graceful else 0.1)
            if p.is_alive():
                p.kill()
                p.join(timeout=10)
        self._procs[slot] = self._conns[slot] = None
        self._inflight.pop(slot, None)

    def close(self) -> None:
        for slot in range(self.size):
            self._stop(slot, graceful=slot not in self._inflight)
