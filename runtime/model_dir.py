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

# 2: padding masks (valid_hw input of both graphs) and the pred_queries decoder output.
FORMAT_VERSION = 2

# valid (unpadded) height and width in pixels of each padded frame, int64 [N, 2] (encoder) /
# [T, 2] (decoder): the graphs derive the authors' padding masks from it (docs/INTERFACES.md).
VALID_HW = "valid_hw"
ENCODER_INPUTS = ("images", VALID_HW)
FEATURE_NAMES = ("memory", "spatial_shapes", "level_start_index", "mask_features",
                 "query_feat", "query_points", "query_embed")
ENCODER_OUTPUTS = FEATURE_NAMES
DECODER_INPUTS = FEATURE_NAMES + (VALID_HW,)
# pred_queries [Q, C]: the raw clip-level query (the authors' tracking embedding)
DECODER_OUTPUTS = ("pred_logits", "pred_boxes", "pred_masks", "pred_embeds", "pred_queries")
# Per-frame decoder inputs (leading dim N in the encoder, T in the decoder);
# the others (spatial_shapes, level_start_index) are shared by all frames.
PER_FRAME_FEATURES = ("memory", "mask_features", "query_feat", "query_points", "query_embed", VALID_HW)


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
    msda: str                       # "plugin" | "onnx"
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
    if version == 1:
        raise ModelDirError(f"{meta_path}: format_version 1 is an older graph contract (no padding masks, "
                            f"no pred_queries); re-export it with `python -m export.to_onnx ... --output DIR` "
                            f"(this runtime reads format_version {FORMAT_VERSION})")
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
    msda = str(meta.get("msda", "onnx"))
    if msda not in ("onnx", "plugin"):
        raise ModelDirError(f"{where}: msda must be 'onnx' or 'plugin', got {msda!r}")
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
