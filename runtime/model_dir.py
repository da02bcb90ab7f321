"""Read and validate an exported model directory (docs/INTERFACES.md section 5).

Only the standard library is used: the directory is checked before any
backend (ONNX Runtime, TensorRT, torch) is loaded.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Tuple

# The contract itself (names, forms, plugin identities, specs) lives in runtime.contract; this
# module only loads and validates model directories against it.
from .contract import (DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_INPUTS, ENCODER_OUTPUTS,
                       FORMAT_VERSION, IMAGES, MSDA_ONNX, PER_FRAME_FEATURES, TENSOR_RANKS, VALID_HW,
                       ModelSpec, PreprocessSpec, check_msda_form)
from .errors import ModelDirError, NonFiniteError


def _require(d: dict, key: str, where: str):
    if key not in d:
        raise ModelDirError(f"{where}: missing key {key!r} (see docs/INTERFACES.md section 5)")
    return d[key]


def check_tensor_names(got: List[str], expected: Tuple[str, ...], what: str) -> None:
    """Raise ModelDirError unless ``got`` holds exactly the names ``expected`` (any order)."""
    missing = [n for n in expected if n not in got]
    extra = [n for n in got if n not in expected]
    if missing or extra:
        raise ModelDirError(
            f"incompatible model directory: {what} are {sorted(got)}, expected {sorted(expected)}"
            + (f"; missing {missing}" if missing else "") + (f"; unexpected {extra}" if extra else ""))


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and v == v and v not in (float("inf"),
                                                                                           float("-inf"))


def _int_field(d: dict, key: str, where: str, lo: int = 1, hi: int = 1 << 31, default=None, required=True):
    """d[key] as an int in [lo, hi]; raises ModelDirError naming the field, its value and the range."""
    if key not in d:
        if required:
            _require(d, key, where)
        return default
    v = d[key]
    if not _is_int(v):
        raise ModelDirError(f"{where}: {key} must be an integer, got {json.dumps(v)[:60]}")
    if not lo <= v <= hi:
        raise ModelDirError(f"{where}: {key} = {v} is out of range (must be {lo}..{hi})")
    return v


def _str_field(d: dict, key: str, where: str, choices=None, default=None, required=True) -> str:
    if key not in d:
        if required:
            _require(d, key, where)
        return default
    v = d[key]
    if not isinstance(v, str) or not v:
        raise ModelDirError(f"{where}: {key} must be a non-empty string, got {json.dumps(v)[:60]}")
    if choices is not None and v not in choices:
        raise ModelDirError(f"{where}: {key} must be one of {', '.join(choices)}, got {v!r}")
    return v


def _dict_field(d: dict, key: str, where: str, required=True) -> dict:
    if key not in d:
        if required:
            _require(d, key, where)
        return {}
    v = d[key]
    if v is None and not required:
        return {}
    if not isinstance(v, dict):
        raise ModelDirError(f"{where}: {key} must be a JSON object, got {json.dumps(v)[:60]}")
    return v


def _triple(pre: dict, key: str, where: str, positive: bool) -> Tuple[float, float, float]:
    v = _require(pre, key, where)
    if not isinstance(v, list) or len(v) != 3 or not all(_is_num(x) for x in v):
        raise ModelDirError(f"{where}: {key} must be a list of 3 finite numbers, got {json.dumps(v)[:60]}")
    if positive and not all(x > 0 for x in v):
        raise ModelDirError(f"{where}: {key} values must be > 0, got {v}")
    return tuple(float(x) for x in v)


def _graph_section(meta: dict, graph: str, where: str) -> dict:
    sec = _dict_field(meta, graph, where)
    f = sec.get("file", f"{graph}.onnx")
    if not isinstance(f, str) or not f or os.path.basename(f) != f:
        raise ModelDirError(f"{where}: {graph}.file must be a file name inside the model directory, "
                            f"got {json.dumps(f)[:60]}")
    return sec


def _section_shapes(sec: dict, kind: str, graph: str, where: str):
    """{name: shape or None} from export.json's encoder/decoder inputs/outputs (dict or list of names)."""
    v = sec.get(kind)
    if v is None:
        return None
    if isinstance(v, list) and all(isinstance(n, str) for n in v):
        return {n: None for n in v}
    if isinstance(v, dict):
        for n, shp in v.items():
            if not isinstance(shp, list) or not all(_is_int(d) or isinstance(d, str) for d in shp):
                raise ModelDirError(f"{where}: {graph}.{kind}.{n} must be a shape (list of ints / axis names), "
                                    f"got {json.dumps(shp)[:60]}")
        return dict(v)
    raise ModelDirError(f"{where}: {graph}.{kind} must be a JSON object of shapes or a list of names, "
                        f"got {json.dumps(v)[:60]}")


def load_model_dir(model_dir: str) -> ModelSpec:
    """Load ``model_dir/export.json`` and check it against INTERFACES.md section 5.

    Raises ModelDirError naming the problem: missing directory or files,
    unreadable JSON, wrong ``format_version``, missing keys, fields of the
    wrong type or out of range, tensor names that differ from the contract,
    tensor shapes in export.json that disagree with ``num_frames`` /
    ``num_queries`` / ``num_classes`` / ``embed_dim`` or have the wrong rank.
    The graphs themselves are checked against the spec by ``check_graph_io``
    (each backend calls it with the shapes its graphs declare).
    """
    if not isinstance(model_dir, str) or not model_dir:
        raise ModelDirError(f"model directory must be a path, got {model_dir!r}")
    if not os.path.isdir(model_dir):
        if os.path.exists(model_dir):
            raise ModelDirError(f"model directory {model_dir} is not a directory")
        raise ModelDirError(f"model directory not found: {model_dir}")
    meta_path = os.path.join(model_dir, "export.json")
    if not os.path.isfile(meta_path):
        raise ModelDirError(f"incompatible model directory {model_dir}: no export.json "
                            "(write one with `python export/to_onnx.py ... --output DIR`)")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except UnicodeDecodeError as e:
        raise ModelDirError(f"cannot read {meta_path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except (OSError, ValueError, RecursionError) as e:
        raise ModelDirError(f"cannot read {meta_path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") \
            from e
    if not isinstance(meta, dict):
        raise ModelDirError(f"{meta_path}: expected a JSON object")
    version = meta.get("format_version")
    if version == 1:
        raise ModelDirError(f"{meta_path}: format_version 1 is an older graph contract (no padding masks, "
                            f"no pred_queries); re-export it with `python -m export.to_onnx ... --output DIR` "
                            f"(this runtime reads format_version {FORMAT_VERSION})")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise ModelDirError(f"{meta_path}: format_version {version!r} is not supported "
                            f"(this runtime reads format_version {FORMAT_VERSION})")
    where = meta_path
    enc = _graph_section(meta, "encoder", where)
    dec = _graph_section(meta, "decoder", where)
    pre = _dict_field(meta, "preprocess", where)
    pw = where + " preprocess"
    pspec = PreprocessSpec(
        color=_str_field(pre, "color", pw, default="RGB", required=False).upper(),
        mean=_triple(pre, "mean", pw, positive=False),
        std=_triple(pre, "std", pw, positive=True),
        shorter_side=_int_field(pre, "shorter_side", pw, 1, 1 << 16),
        max_size=_int_field(pre, "max_size", pw, 1, 1 << 16),
        size_divisibility=_int_field(pre, "size_divisibility", pw, 1, 1 << 12, default=32, required=False),
    )
    if pspec.color not in ("RGB", "BGR"):
        raise ModelDirError(f"{pw}: color must be RGB or BGR, got {pspec.color!r}")
    if pspec.max_size < pspec.shorter_side:
        raise ModelDirError(f"{pw}: max_size {pspec.max_size} is smaller than shorter_side {pspec.shorter_side}")
    num_classes = _int_field(meta, "num_classes", where, 1, 1 << 20)
    class_names = _require(meta, "class_names", where)
    if not isinstance(class_names, list) or not all(isinstance(c, str) for c in class_names):
        raise ModelDirError(f"{where}: class_names must be a list of strings, got {json.dumps(class_names)[:60]}")
    if len(class_names) != num_classes:
        raise ModelDirError(f"{where}: {len(class_names)} class_names for num_classes={num_classes}")
    for key in ("config", "weights", "plugin"):
        _dict_field(meta, key, where, required=False)
    for key in ("mask_dim", "hidden_dim", "num_levels", "opset"):
        _int_field(meta, key, where, 1, 1 << 20, required=False)
    if "export_size" in meta:
        es = meta["export_size"]
        if not (isinstance(es, list) and len(es) == 2 and all(_is_int(x) and x > 0 for x in es)):
            raise ModelDirError(f"{where}: export_size must be [height, width] (positive integers), "
                                f"got {json.dumps(es)[:60]}")
    spec = ModelSpec(
        model_dir=os.path.abspath(model_dir),
        num_frames=_int_field(meta, "num_frames", where, 1, 1024),
        num_queries=_int_field(meta, "num_queries", where, 1, 1 << 20),
        num_classes=num_classes,
        class_names=tuple(class_names),
        embed_dim=_int_field(meta, "embed_dim", where, 1, 1 << 20),
        # the graphs' mask_features are at stride 4 (checked against the graphs on the first frame)
        mask_stride=_int_field(meta, "mask_stride", where, 1, 64, default=4, required=False),
        preprocess=pspec,
        msda=check_msda_form(_str_field(meta, "msda", where, default=MSDA_ONNX, required=False), f"{where}: msda",
                             ModelDirError),
        dtype=_str_field(meta, "dtype", where, ("fp32", "fp16"), default="fp32", required=False),
        encoder_file=str(enc.get("file", "encoder.onnx")),
        decoder_file=str(dec.get("file", "decoder.onnx")),
        model_name=str(meta.get("model_name", "")),
        config=dict(meta.get("config") or {}),
        weights=dict(meta.get("weights") or {}),
        plugin=dict(meta.get("plugin") or {}),
        raw=meta,
    )
    _check_config(spec, where)
    for graph, sec, ins, outs in (("encoder", enc, ENCODER_INPUTS, ENCODER_OUTPUTS),
                                  ("decoder", dec, DECODER_INPUTS, DECODER_OUTPUTS)):
        i = _section_shapes(sec, "inputs", graph, where)
        o = _section_shapes(sec, "outputs", graph, where)
        if i is not None:
            check_tensor_names(list(i), ins, f"export.json {graph} inputs")
        if o is not None:
            check_tensor_names(list(o), outs, f"export.json {graph} outputs")
        check_graph_io(spec, graph, i or {}, o or {}, f"export.json {graph}")
    return spec


def _check_config(spec: ModelSpec, where: str) -> None:
    """The model config (used by the torch backend and build_engines) must agree with the top level."""
    cfg = spec.config
    if not cfg:
        return
    for key in ("hidden_dim", "mask_dim", "num_feature_levels", "num_frames", "num_classes", "embed_dim"):
        if key in cfg:
            _int_field(cfg, key, where + " config", 1, 1 << 20)
    for key, top in (("num_frames", spec.num_frames), ("num_classes", spec.num_classes),
                     ("embed_dim", spec.embed_dim)):
        if key in cfg and cfg[key] != top:
            raise ModelDirError(f"{where}: config.{key} = {cfg[key]} disagrees with {key} = {top}")


def _expected_dims(spec: ModelSpec, graph: str, kind: str, name: str) -> Dict[int, Tuple[int, str]]:
    """{axis: (size, what fixes it)} the spec implies for one tensor (static axes only)."""
    T, Q, C, E = spec.num_frames, spec.num_queries, spec.num_classes, spec.embed_dim
    t = "num_frames"
    if name == IMAGES:
        return {1: (3, "RGB channels")}
    if name in ("query_points",):
        d = {1: (Q, "num_queries"), 2: (2, "(x, y)")}
    elif name == "query_embed":
        d = {1: (Q, "num_queries"), 2: (E, "embed_dim")}
    elif name == "query_feat":
        d = {1: (Q, "num_queries")}
    elif name == "spatial_shapes":
        d = {1: (2, "(H, W)")}
    elif name == "pred_logits":
        return {0: (Q, "num_queries"), 1: (C, "num_classes")}
    elif name == "pred_boxes":
        return {0: (Q, "num_queries"), 1: (T, t), 2: (4, "box coordinates")}
    elif name == "pred_masks":
        return {0: (Q, "num_queries"), 1: (T, t)}
    elif name == "pred_embeds":
        return {0: (Q, "num_queries"), 1: (E, "embed_dim")}
    elif name == "pred_queries":
        return {0: (Q, "num_queries")}
    elif name == VALID_HW:
        d = {1: (2, "(height, width)")}
    else:
        d = {}
    if graph == "decoder" and kind == "inputs" and name in PER_FRAME_FEATURES:
        d[0] = (T, t)
    return d


def check_graph_io(spec: ModelSpec, graph: str, inputs: Dict[str, Any], outputs: Dict[str, Any],
                   what: str) -> None:
    """Check one graph's declared tensors against the spec: rank of every contract tensor, and the
    static sizes the spec fixes (clip length T on the decoder's per-frame inputs and on pred_boxes /
    pred_masks, num_queries, num_classes on pred_logits, embed_dim). ``inputs``/``outputs`` map
    names to shapes (lists whose entries are ints for static axes, anything else for dynamic ones,
    or None / [] when unknown). Raises ModelDirError naming the tensor, axis and both values."""
    for kind, tensors in (("inputs", inputs), ("outputs", outputs)):
        for name, shape in tensors.items():
            if shape is None or len(shape) == 0:
                continue            # shape not recorded (no contract tensor is a scalar)
            shape = list(shape)
            rank = TENSOR_RANKS.get(name)
            if rank is not None and len(shape) != rank:
                raise ModelDirError(f"incompatible model directory: {what} {kind[:-1]} {name} has rank "
                                    f"{len(shape)} {shape}, expected rank {rank}")
            for axis, (size, why) in _expected_dims(spec, graph, kind, name).items():
                got = shape[axis] if axis < len(shape) else None
                if _is_int(got) and got > 0 and got != size:
                    raise ModelDirError(f"incompatible model directory: {what} {kind[:-1]} {name} has "
                                        f"shape {shape}, but axis {axis} must be {size} ({why} in export.json)")


def check_encoder_features(spec: ModelSpec, images_shape, feats: Dict[str, Any]) -> None:
    """First-frame check of real encoder outputs: mask stride (input H, W vs mask_features h, w), ranks
    and sizes (check_graph_io). ``images_shape`` is [N, 3, H, W]."""
    check_graph_io(spec, "encoder", {}, {k: list(getattr(v, "shape", ())) for k, v in feats.items()},
                   "the encoder's")
    mf = feats.get("mask_features")
    if mf is not None and getattr(mf, "ndim", 0) == 4:
        H, W = int(images_shape[-2]), int(images_shape[-1])
        h, w = int(mf.shape[-2]), int(mf.shape[-1])
        s = spec.mask_stride
        if h * s != H or w * s != W:
            raise ModelDirError(f"incompatible model directory: mask_stride = {s} in export.json, but the encoder "
                                f"maps a {H}x{W} input to {h}x{w} mask_features (stride {H / max(h, 1):g})")


def check_decoder_outputs(spec: ModelSpec, outs: Dict[str, Any]) -> None:
    """First-clip check of real decoder outputs against the spec (ranks, T, Q, classes, embed_dim)."""
    check_graph_io(spec, "decoder", {}, {k: list(getattr(v, "shape", ())) for k, v in outs.items()},
                   "the decoder's")


def check_finite(stage: str, arrays: Dict[str, Any]) -> None:
    """Raise NonFiniteError (exit 3) naming ``stage`` and the first tensor holding NaN or +-inf.

    Cheap on the normal path: one float32 sum per tensor (NaN/inf propagate into the sum); only
    when a sum is not finite (NaN/inf, or an overflow of huge finite values) is the tensor scanned."""
    import numpy as np
    for name, a in arrays.items():
        a = np.asarray(a)
        if a.dtype.kind != "f" or a.size == 0:
            continue
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(a.sum(dtype=np.float32)):
                continue
        bad = ~np.isfinite(a)
        n = int(bad.sum())
        if n:
            nan = int(np.isnan(a).sum())
            raise NonFiniteError(f"the {stage} produced non-finite values: {name} {list(a.shape)} has {nan} NaN and "
                                 f"{n - nan} infinite entries (broken weights or export; verify it with "
                                 "export/to_onnx.py without --no-verify)")


def require_graph_files(spec: ModelSpec) -> None:
    """Raise ModelDirError if encoder/decoder graph files named in export.json are absent."""
    for p in (spec.encoder_path, spec.decoder_path):
        if not os.path.isfile(p):
            raise ModelDirError(f"incompatible model directory {spec.model_dir}: missing {os.path.basename(p)}")
