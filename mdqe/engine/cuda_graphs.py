"""CUDA graphs for fixed-shape inference calls (the torch backend's encoder and decoder).

`GraphedCall(fn)` wraps `fn(*tensors) -> outputs` (a tensor, or a dict / list / tuple of tensors).
The first call with a new input signature (shapes, dtypes, devices of the tensors, plus an optional
hashable `key` for anything the tensors do not show, e.g. level sizes held on the host) copies the
inputs into static buffers, runs `fn` `warmup` times on a side stream (lazy initialisation, cuDNN/cuBLAS
handles, the MSDeformAttn index cache), then captures one run into a CUDA graph. Later calls copy the
inputs into the static buffers and replay the graph.

The returned outputs are the graph's static output tensors: the next call with the same signature
overwrites them, so consume (or copy) them before calling again.

Fallback: if warm-up or capture raises (an op that synchronises with the host, a host-to-device copy
from pageable memory, ...), that signature runs eagerly from then on and `failures[signature]` keeps the
reason; `status()` says which signatures replay a graph and which run eagerly, and why. At most
`max_graphs` signatures are captured (each holds its own memory pool); more run eagerly.

The CUDA calls go through a small `api` object (`TorchCudaGraphApi` by default) so that the logic is
unit-tested on the CPU with a fake (tests/test_gpu_suite_cpu.py).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, Hashable, Optional

import torch


class TorchCudaGraphApi:
    """The torch.cuda calls GraphedCall needs."""

    def side_stream(self, device):
        return torch.cuda.Stream(device=device)

    def current_stream(self, device):
        return torch.cuda.current_stream(device)

    def use_stream(self, stream):
        return torch.cuda.stream(stream)

    def new_graph(self):
        return torch.cuda.CUDAGraph()

    def capture(self, graph, body: Callable[[], Any], stream=None):
        """Capture `body()` into `graph`; returns its outputs (the graph's static outputs)."""
        with torch.cuda.graph(graph, stream=stream):
            out = body()
        return out

    def replay(self, graph) -> None:
        graph.replay()

    def synchronize(self, device) -> None:
        torch.cuda.synchronize(device)


@dataclass
class _Captured:
    graph: Any
    inputs: list
    outputs: Any


def _signature(args, key) -> tuple:
    return tuple((tuple(a.shape), a.dtype, str(a.device)) for a in args) + (key,)


class GraphedCall:
    """fn(*tensors) replayed from CUDA graphs, one per input signature; eager fallback on failure."""

    def __init__(self, fn: Callable, *, warmup: int = 2, max_graphs: int = 4, api=None, name: str = "fn"):
        self.fn = fn
        self.warmup = int(warmup)
        self.max_graphs = int(max_graphs)
        self.api = api if api is not None else TorchCudaGraphApi()
        self.name = name
        self.graphs: Dict[tuple, _Captured] = {}
        self.failures: Dict[tuple, str] = {}
        self.replays = 0
        self.eager_calls = 0

    def __call__(self, *args: torch.Tensor, key: Hashable = None):
        sig = _signature(args, key)
        cap = self.graphs.get(sig)
        if cap is None:
            if sig in self.failures:
                return self._eager(args)
            if len(self.graphs) >= self.max_graphs:
                self.failures[sig] = f"more than max_graphs={self.max_graphs} input signatures"
                return self._eager(args)
            try:
                cap = self._capture(args)
            except Exception as exc:  # noqa: BLE001 - the reason is kept and reported by status()
                self.failures[sig] = f"{type(exc).__name__}: {exc}".strip()[:500]
                self._recover(args)
                return self._eager(args)
            self.graphs[sig] = cap
        for static, a in zip(cap.inputs, args):
            static.copy_(a, non_blocking=True)
        self.api.replay(cap.graph)
        self.replays += 1
        return cap.outputs

    def _eager(self, args):
        self.eager_calls += 1
        return self.fn(*args)

    def _capture(self, args) -> _Captured:
        device = args[0].device if args else None
        static = [a.detach().clone() for a in args]
        side = self.api.side_stream(device)
        side.wait_stream(self.api.current_stream(device))
        with self.api.use_stream(side):
            for _ in range(self.warmup):
                self.fn(*static)
        self.api.current_stream(device).wait_stream(side)
        self.api.synchronize(device)
        graph = self.api.new_graph()
        outputs = self.api.capture(graph, lambda: self.fn(*static))
        return _Captured(graph, static, outputs)

    def _recover(self, args) -> None:
        """After a failed capture: let queued work finish so the eager run starts from a clean stream."""
        with contextlib.suppress(Exception):
            self.api.synchronize(args[0].device if args else None)

    def status(self) -> Dict[str, object]:
        """{'graphs': n captured, 'replays': n, 'eager_calls': n, 'failures': {signature: reason}}."""
        return {"name": self.name, "graphs": len(self.graphs), "replays": self.replays,
                "eager_calls": self.eager_calls,
                "failures": {_describe(sig): why for sig, why in self.failures.items()}}


def _describe(sig: tuple) -> str:
    parts = [f"{list(shape)}:{str(dtype).replace('torch.', '')}@{dev}" for shape, dtype, dev in sig[:-1]]
    if sig[-1] is not None:
        parts.append(f"key={sig[-1]}")
    return ", ".join(parts)


def maybe_graphed(fn: Callable, enabled: bool, **kwargs) -> Optional[GraphedCall]:
    """GraphedCall(fn, **kwargs) when `enabled`, else None (callers then run fn eagerly)."""
    return GraphedCall(fn, **kwargs) if enabled else None


class EagerReplayApi:
    """The GraphedCall api without a GPU: "capture" runs the body once and "replay" runs it again,
    copying the new results into the first run's output tensors (the static outputs). It exercises
    every step of GraphedCall (static inputs, warm-up, capture, replay, output aliasing, fallback) on
    the CPU, for tests and the CPU dry run of benchmarks/gpu_suite.py; it makes nothing faster."""

    class _Stream:
        def wait_stream(self, other) -> None:
            pass

    class _Graph:
        body = None
        outputs = None

    def __init__(self, fail_capture: Optional[str] = None):
        self.fail_capture = fail_capture
        self.captures = 0
        self.replays = 0

    def side_stream(self, device):
        return self._Stream()

    def current_stream(self, device):
        return self._Stream()

    def use_stream(self, stream):
        return contextlib.nullcontext()

    def new_graph(self):
        return self._Graph()

    def capture(self, graph, body, stream=None):
        if self.fail_capture:
            raise RuntimeError(self.fail_capture)
        self.captures += 1
        graph.body = body
        graph.outputs = body()
        return graph.outputs

    def replay(self, graph) -> None:
        self.replays += 1
        _copy_into(graph.outputs, graph.body())

    def synchronize(self, device) -> None:
        pass


def _copy_into(dst, src) -> None:
    if isinstance(dst, torch.Tensor):
        dst.copy_(src)
    elif isinstance(dst, dict):
        for k in dst:
            _copy_into(dst[k], src[k])
    elif isinstance(dst, (list, tuple)):
        for d, s in zip(dst, src):
            _copy_into(d, s)
    else:
        raise TypeError(f"graph outputs must be tensors or dicts/lists/tuples of tensors, got {type(dst).__name__}")
