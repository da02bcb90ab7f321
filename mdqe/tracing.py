"""The one "are we exporting" predicate of the torch package.

`exporting()` is True while a graph is being recorded rather than computed: torch.jit tracing (the
TorchScript-based torch.onnx exporter), any torch.onnx export (also the torch.export-based one) and
torch.compile / torch.export (dynamo). Code then skips eager-only work: value checks that read
tensors on the host, host-side size arithmetic, native kernels that a tracer cannot record.
"""
from __future__ import annotations

import torch


def exporting() -> bool:
    """True while torch.jit tracing, torch.onnx export or torch.compile/export runs."""
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling())
