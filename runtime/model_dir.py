"""Read and validate an exported model directory (docs/INTERFACES.md section 5).

Only the standard library is used: the directory is checked before any
backend (ONNX Runtime, TensorRT, torch) is loaded.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

from .errors import ModelDirError

FORMAT_VERSION = 1

ENCODER_INPUTS = ("images",)
FEATURE_NAMES = ("memory", "spatial_shapes", "level_start_index", "mask_features",
                 "query_feat", "query_points", "query_embed")
ENCODER_OUTPUTS = FEATURE_NAMES
DECODER_INPUTS = FEATURE_NAMES
DECODER_OUTPUTS = ("pred_logits", "pred_boxes", "pred_masks", "pred_embeds")
# Features that are per frame (leading dim N in the encoder, T in the decoder);
# the others (spatial_shapes, level_start_index) are shared by all frames.
PER_FRAME_FEATURES = ("memory", "mask_features", "query_feat", "query_points", "query_embed")


# ------------------------------------------------------------------------------------------------
# MSDeformAttn forms of an export (export.json "msda") and the plugin identities they carry.
# One home: the exporter, the ONNX Runtime custom ops, the backends, build_engines and the tests
# import these (tests/test_export_forms.py checks the C++ plugin's identity against OUR_PLUGIN).
# ------------------------------------------------------------------------------------------------
MSDA_ONNX = "onnx"                # pure ONNX, bilinear sampling written with Gather (no GridSample)
MSDA_GRIDSAMPLE = "gridsample"    # pure ONNX, per level one GridSample (bilinear, zeros, align_corners=0)
MSDA_PLUGIN = "plugin"            # one node per call for our MDQEMSDeformAttn plugin (fp32 accumulation)
MSDA_TRT_BUILTIN = "trt-builtin"  # one node per call for NVIDIA's MultiscaleDeformableAttnPlugin_TRT
MSDA_FORMS = (MSDA_ONNX, MSDA_GRIDSAMPLE, MSDA_PLUGIN, MSDA_TRT_BUILTIN)
MSDA_EXPORT_DEFAULT = MSDA_ONNX   # plain ONNX that stock TensorRT (any version) and ONNX Runtime run
# The form the demo exports for the ONNX Runtime CPU backend: the fastest one measured by
# `python -m benchmarks.msda_forms` (docs/export.md section 5): our native kernel behind the
# onnxruntime-extensions op; without that kernel, the fastest plain-ONNX form (GridSample, which
# ONNX Runtime computes correctly; the TensorRT GridSample problem does not apply there).
MSDA_ORT_CPU_FASTEST = MSDA_PLUGIN
MSDA_ORT_CPU_FASTEST_PLAIN = MSDA_GRIDSAMPLE


@dataclass(frozen=True)
class PluginIdentity:
    """How an MSDeformAttn custom node is named in the ONNX graph and found by TensorRT.

    The TensorRT ONNX parser maps a node whose op_type equals a registered plugin name to that
    plugin; the node's ``plugin_version`` / ``plugin_namespace`` attributes select the creator.
    ``onnx_domain`` only keeps the graph valid ONNX (the parser does not read it).
    """
    op_type: str
    onnx_domain: str
    version: str
    namespace: str
    library: str                  # where TensorRT finds the creator
    needs_plugin_library: bool    # True: trtexec --dynamicPlugins / --staticPlugins must load `library`
    output_rank: int              # 3: [N, Lq, M*D]; 4: [N, Lq, M, D]
    versions: Tuple[str, ...] = ()


OUR_PLUGIN = PluginIdentity(op_type="MDQEMSDeformAttn", onnx_domain="mdqe", version="1", namespace="mdqe",
                            library="libmdqe_trt_plugin.so", needs_plugin_library=True, output_rank=3,
                            versions=("1",))
# NVIDIA's plugin inside libnvinfer_plugin (TensorRT/plugin/multiscaleDeformableAttnPlugin): version "1"
# (IPluginV2DynamicExt, TensorRT 8.4+, deprecated since 10.11) and "2" (IPluginV3, TensorRT 10.11+);
# no plugin fields; value [N,S,M,D], spatial_shapes [L,2] INT32, level_start_index [L] INT32,
# sampling_locations [N,Lq,M,L,P,2], attention_weights [N,Lq,M,L,P] -> [N,Lq,M,D]; float or half.
TRT_BUILTIN_PLUGIN = PluginIdentity(op_type="MultiscaleDeformableAttnPlugin_TRT", onnx_domain="trt.plugins",
                                    version="2", namespace="", library="libnvinfer_plugin.so",
                                    needs_plugin_library=False, output_rank=4, versions=("1", "2"))


def plugin_identity(form: str) -> "PluginIdentity | None":
    """The custom node identity of an MSDA form (None for the pure-ONNX forms)."""
    if form not in MSDA_FORMS:
        raise ValueError(f"MSDeformAttn form must be one of {MSDA_FORMS}, got {form!r}")
    return {MSDA_PLUGIN: OUR_PLUGIN, MSDA_TRT_BUILTIN: TRT_BUILTIN_PLUGIN}.get(form)


@dataclass(frozen=True)
class PreprocessSpec:
    """How frames are turned into model input (export.json "preprocess")."""
    color: str = "RGB"
    mean: Tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: Tuple[float, float, float] = (58.395, 57.12, 57.375)
    shorter_side: int = 360
    max_size: int = 1280
    size_divisibility: int = 32


@dataclass(frozen=True)
class ModelSpec:
    """Everything the runtime needs from export.json, validated."""
    model_dir: str
    num_frames: int                 # T, clip length baked into the decoder
    num_queries: int
    num_classes: int
    class_names: Tuple[str, ...]
    embed_dim: int
    mask_stride: int
    preprocess: PreprocessSpec
    msda: str                       # one of MSDA_FORMS
    dtype: str                      # "fp32" | "fp16"
    encoder_file: str
    decoder_file: str
    model_name: str = ""
    config: Dict[str, Any] = field(default_factory=dict)
    weights: Dict[str, Any] = field(default_factory=dict)
    plugin: Dict[str, Any] = field(default_factory=dict)
    raw: Dict[str, Any] = field(default_factory=dict)

    @property
    def encoder_path(self) -> str:
        return os.path.join(self.model_dir, self.encoder_file)

    @property
    def decoder_path(self) -> str:
        return os.path.join(self.model_dir, self.decoder_file)


def _require(d: dict, key: str, where: str):
    if key not in d:
        raise ModelDirError(f"{where}: missing key {key!r} (see docs/INTERFACES.md section 5)")
    return d[key]


def _check_names(section: dict, kind: str, expected: Tuple[str, ...], where: str) -> None:
    names = section.get(kind)
    if names is None:
        return  # optional in export.json; the backend checks the graph itself
    got = list(names.keys()) if isinstance(names, dict) else list(names)
    check_tensor_names(got, expected, f"{where} {kind}")


def check_tensor_names(got: List[str], expected: Tuple[str, ...], what: str) -> None:
    """Raise ModelDirError unless ``got`` holds exactly the names ``expected`` (any order)."""
    missing = [n for n in expected if n not in got]
    extra = [n for n in got if n not in expected]
    if missing or extra:
        raise ModelDirError(
            f"incompatible model directory: {what} are {sorted(got)}, expected {sorted(expected)}"
            + (f"; missing {missing}" if missing else "") + (f"; unexpected {extra}" if extra else ""))


def load_model_dir(model_dir: str) -> ModelSpec:
    """Load ``model_dir/export.json`` and check it against INTERFACES.md section 5.

    Raises ModelDirError naming the problem: missing directory or files,
    unreadable JSON, wrong ``format_version``, missing keys, tensor names
    that differ from the contract.
    """
    if not os.path.isdir(model_dir):
        raise ModelDirError(f"model directory not found: {model_dir}")
    meta_path = os.path.join(model_dir, "export.json")
    if not os.path.isfile(meta_path):
        raise ModelDirError(f"incompatible model directory {model_dir}: no export.json "
                            "(write one with `python export/to_onnx.py ... --output DIR`)")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise ModelDirError(f"cannot read {meta_path}: {e}") from e
    if not isinstance(meta, dict):
        raise ModelDirError(f"{meta_path}: expected a JSON object")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelDirError(f"{meta_path}: format_version {version!r} is not supported "
                            f"(this runtime reads format_version {FORMAT_VERSION})")
    where = meta_path
    enc = _require(meta, "encoder", where)
    dec = _require(meta, "decoder", where)
    _check_names(enc, "inputs", ENCODER_INPUTS, "encoder")
    _check_names(enc, "outputs", ENCODER_OUTPUTS, "encoder")
    _check_names(dec, "inputs", DECODER_INPUTS, "decoder")
    _check_names(dec, "outputs", DECODER_OUTPUTS, "decoder")
    pre = _require(meta, "preprocess", where)
    try:
        pspec = PreprocessSpec(
            color=str(pre.get("color", "RGB")).upper(),
            mean=tuple(float(x) for x in _require(pre, "mean", where + " preprocess")),
            std=tuple(float(x) for x in _require(pre, "std", where + " preprocess")),
            shorter_side=int(_require(pre, "shorter_side", where + " preprocess")),
            max_size=int(_require(pre, "max_size", where + " preprocess")),
            size_divisibility=int(pre.get("size_divisibility", 32)),
        )
    except (TypeError, ValueError) as e:
        raise ModelDirError(f"{where}: bad preprocess section: {e}") from e
    if pspec.color not in ("RGB", "BGR") or len(pspec.mean) != 3 or len(pspec.std) != 3:
        raise ModelDirError(f"{where}: preprocess needs color RGB|BGR and 3 mean/std values")
    class_names = tuple(str(c) for c in _require(meta, "class_names", where))
    num_classes = int(_require(meta, "num_classes", where))
    if len(class_names) != num_classes:
        raise ModelDirError(f"{where}: {len(class_names)} class_names for num_classes={num_classes}")
    msda = str(meta.get("msda", MSDA_ONNX))
    if msda not in MSDA_FORMS:
        raise ModelDirError(f"{where}: msda must be one of {list(MSDA_FORMS)}, got {msda!r}")
    spec = ModelSpec(
        model_dir=os.path.abspath(model_dir),
        num_frames=int(_require(meta, "num_frames", where)),
        num_queries=int(_require(meta, "num_queries", where)),
        num_classes=num_classes,
        class_names=class_names,
        embed_dim=int(_require(meta, "embed_dim", where)),
        mask_stride=int(meta.get("mask_stride", 4)),
        preprocess=pspec,
        msda=msda,
        dtype=str(meta.get("dtype", "fp32")),
        encoder_file=str(enc.get("file", "encoder.onnx")),
        decoder_file=str(dec.get("file", "decoder.onnx")),
        model_name=str(meta.get("model_name", "")),
        config=dict(meta.get("config") or {}),
        weights=dict(meta.get("weights") or {}),
        plugin=dict(meta.get("plugin") or {}),
        raw=meta,
    )
    if spec.num_frames < 1:
        raise ModelDirError(f"{where}: num_frames must be >= 1")
    return spec


def require_graph_files(spec: ModelSpec) -> None:
    """Raise ModelDirError if encoder/decoder graph files named in export.json are absent."""
    for p in (spec.encoder_path, spec.decoder_path):
        if not os.path.isfile(p):
            raise ModelDirError(f"incompatible model directory {spec.model_dir}: missing {os.path.basename(p)}")
