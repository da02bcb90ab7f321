"""Export form "trt-builtin": ONE node per call for NVIDIA's ``MultiscaleDeformableAttnPlugin_TRT``
(``runtime.contract.TRT_BUILTIN_PLUGIN``, in libnvinfer_plugin): the five inputs of the "plugin"
form (the two index inputs Cast to INT32), attributes ``plugin_version`` ("2" by default, "1" for
TensorRT < 10.11) and ``plugin_namespace`` "" only, output ``[N, Lq, M, D]`` followed by a Reshape
to ``[N, Lq, M*D]``.
"""
from __future__ import annotations

import functools

import torch

from runtime.contract import TRT_BUILTIN_PLUGIN

from ....tracing import onnx_dynamo_export
from .custom_node import DOMAIN_VERSION, ONNX_INT32, eager_output, traced_sizes


def check_plugin_version(plugin_version: str) -> None:
    """ValueError unless `plugin_version` is one NVIDIA's plugin exists in."""
    if plugin_version not in TRT_BUILTIN_PLUGIN.versions:
        raise ValueError(f"{TRT_BUILTIN_PLUGIN.op_type} plugin_version must be one of "
                         f"{TRT_BUILTIN_PLUGIN.versions}, got {plugin_version!r}")


def trt_builtin_form(plugin_version: str | None = None):
    """The form as an implementation function writing `plugin_version` (default
    TRT_BUILTIN_PLUGIN.version) on its nodes: pass it as `impl=` or to `use_msda_impl`."""
    if plugin_version is None:
        return ms_deform_attn_trt_builtin_form
    check_plugin_version(plugin_version)
    return functools.partial(ms_deform_attn_trt_builtin_form, plugin_version=plugin_version)


def ms_deform_attn_trt_builtin_form(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                                    plugin_version: str | None = None):
    """One MultiscaleDeformableAttnPlugin_TRT node (+ Reshape) while exporting; the op's numbers
    otherwise. -> [N, Lq, M*D]."""
    version = plugin_version or TRT_BUILTIN_PLUGIN.version
    N, Lq = value.shape[0], sampling_locations.shape[1]
    M, D = int(value.shape[2]), int(value.shape[3])
    if onnx_dynamo_export():
        out = _builtin_symbolic_dynamo(value, spatial_shapes, level_start_index, sampling_locations,
                                       attention_weights, version)
    else:
        out = _TrtBuiltinMSDA.apply(value, spatial_shapes, level_start_index, sampling_locations,
                                    attention_weights, version, M, D)
    return out.reshape(N, Lq, M * D)                                         # [N, Lq, M, D] -> [N, Lq, M*D]


class _TrtBuiltinMSDA(torch.autograd.Function):
    """Traced as one `MultiscaleDeformableAttnPlugin_TRT` node (TorchScript-based exporter)."""

    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, sampling_locations, attention_weights, version, m, d):
        N, _, M, D = value.shape
        return eager_output(value, spatial_shapes, level_start_index, sampling_locations,
                            attention_weights).reshape(N, sampling_locations.shape[1], M, D)

    @staticmethod
    def symbolic(g, value, spatial_shapes, level_start_index, sampling_locations, attention_weights, version, m, d):
        ss32 = g.op("Cast", spatial_shapes, to_i=ONNX_INT32)        # as the plugin takes them
        lsi32 = g.op("Cast", level_start_index, to_i=ONNX_INT32)
        ident = TRT_BUILTIN_PLUGIN
        out = g.op(f"{ident.onnx_domain}::{ident.op_type}", value, ss32, lsi32, sampling_locations,
                   attention_weights, plugin_version_s=str(version), plugin_namespace_s=ident.namespace)
        # output [N, Lq, M, D] of value's type; M and D are fixed by the weights, N and Lq may be dynamic
        vs, ls = traced_sizes(value, 4), traced_sizes(sampling_locations, 6)
        n = vs[0] if vs is not None else None
        lq = ls[1] if ls is not None else None
        out.setType(value.type().with_sizes([n, lq, int(m), int(d)]))
        return out


def _builtin_symbolic_dynamo(value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
                             version):
    """torch.export-based exporter: `torch.onnx.ops.symbolic` emits the NVIDIA plugin node."""
    ident = TRT_BUILTIN_PLUGIN
    N, Lq = value.shape[0], sampling_locations.shape[1]
    return torch.onnx.ops.symbolic(
        f"{ident.onnx_domain}::{ident.op_type}",
        [value, spatial_shapes.to(torch.int32), level_start_index.to(torch.int32), sampling_locations,
         attention_weights],
        {"plugin_version": version, "plugin_namespace": ident.namespace},
        dtype=value.dtype, shape=[N, Lq, int(value.shape[2]), int(value.shape[3])], version=DOMAIN_VERSION)
