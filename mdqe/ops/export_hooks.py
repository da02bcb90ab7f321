"""ONNX export of MSDeformAttn (owned by the export work, issue 4).

`active_mode()` returns None (plain tracing of the torch form), "onnx" or "plugin".
`export_ms_deform_attn(...)` emits the chosen form while torch.onnx export runs.
"""
from __future__ import annotations

_MODE = None


def active_mode():
    return _MODE


def export_ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    from .ms_deform_attn import ms_deform_attn_torch
    return ms_deform_attn_torch(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)
