"""ONNX export of MSDeformAttn.

`mdqe.ops.ms_deform_attn` routes every call here while `torch.onnx` export runs and
`active_mode()` is not None. Four forms (names and plugin identities: ``runtime.model_dir``,
the one home of that contract; shared DESIGN.md sections 3 and 8):

- ``"onnx"`` (default): pure ONNX, no GridSample and no custom node. Per level the four bilinear
  corners of every sampling point are read with ONE ``Gather`` (axis 0) from ``value`` viewed as
  ``[N*S*M, D]`` rows, weighted by (bilinear weight x attention weight, 0 for a corner outside the
  map: zero padding, pixel = loc * size - 0.5 as align_corners=False) and summed.
- ``"gridsample"``: pure ONNX with, per level, a dynamic ``Slice`` of ``value``, ``Reshape`` to
  ``[N*M, D, H_l, W_l]`` and ``GridSample`` (bilinear, zeros, align_corners=0; opset >= 16),
  weighted sum over levels and points.
- ``"plugin"``: ONE custom node per call that the TensorRT ONNX parser maps to our plugin
  (``runtime.model_dir.OUR_PLUGIN``): domain ``mdqe``, op_type ``MDQEMSDeformAttn``,
  attributes ``plugin_version="1"``, ``plugin_namespace="mdqe"``, ``num_heads=M``, ``head_dim=D``,
  inputs (value, spatial_shapes INT32, level_start_index INT32 -- Casts from int64 in the graph --,
  sampling_locations, attention_weights), output ``[N, Lq, M*D]`` with the dtype of ``value``.
- ``"trt-builtin"``: ONE node per call for NVIDIA's ``MultiscaleDeformableAttnPlugin_TRT``
  (``runtime.model_dir.TRT_BUILTIN_PLUGIN``, in libnvinfer_plugin): same five inputs (the two index
  inputs Cast to INT32), attributes ``plugin_version`` ("2" by default, "1" for TensorRT < 10.11)
  and ``plugin_namespace`` "" only, output ``[N, Lq, M, D]`` followed by a Reshape to ``[N, Lq, M*D]``.

Both the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``, the one
``export/to_onnx.py`` uses) and the torch.export-based exporter (``dynamo=True``, via
``torch.onnx.ops.symbolic``) are supported for the custom-node forms.

Usage::

    with export_mode("trt-builtin", plugin_version="1"):
        torch.onnx.export(model, args, path, dynamo=False, ...)
"""
from __future__ import annotations

import contextlib
import threading
import warnings

import torch

from runtime.contract import (MSDA_FORMS, MSDA_GRIDSAMPLE, MSDA_ONNX, MSDA_PLUGIN, MSDA_TRT_BUILTIN,
                              OUR_PLUGIN, TRT_BUILTIN_PLUGIN, check_msda_form)

PLUGIN_OP_TYPE = OUR_PLUGIN.op_type
PLUGIN_DOMAIN = OUR_PLUGIN.onnx_domain
PLUGIN_VERSION = OUR_PLUGIN.version
PLUGIN_NAMESPACE = OUR_PLUGIN.namespace
PLUGIN_DOMAIN_VERSION = 1           # opset version of the custom ONNX domains
MODES = MSDA_FORMS

_STATE = threading.local()


def active_mode():
    """None (no export hook: the torch form is traced as is) or one of MODES."""
    return getattr(_STATE, "mode", None)


def builtin_plugin_version() -> str:
    """plugin_version written on MultiscaleDeformableAttnPlugin_TRT nodes inside `export_mode`."""
    return getattr(_STATE, "builtin_version", None) or TRT_BUILTIN_PLUGIN.version


@contextlib.contextmanager
def export_mode(mode: str, plugin_version: str | None = None):
    """Select the MSDeformAttn form emitted by torch.onnx export inside the block.
    `plugin_version`: only for "trt-builtin" ("2" default, "1" for TensorRT older than 10.11)."""
    check_msda_form(mode, "MSDeformAttn export mode")
    if plugin_version is not None:
        if mode != MSDA_TRT_BUILTIN:
            raise ValueError("plugin_version is an option of the trt-builtin form only")
        if plugin_version not in TRT_BUILTIN_PLUGIN.versions:
            raise ValueError(f"{TRT_BUILTIN_PLUGIN.op_type} plugin_version must be one of "
                             f"{TRT_BUILTIN_PLUGIN.versions}, got {plugin_version!r}")
    previous = active_mode(), getattr(_STATE, "builtin_version", None)
    _STATE.mode, _STATE.builtin_version = mode, plugin_version
    try:
        yield
    finally:
        _STATE.mode, _STATE.builtin_version = previous


def export_ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """Emit the active form (called by `mdqe.ops.ms_deform_attn` during export)."""
    mode = active_mode()
    if mode == MSDA_TRT_BUILTIN:
        N, Lq = value.shape[0], sampling_locations.shape[1]
        M, D = int(value.shape[2]), int(value.shape[3])
        if torch.jit.is_tracing():
            out = _TrtBuiltinMSDA.apply(value, spatial_shapes, level_start_index, sampling_locations,
                                        attention_weights, builtin_plugin_version(), M, D)
        else:
            out = _builtin_symbolic_dynamo(value, spatial_shapes, level_start_index, sampling_locations,
                                           attention_weights)
        return out.reshape(N, Lq, M * D)                                         # [N, Lq, M, D] -> [N, Lq, M*D]
    if mode == MSDA_PLUGIN:
        if torch.jit.is_tracing():  # TorchScript-based exporter
            return _PluginMSDA.apply(value, spatial_shapes, level_start_index, sampling_locations,
                                     attention_weights, int(value.shape[2]), int(value.shape[3]))
        return _plugin_symbolic_dynamo(value, spatial_shapes, level_start_index, sampling_locations,
                                       attention_weights)
    if mode == MSDA_ONNX:
        return ms_deform_attn_gather_form(value, spatial_shapes, level_start_index, sampling_locations,
                                          attention_weights)
    if mode == MSDA_GRIDSAMPLE:
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


def _level_sizes(value, spatial_shapes, L):
    sizes = _level_sizes_for_call(value, spatial_shapes)
    if sizes is None:
        sizes = [(spatial_shapes[lvl, 0], spatial_shapes[lvl, 1]) for lvl in range(L)]
    return sizes


def ms_deform_attn_gather_form(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """Bilinear MSDeformAttn with Gather, written for tracing (the default pure-ONNX form).

    value [N, S, M, D] is read as rows ``[Z + N*S*M + Z, D]`` (Z zero rows before and after): the
    row of (frame n, pixel s, head m) is ``Z + (n*S + s)*M + m``. Per level l (size h x w from
    `level_sizes_hint` or the values of `spatial_shapes`; offset = running sum of h*w, i.e.
    `level_start_index` by its definition): x = loc_x * w - 0.5, y = loc_y * h - 0.5; a point with
    x <= -1, y <= -1, x >= w or y >= h (or NaN) contributes nothing; else its corners
    (y0,x0) (y0,x0+1) (y0+1,x0) (y0+1,x0+1) get weight attn * bilinear weight, 0 for a corner
    outside the map (zero padding). One Gather reads the ``[N, Lq, M, 4P, D]`` corner rows (a corner
    outside the map addresses at most w+1 pixels outside its level: a row of a neighbouring level or
    of the zero pad, read with weight 0) and a MatMul with the ``[N, Lq, M, 1, 4P]`` weights sums
    them. Index arithmetic is int64 (exact in fp16 graphs too) and done once per point, the four
    corners being fixed row offsets (0, 1, w, w+1) * M. Returns [N, Lq, M*D].
    """
    del level_start_index
    N, S = value.shape[0], value.shape[1]
    M, D = int(value.shape[2]), int(value.shape[3])
    Lq = sampling_locations.shape[1]
    L, P = int(sampling_locations.shape[3]), int(sampling_locations.shape[4])
    sizes = _level_sizes(value, spatial_shapes, L)
    pad_pixels = 2
    for _, w in sizes:
        pad_pixels = pad_pixels + w                                             # >= max w + 1
    rows = value.reshape(-1, D)                                                 # [N*S*M, D]
    pad = torch.zeros_like(rows[:1]).expand(pad_pixels * M, D)
    rows = torch.cat((pad, rows, pad), 0)                                       # [Z + N*S*M + Z, D]
    base = ((torch.arange(N, device=value.device).reshape(-1, 1, 1, 1) * S) * M
            + torch.arange(M, device=value.device).reshape(1, 1, M, 1) + pad_pixels * M)   # [N, 1, M, 1]
    out = None
    start = 0
    for lvl in range(L):
        h, w = sizes[lvl]
        loc = sampling_locations[:, :, :, lvl]                                  # [N, Lq, M, P, 2]
        x = loc[..., 0] * w - 0.5                                               # [N, Lq, M, P]
        y = loc[..., 1] * h - 0.5
        inside = (x > -1) & (y > -1) & (x < w) & (y < h)                        # False for NaN
        zero = torch.zeros_like(x)
        x = torch.where(inside, x, zero)        # a sample with no corner inside (or non-finite) reads
        y = torch.where(inside, y, zero)        # pixel (0, 0) with weight exactly 0 (mdqe.ops semantics)
        x0f, y0f = torch.floor(x), torch.floor(y)
        fx, fy = x - x0f, y - y0f
        # per-axis weights, 0 for a column / row outside the map
        gx = torch.where(x0f >= 0, 1 - fx, zero)
        fx = torch.where(x0f < w - 1, fx, zero)
        gy = torch.where(y0f >= 0, 1 - fy, zero)
        fy = torch.where(y0f < h - 1, fy, zero)
        a = torch.where(inside, attention_weights[:, :, :, lvl], zero)          # [N, Lq, M, P]
        ay0, ay1 = a * gy, a * fy
        cw = torch.stack((ay0 * gx, ay0 * fx, ay1 * gx, ay1 * fx), dim=-1)     # [N, Lq, M, P, 4]
        p0 = y0f.long() * w + x0f.long()                                        # pixel of corner (y0, x0)
        idx0 = (p0 + start) * M + base                                          # [N, Lq, M, P]
        offsets = torch.stack((w * 0, w * 0 + 1, w + 0, w + 1)) * M             # rows of the 4 corners
        idx = (idx0.unsqueeze(-1) + offsets).reshape(N, Lq, M, 4 * P)
        corners = rows[idx]                                                     # Gather: [N, Lq, M, 4P, D]
        term = torch.matmul(cw.reshape(N, Lq, M, 1, 4 * P), corners)            # [N, Lq, M, 1, D]
        out = term if out is None else out + term
        start = start + h * w
    return out.reshape(N, Lq, M * D)


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
    sizes = _level_sizes(value, spatial_shapes, L)
    grids = 2.0 * sampling_locations - 1.0                                   # [N, Lq, M, L, P, 2]
    # [N, Lq, M, L, P, 2] -> [N, M, L, Lq, P, 2] -> [N*M, L, Lq, P, 2]
    grids = grids.permute(0, 2, 3, 1, 4, 5).reshape(-1, L, Lq, P, 2)
    locs = sampling_locations.permute(0, 2, 3, 1, 4, 5).reshape(-1, L, Lq, P, 2)   # [N*M, L, Lq, P, 2]
    value_t = value.permute(0, 2, 3, 1)                                       # [N, M, D, S]
    sampled, valids = [], []
    start = 0
    for lvl in range(L):
        h, w = sizes[lvl]
        v = value_t[..., start:start + h * w]                                   # dynamic Slice
        start = start + h * w
        v = v.reshape(-1, D, h, w)                                             # [N*M, D, H_l, W_l]
        # a sample with no corner inside the map (or non-finite) contributes exactly 0, whatever its
        # weight (mdqe.ops.ms_deform_attn semantics): grid point far outside, weight 0
        px = locs[:, lvl, ..., 0] * w - 0.5
        py = locs[:, lvl, ..., 1] * h - 0.5
        valid = (px > -1) & (py > -1) & (px < w) & (py < h)                     # [N*M, Lq, P]
        g = torch.where(valid.unsqueeze(-1), grids[:, lvl], torch.full_like(grids[:, lvl], -4.0))
        sampled.append(torch.nn.functional.grid_sample(
            v, g, mode="bilinear", padding_mode="zeros", align_corners=False))  # [N*M, D, Lq, P]
        valids.append(valid)
    stacked = torch.stack(sampled, dim=-2)                                     # [N*M, D, Lq, L, P]
    w_ = attention_weights.permute(0, 2, 1, 3, 4).reshape(-1, 1, Lq, L, P)    # [N*M, 1, Lq, L, P]
    valid = torch.stack(valids, dim=-2).unsqueeze(1)                           # [N*M, 1, Lq, L, P]
    w_ = torch.where(valid, w_, torch.zeros_like(w_))
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


def _shape_of(t, rank):
    try:
        sizes = t.type().varyingSizes()
    except RuntimeError:
        return None
    return sizes if sizes is not None and len(sizes) == rank else None


class _TrtBuiltinMSDA(torch.autograd.Function):
    """Traced as one `MultiscaleDeformableAttnPlugin_TRT` node (TorchScript-based exporter)."""

    @staticmethod
    def forward(ctx, value, spatial_shapes, level_start_index, sampling_locations, attention_weights, version, m, d):
        N, _, M, D = value.shape
        return _reference(value, spatial_shapes, level_start_index, sampling_locations,
                          attention_weights).reshape(N, sampling_locations.shape[1], M, D)

    @staticmethod
    def symbolic(g, value, spatial_shapes, level_start_index, sampling_locations, attention_weights, version, m, d):
        ss32 = g.op("Cast", spatial_shapes, to_i=6)        # onnx.TensorProto.INT32, as the plugin takes them
        lsi32 = g.op("Cast", level_start_index, to_i=6)
        ident = TRT_BUILTIN_PLUGIN
        out = g.op(f"{ident.onnx_domain}::{ident.op_type}", value, ss32, lsi32, sampling_locations,
                   attention_weights, plugin_version_s=str(version), plugin_namespace_s=ident.namespace)
        # output [N, Lq, M, D] of value's type; M and D are fixed by the weights, N and Lq may be dynamic
        vs, ls = _shape_of(value, 4), _shape_of(sampling_locations, 6)
        n = vs[0] if vs is not None else None
        lq = ls[1] if ls is not None else None
        out.setType(value.type().with_sizes([n, lq, int(m), int(d)]))
        return out


def _builtin_symbolic_dynamo(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    """torch.export-based exporter: `torch.onnx.ops.symbolic` emits the NVIDIA plugin node."""
    ident = TRT_BUILTIN_PLUGIN
    N, Lq = value.shape[0], sampling_locations.shape[1]
    return torch.onnx.ops.symbolic(
        f"{ident.onnx_domain}::{ident.op_type}",
        [value, spatial_shapes.to(torch.int32), level_start_index.to(torch.int32), sampling_locations,
         attention_weights],
        {"plugin_version": builtin_plugin_version(), "plugin_namespace": ident.namespace},
        dtype=value.dtype, shape=[N, Lq, int(value.shape[2]), int(value.shape[3])], version=PLUGIN_DOMAIN_VERSION)


def expected_gridsample_nodes(cfg) -> dict:
    """GridSample nodes of the gridsample form: one per level of every call (a TCA call attends the T
    frames of one feature level as its T levels)."""
    calls = expected_msda_calls(cfg)
    L, T = int(cfg.num_feature_levels), int(cfg.num_frames)
    return {"encoder": calls["encoder"] * L, "decoder": int(cfg.dec_layers) * (L + L * T)}


def expected_msda_calls(cfg) -> dict:
    """How many MSDeformAttn calls (= plugin nodes) each exported graph holds, from the config:
    encoder: one self-attention per encoder layer; decoder: per layer one frame-level
    cross-attention plus one temporal cross-attention (TCA) per feature level."""
    return {"encoder": int(cfg.enc_layers),
            "decoder": int(cfg.dec_layers) * (1 + int(cfg.num_feature_levels))}
