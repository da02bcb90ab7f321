"""The one "are we exporting" predicate of the torch package (and the one "which exporter" test).

`exporting()` is True while a graph is being recorded rather than computed: torch.jit tracing (the
TorchScript-based torch.onnx exporter), any torch.onnx export (also the torch.export-based one) and
torch.compile / torch.export (dynamo). Code then skips eager-only work: value checks that read
tensors on the host, host-side size arithmetic, native kernels that a tracer cannot record.

`onnx_dynamo_export()` tells the two torch.onnx exporters apart where a custom ONNX node is written
(mdqe/ops/msda/forms). `torch.jit.is_tracing()` alone answers a third question, asked where sizes
must become Shape ops for the TorchScript tracer (`torch._shape_as_tensor`: encoder.shapes_tensor,
padding.full_valid_hw); dynamo traces Python sizes symbolically without that.
"""
from __future__ import annotations

import torch


def exporting() -> bool:
    """True while torch.jit tracing, torch.onnx export or torch.compile/export runs."""
    return bool(torch.jit.is_tracing() or torch.onnx.is_in_onnx_export() or torch.compiler.is_compiling())


def onnx_dynamo_export() -> bool:
    """True inside torch.onnx's torch.export-based exporter (``dynamo=True``), False in the
    TorchScript-based one and outside any export."""
    return bool(torch.onnx.is_in_onnx_export() and not torch.jit.is_tracing())
