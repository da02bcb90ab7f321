"""What the two custom-node forms ("plugin", "trt-builtin") share: the eager output they stand for,
the traced sizes of their inputs and the ONNX constants.

Both forms serve the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``, the one
``export/to_onnx.py`` uses: an autograd Function whose ``symbolic`` writes the node) and the
torch.export-based one (``dynamo=True``: ``torch.onnx.ops.symbolic``; told apart by
``mdqe.tracing.onnx_dynamo_export``). Outside an export they compute the op's numbers with the
torch form, so a model set to a custom-node form still runs.
"""
from __future__ import annotations

from ..torch_form import ms_deform_attn_torch

DOMAIN_VERSION = 1           # opset version of the custom ONNX domains (custom_opsets of torch.onnx.export)
ONNX_INT32 = 6               # onnx.TensorProto.INT32: both plugins take spatial_shapes / level_start_index as INT32


def eager_output(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """[N, Lq, M*D] of value.dtype, computed by the torch form in float32."""
    out = ms_deform_attn_torch(value.float(), spatial_shapes, level_start_index, sampling_locations.float(),
                               attention_weights.float())
    return out.to(value.dtype)


def traced_sizes(t, rank: int):
    """The sizes of a TorchScript graph value of the given rank (None for a dynamic axis), or None."""
    try:
        sizes = t.type().varyingSizes()
    except RuntimeError:
        return None
    return sizes if sizes is not None and len(sizes) == rank else None
