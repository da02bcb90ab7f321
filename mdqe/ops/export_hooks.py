"""ONNX export of MSDeformAttn (issue 4).

`mdqe.ops.ms_deform_attn` routes every call here while `torch.onnx` export runs and
`active_mode()` is not None. Two forms (shared DESIGN.md section 3):

- ``"onnx"``: the pure-ONNX form: per level a dynamic ``Slice`` of ``value`` (start and size
  taken from the ``level_start_index`` / ``spatial_shapes`` *tensors*, so graphs stay valid at
  every resolution), ``Reshape`` to ``[N*M, D, H_l, W_l]`` and ``GridSample`` (bilinear, zeros,
  align_corners=0; needs opset >= 16), weighted sum over levels and points.
- ``"plugin"``: ONE custom node per call that the TensorRT ONNX parser maps to our plugin:
  domain ``mdqe``, op_type ``MDQEMSDeformAttn``, attributes ``plugin_version="1"``,
  ``plugin_namespace="mdqe"``, ``num_heads=M``, ``head_dim=D`` (plugin fields the plugin checks
  against the shapes), inputs (value, spatial_shapes INT32, level_start_index INT32 -- Casts from
  int64 in the graph --, sampling_locations, attention_weights), output ``[N, Lq, M*D]`` with the
  dtype of ``value``.

Both the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``, the one
``export/to_onnx.py`` uses) and the torch.export-based exporter (``dynamo=True``, via
``torch.onnx.ops.symbolic``) are supported.

Usage::

    with export_mode("plugin"):
        torch.onnx.export(model, args, path, dynamo=False, ...)
"""
from __future__ import annotations

import contextlib
import threading
import warnings

import torch

PLUGIN_OP_TYPE = "MDQEMSDeformAttn"
PLUGIN_DOMAIN = "mdqe"
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = "mdqe"
PLUGIN_DOMAIN_VERSION = 1
MODES = ("onnx", "plugin")

_STATE = threading.local()


def active_mode():
    """None (no export hook: the torch form is traced as is), "onnx" or "plugin"."""
    return getattr(_STATE, "mode", None)


@contextlib.contextmanager
def export_mode(mode: str):
    """Select the MSDeformAttn form emitted by torch.onnx export inside the block."""
    if mode not in MODES:
        raise ValueError(f"MSDeformAttn export mode must be one of {MODES}, got {mode!r}")
    previous = active_mode()
    _STATE.mode = mode
    try:
        yield
    finally:
        _STATE.mode = previous


def export_ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """Emit the active form (called by `mdqe.ops.ms_deform_attn` during export)."""
    mode = active_mode()
    if mode == "plugin":
        if torch.jit.is_tracing():  # TorchScript-based exporter
            return _PluginMSDA.apply(value, spatial_shapes, level_start_index, sampling_locations,
                                     attention_weights, int(value.shape[2]), int(value.shape[3]))
        return _plugin_symbolic_dynamo(value, spatial_shapes, level_start_index, sampling_locations,
                                       attention_weights)
    if mode == "onnx":
        return ms_deform_attn_onnx_form(value, spatial_shapes, level_start_index, sampling_locations,
                                        attention_weights)
    raise RuntimeError(f"export_ms_deform_attn called with no export mode active (mode={mode!r})")


@contextlib.contextmanager
def level_sizes_hint(sizes):
    """Tell the onnx form the feature-level sizes of the graph being traced, as values derived from
    tensor shapes (0-d traced tensors of ``x.shape``), e.g. ``[(H//8, W//8), ...]``. With a hint, the
    per-level Slice/Reshape sizes come from Shape ops only (rank-0/1 shape tensors TensorRT resolves
    at build time) instead of from the *values* of ``spatial_shapes`` (a rank-2 tensor: TensorRT
    cannot use one as a shape tensor, and a decoder graph input would become a shape input).
    Every call checks at trace time that the hint equals the concrete ``spatial_shapes``."""
    previous = getattr(_STATE, "level_sizes", None)
    _STATE.level_sizes = list(sizes)
    try:
        yield
    finally:
        _STATE.level_sizes = previous


def _level_sizes_for_call(value, spatial_shapes):
    """The (h, w) per MSDA level for this call from the hint, or None without a hint. A call either
    attends the feature levels (rows == hint) or is a temporal cross-attention over T frames of one
    feature level (every row == hint[l])."""
    hint = getattr(_STATE, "level_sizes", None)
    if not hint:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarning: reading concrete values on purpose
        rows = [tuple(int(v) for v in r) for r in spatial_shapes.tolist()]
        concrete = [(int(h), int(w)) for h, w in hint]
    if rows == concrete:
        return list(hint)
    if rows and all(r == rows[0] for r in rows):
        levels = [i for i, c in enumerate(concrete) if c == rows[0]]
        if len(levels) == 1:
            return [hint[levels[0]]] * len(rows)
        if len(levels) > 1:
            raise RuntimeError(f"MSDeformAttn export: feature levels {levels} have the same size {rows[0]} at this "
                               "export resolution, so a per-level size cannot be told apart; export at a larger size")
    raise RuntimeError(f"MSDeformAttn export: spatial_shapes {rows} match neither the feature levels {concrete} "
                       "nor T copies of one of them")


def ms_deform_attn_onnx_form(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """grid_sample form written for tracing: level sizes and offsets stay traced values (dynamic
    Slice / Reshape in the graph), only M, D, L, P (fixed by the weights) are Python ints.
    Level sizes come from `level_sizes_hint` when one is active, else from the values of
    `spatial_shapes`. `level_start_index` must be the exclusive cumulative sum of H_l*W_l (the op's
    definition; true for every caller in the model, including TCA's t*H*W): the offsets are
    recomputed as running sums (no CumSum in shape computations)."""
    del level_start_index
    M, D = int(value.shape[2]), int(value.shape[3])
    L, P = int(sampling_locations.shape[3]), int(sampling_locations.shape[4])
    Lq = sampling_locations.shape[1]
    sizes = _level_sizes_for_call(value, spatial_shapes)
    if sizes is None:
        sizes = [(spatial_shapes[lvl, 0], spatial_shapes[lvl, 1]) for lvl in range(L)]
    grids = 2.0 * sampling_locations - 1.0                                   # [N, Lq, M, L, P, 2]
    # [N, Lq, M, L, P, 2] -> [N, M, L, Lq, P, 2] -> [N*M, L, Lq, P, 2]
    grids = grids.permute(0, 2, 3, 1, 4, 5).reshape(-1, L, Lq, P, 2)
    value_t = value.permute(0, 2, 3, 1)                                       # [N, M, D, S]
    sampled = []
    start = 0
    for lvl in range(L):
        h, w = sizes[lvl]
        v = value_t[..., start:start + h * w]                                   # dynamic Slice
        start = start + h * w
        v = v.reshape(-1, D, h, w)                                             # [N*M, D, H_l, W_l]
        sampled.append(torch.nn.functional.grid_sample(
            v, grids[:, lvl], mode="bilinear", padding_mode="zeros", align_corners=False))  # [N*M, D, Lq, P]
    stacked = torch.stack(sampled, dim=-2)                                     # [N*M, D, Lq, L, P]
    w_ = attention_weights.permute(0, 2, 1, 3, 4).reshape(-1, 1, Lq, L, P)    # [N*M, 1, Lq, L, P]
    out = (stacked * w_).sum(dim=(-1, -2))                                     # [N*M, D, Lq]
    return out.reshape(-1, M * D, Lq).transpose(1, 2)                          # [N, Lq, M*D]


def _reference(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    from .ms_deform_attn import ms_deform_attn_torch
    out = ms_deform_attn_torch(value.float(), spatial_shapes, level_start_index, sampling_locations.float(),
                               attention_weights.float())
    return out.to(value.dtype)


class _PluginMSDA(torch.autograd.Function):
    """Traced as one `mdqe::MDQEMSDeformAttn` node by the TorchScript-based exporter."""

    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, sampling_locations, attention_weights, m, d):
        return _reference(value, spatial_shapes, level_start_index, sampling_locations, attention_weights)

    @staticmethod
    def symbolic(g, value, spatial_shapes, level_start_index, sampling_locations, attention_weights, m, d):
        # the plugin takes INT32 shapes / offsets (docs/INTERFACES.md section 2): cast in the graph
        ss32 = g.op("Cast", spatial_shapes, to_i=6)        # onnx.TensorProto.INT32
        lsi32 = g.op("Cast", level_start_index, to_i=6)
        out = g.op(f"{PLUGIN_DOMAIN}::{PLUGIN_OP_TYPE}", value, ss32, lsi32, sampling_locations, attention_weights,
                   plugin_version_s=PLUGIN_VERSION, plugin_namespace_s=PLUGIN_NAMESPACE,
                   num_heads_i=int(m), head_dim_i=int(d))
        # output [N, Lq, M*D], dtype of value; M*D is fixed by the weights, N and Lq may be dynamic
        vtype, ltype = value.type(), sampling_locations.type()
        try:
            vs, ls = vtype.varyingSizes(), ltype.varyingSizes()
        except RuntimeError:
            vs, ls = None, None
        n = vs[0] if vs is not None and len(vs) == 4 else None
        lq = ls[1] if ls is not None and len(ls) == 6 else None
        out.setType(vtype.with_sizes([n, lq, int(m) * int(d)]))
        return out


def _plugin_symbolic_dynamo(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """torch.export-based exporter: `torch.onnx.ops.symbolic` emits the custom node."""
    N, Lq = value.shape[0], sampling_locations.shape[1]
    M, D = int(value.shape[2]), int(value.shape[3])
    return torch.onnx.ops.symbolic(
        f"{PLUGIN_DOMAIN}::{PLUGIN_OP_TYPE}",
        [value, spatial_shapes.to(torch.int32), level_start_index.to(torch.int32), sampling_locations,
         attention_weights],
        {"plugin_version": PLUGIN_VERSION, "plugin_namespace": PLUGIN_NAMESPACE, "num_heads": M, "head_dim": D},
        dtype=value.dtype, shape=[N, Lq, M * D], version=PLUGIN_DOMAIN_VERSION)


def expected_msda_calls(cfg) -> dict:
    """How many MSDeformAttn calls (= plugin nodes) each exported graph holds, from the config:
    encoder: one self-attention per encoder layer; decoder: per layer one frame-level
    cross-attention plus one temporal cross-attention (TCA) per feature level."""
    return {"encoder": int(cfg.enc_layers),
            "decoder": int(cfg.dec_layers) * (1 + int(cfg.num_feature_levels))}
