"""Export form "plugin": ONE custom node per call that the TensorRT ONNX parser maps to our plugin
(``runtime.contract.OUR_PLUGIN``): domain ``mdqe``, op_type ``MDQEMSDeformAttn``, attributes
``plugin_version="1"``, ``plugin_namespace="mdqe"``, ``num_heads=M``, ``head_dim=D``; inputs
(value [N, S, M, D], spatial_shapes INT32 [L, 2], level_start_index INT32 [L] -- Casts from int64 in
the graph --, sampling_locations [N, Lq, M, L, P, 2], attention_weights [N, Lq, M, L, P]); output
``[N, Lq, M*D]`` with the dtype of ``value``.
"""
from __future__ import annotations

import torch

from runtime.contract import OUR_PLUGIN

from ....tracing import onnx_dynamo_export
from .custom_node import DOMAIN_VERSION, ONNX_INT32, eager_output, traced_sizes


def ms_deform_attn_plugin_form(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """One MDQEMSDeformAttn node while exporting; the op's numbers otherwise. -> [N, Lq, M*D]."""
    if onnx_dynamo_export():
        return _plugin_symbolic_dynamo(value, spatial_shapes, level_start_index, sampling_locations,
                                       attention_weights)
    return _PluginMSDA.apply(value, spatial_shapes, level_start_index, sampling_locations,
                             attention_weights, int(value.shape[2]), int(value.shape[3]))


class _PluginMSDA(torch.autograd.Function):
    """Traced as one `mdqe::MDQEMSDeformAttn` node by the TorchScript-based exporter."""

    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, sampling_locations, attention_weights, m, d):
        return eager_output(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)

    @staticmethod
    def symbolic(g, value, spatial_shapes, level_start_index, sampling_locations, attention_weights, m, d):
        # the plugin takes INT32 shapes / offsets (docs/INTERFACES.md section 2): cast in the graph
        ss32 = g.op("Cast", spatial_shapes, to_i=ONNX_INT32)
        lsi32 = g.op("Cast", level_start_index, to_i=ONNX_INT32)
        out = g.op(f"{OUR_PLUGIN.onnx_domain}::{OUR_PLUGIN.op_type}", value, ss32, lsi32, sampling_locations,
                   attention_weights, plugin_version_s=OUR_PLUGIN.version, plugin_namespace_s=OUR_PLUGIN.namespace,
                   num_heads_i=int(m), head_dim_i=int(d))
        # output [N, Lq, M*D], dtype of value; M*D is fixed by the weights, N and Lq may be dynamic
        vs, ls = traced_sizes(value, 4), traced_sizes(sampling_locations, 6)
        n = vs[0] if vs is not None else None
        lq = ls[1] if ls is not None else None
        out.setType(value.type().with_sizes([n, lq, int(m) * int(d)]))
        return out


def _plugin_symbolic_dynamo(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """torch.export-based exporter: `torch.onnx.ops.symbolic` emits the custom node."""
    N, Lq = value.shape[0], sampling_locations.shape[1]
    M, D = int(value.shape[2]), int(value.shape[3])
    return torch.onnx.ops.symbolic(
        f"{OUR_PLUGIN.onnx_domain}::{OUR_PLUGIN.op_type}",
        [value, spatial_shapes.to(torch.int32), level_start_index.to(torch.int32), sampling_locations,
         attention_weights],
        {"plugin_version": OUR_PLUGIN.version, "plugin_namespace": OUR_PLUGIN.namespace, "num_heads": M,
         "head_dim": D},
        dtype=value.dtype, shape=[N, Lq, M * D], version=DOMAIN_VERSION)
