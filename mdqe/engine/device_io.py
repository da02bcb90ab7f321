"""Host <-> device transfers for inference on a GPU (the torch backend's frames and features).

`HostToDevice.upload(name, array)`: numpy -> device tensor. On a CUDA device the array is copied
into a page-locked (pinned) staging buffer kept per (name, shape, dtype), then to the device with
`non_blocking=True`: the copy is queued on the current stream and the host returns at once, so the
host goes on queueing the model's kernels while the copy runs (a copy from pageable memory makes the
host wait until the copy, and everything queued before it, has finished). A staging buffer is reused
only after the copy that read it has finished (an event per buffer). On the CPU it is
`torch.from_numpy`.

`to_host(tensors)`: device tensors -> numpy float32 arrays (dtype kept for integers), with all
device-to-host copies queued asynchronously into pinned memory and one synchronisation at the end.
"""
from __future__ import annotations

from typing import Dict, Iterable, Tuple

import numpy as np
import torch


class HostToDevice:
    def __init__(self, device, pinned: bool = True):
        self.device = torch.device(device)
        self.pinned = bool(pinned) and self.device.type == "cuda"
        self._staging: Dict[Tuple, Tuple[torch.Tensor, object]] = {}

    def upload(self, name: str, array: np.ndarray) -> torch.Tensor:
        """array [any shape] -> tensor on the device (same dtype)."""
        array = np.ascontiguousarray(array)
        if self.device.type == "cpu":
            return torch.from_numpy(array)
        if not self.pinned:
            return torch.from_numpy(array).to(self.device)
        key = (name, array.shape, array.dtype.str)
        entry = self._staging.get(key)
        if entry is None:
            buf = torch.empty(array.shape, dtype=torch.from_numpy(array).dtype, pin_memory=True)
            entry = (buf, torch.cuda.Event())
            self._staging[key] = entry
        buf, done = entry
        done.synchronize()              # the previous copy out of this buffer has finished
        buf.numpy()[...] = array
        out = buf.to(self.device, non_blocking=True)
        done.record()
        return out


def to_host(tensors: Dict[str, torch.Tensor], names: Iterable[str] = None, copy: bool = False) -> Dict[str, np.ndarray]:
    """{name: device tensor} -> {name: numpy}; floating tensors become float32. One sync for all copies.
    A CPU tensor's array shares its memory unless `copy` (needed when the tensor is reused, e.g. a
    CUDA-graph static output replayed on the CPU by EagerReplayApi)."""
    names = list(tensors) if names is None else list(names)
    cpu = {}
    for k in names:
        t = tensors[k].detach()
        if t.is_floating_point() and t.dtype != torch.float32:
            t = t.float()
        cpu[k] = t.to("cpu", non_blocking=t.is_cuda, copy=copy)
    if any(tensors[k].is_cuda for k in names):
        torch.cuda.current_stream().synchronize()
    return {k: v.numpy() for k, v in cpu.items()}
