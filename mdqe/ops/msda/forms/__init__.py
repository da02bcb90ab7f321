"""The ONNX export forms of MSDeformAttn, one module each, registered as implementations of
`mdqe.ops.ms_deform_attn` under the form names of ``runtime.contract.MSDA_FORMS`` (the one home of
the names and plugin identities):

- "onnx"        `gather.py`      pure ONNX, one Gather per level (the default)
- "gridsample"  `gridsample.py`  pure ONNX, one GridSample per level
- "plugin"      `plugin.py`      one MDQEMSDeformAttn node (our TensorRT plugin)
- "trt-builtin" `trt_builtin.py` one MultiscaleDeformableAttnPlugin_TRT node (NVIDIA's plugin)

A form is chosen explicitly, like any implementation: `impl="plugin"` at a call, or on a model with
`mdqe.ops.msda.use_msda_impl(model, form)` (what export/to_onnx.py does). Each form also computes
the op's numbers when not exporting. `level_sizes.py`: the level-size hint of the export wrappers;
`census.py`: node counts the exporter expects.
"""
from __future__ import annotations

from runtime.contract import (MSDA_FORMS, MSDA_GRIDSAMPLE, MSDA_ONNX, MSDA_PLUGIN, MSDA_TRT_BUILTIN,
                              check_msda_form)

from .census import expected_gridsample_nodes, expected_msda_calls
from .custom_node import DOMAIN_VERSION
from .gather import ms_deform_attn_gather_form
from .gridsample import ms_deform_attn_gridsample_form
from .level_sizes import level_sizes_hint
from .plugin import ms_deform_attn_plugin_form
from .trt_builtin import ms_deform_attn_trt_builtin_form, trt_builtin_form

FORMS = {
    MSDA_ONNX: ms_deform_attn_gather_form,
    MSDA_GRIDSAMPLE: ms_deform_attn_gridsample_form,
    MSDA_PLUGIN: ms_deform_attn_plugin_form,
    MSDA_TRT_BUILTIN: ms_deform_attn_trt_builtin_form,
}
assert tuple(FORMS) == MSDA_FORMS, "one implementation per form of runtime.contract.MSDA_FORMS"


def form_impl(form: str, plugin_version: str | None = None):
    """The implementation of export form `form` (a name of MSDA_FORMS); `plugin_version` is an option
    of "trt-builtin" only ("2" default, "1" for TensorRT older than 10.11). ValueError otherwise."""
    check_msda_form(form, "MSDeformAttn export form")
    if plugin_version is not None and form != MSDA_TRT_BUILTIN:
        raise ValueError("plugin_version is an option of the trt-builtin form only")
    if form == MSDA_TRT_BUILTIN:
        return trt_builtin_form(plugin_version)
    return FORMS[form]


__all__ = ["FORMS", "DOMAIN_VERSION", "form_impl", "trt_builtin_form", "level_sizes_hint", "expected_msda_calls",
           "expected_gridsample_nodes", "ms_deform_attn_gather_form", "ms_deform_attn_gridsample_form",
           "ms_deform_attn_plugin_form", "ms_deform_attn_trt_builtin_form"]
