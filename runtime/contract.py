"""The exported-model contract: the one home of every name and rule the exporter, the runtime, the
backends, the TensorRT plugin and the tests must agree on (docs/INTERFACES.md section 5).

- graph format version and tensor names (encoder/decoder inputs and outputs, their ranks);
- MSDeformAttn forms of an export (``export.json "msda"``) and their one validation
  (``check_msda_form``);
- the custom-node / plugin identities (op type, version, namespace, ONNX domain) and the native
  library file names (CPU kernel, TensorRT plugin shared and static); tests/test_export_forms.py
  checks the C++ header (trt_plugins/) against ``OUR_PLUGIN``;
- level-size arithmetic (strides -> feature level sizes);
- the resize rule (shorter side / max size, then pad to a multiple of size_divisibility);
- the model config -> runtime spec translation (``preprocess_from_config``, ``spec_from_config``,
  ``preprocess_meta``), for running an in-memory model without an export directory.

Standard library only: the torch-free runtime, the exporter and mdqe (torch) all import it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

# ------------------------------------------------------------------------------------------------
# Graph format and tensor names
# ------------------------------------------------------------------------------------------------
# 2: padding masks (valid_hw input of both graphs) and the pred_queries decoder output.
FORMAT_VERSION = 2

IMAGES = "images"
# valid (unpadded) height and width in pixels of each padded frame, int64 [N, 2] (encoder) /
# [T, 2] (decoder): the graphs derive the authors' padding masks from it (docs/INTERFACES.md).
VALID_HW = "valid_hw"
ENCODER_INPUTS = (IMAGES, VALID_HW)
FEATURE_NAMES = ("memory", "spatial_shapes", "level_start_index", "mask_features",
                 "query_feat", "query_points", "query_embed")
ENCODER_OUTPUTS = FEATURE_NAMES
DECODER_INPUTS = FEATURE_NAMES + (VALID_HW,)
# pred_queries [Q, C]: the raw clip-level query (the authors' tracking embedding)
DECODER_OUTPUTS = ("pred_logits", "pred_boxes", "pred_masks", "pred_embeds", "pred_queries")
# Per-frame decoder inputs (leading dim N in the encoder, T in the decoder);
# the others (spatial_shapes, level_start_index) are shared by all frames.
PER_FRAME_FEATURES = ("memory", "mask_features", "query_feat", "query_points", "query_embed", VALID_HW)
# Shared by all frames (not per frame); int64, as is VALID_HW; every other tensor is float.
LEVEL_TENSORS = ("spatial_shapes", "level_start_index")
INT64_TENSORS = LEVEL_TENSORS + (VALID_HW,)
# Rank of every contract tensor.
TENSOR_RANKS = {IMAGES: 4, "memory": 3, "spatial_shapes": 2, "level_start_index": 1, "mask_features": 4,
                "query_feat": 3, "query_points": 3, "query_embed": 3,
                "pred_logits": 2, "pred_boxes": 3, "pred_masks": 4, "pred_embeds": 2, VALID_HW: 2, "pred_queries": 2}

# ------------------------------------------------------------------------------------------------
# MSDeformAttn forms of an export (export.json "msda")
# ------------------------------------------------------------------------------------------------
MSDA_ONNX = "onnx"                # pure ONNX, bilinear sampling written with Gather (no GridSample)
MSDA_GRIDSAMPLE = "gridsample"    # pure ONNX, per level one GridSample (bilinear, zeros, align_corners=0)
MSDA_PLUGIN = "plugin"            # one node per call for our MDQEMSDeformAttn plugin (fp32 accumulation)
MSDA_TRT_BUILTIN = "trt-builtin"  # one node per call for NVIDIA's MultiscaleDeformableAttnPlugin_TRT
MSDA_FORMS = (MSDA_ONNX, MSDA_GRIDSAMPLE, MSDA_PLUGIN, MSDA_TRT_BUILTIN)
MSDA_PLAIN_FORMS = (MSDA_ONNX, MSDA_GRIDSAMPLE)          # no custom node in the graph
MSDA_EXPORT_DEFAULT = MSDA_ONNX   # plain ONNX that stock TensorRT (any version) and ONNX Runtime run
# The form the demo exports for the ONNX Runtime CPU backend: the fastest one measured by
# `python -m benchmarks.msda_forms` (docs/export.md section 5): our native kernel behind the
# onnxruntime-extensions op; without that kernel, the fastest plain-ONNX form (GridSample, which
# ONNX Runtime computes correctly; the TensorRT GridSample problem does not apply there).
MSDA_ORT_CPU_FASTEST = MSDA_PLUGIN
MSDA_ORT_CPU_FASTEST_PLAIN = MSDA_GRIDSAMPLE


def check_msda_form(name, what: str = "MSDeformAttn form", error: type = ValueError) -> str:
    """Return ``name`` if it is one of MSDA_FORMS, else raise ``error`` naming ``what``, the value
    and the choices (the one validation of a form name: exporter, model directories, export hooks)."""
    if name not in MSDA_FORMS:
        raise error(f"{what} must be one of {', '.join(MSDA_FORMS)}, got {name!r}")
    return name


# ------------------------------------------------------------------------------------------------
# Native libraries and plugin identities
# ------------------------------------------------------------------------------------------------
CPU_KERNEL_LIBRARY = "libmdqe_msda.so"                       # C ABI CPU kernel (runtime/native/msda.py)
CPU_KERNEL_ABI_VERSION = 1                                   # mdqe_msda_abi_version() of that library
POSTPROCESS_ABI_VERSION = 2                                  # mdqe_pp_abi_version(): its post-processing kernels
TRT_PLUGIN_LIBRARY = "libmdqe_trt_plugin.so"                 # getCreators(): --dynamicPlugins / loadLibrary
TRT_PLUGIN_STATIC_LIBRARY = "libmdqe_trt_plugin_static.so"   # registers itself when loaded: --staticPlugins


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
    fields: Tuple[str, ...] = ()  # optional int attributes / plugin fields besides version and namespace


OUR_PLUGIN = PluginIdentity(op_type="MDQEMSDeformAttn", onnx_domain="mdqe", version="1", namespace="mdqe",
                            library=TRT_PLUGIN_LIBRARY, needs_plugin_library=True, output_rank=3,
                            versions=("1",), fields=("num_heads", "head_dim"))
# NVIDIA's plugin inside libnvinfer_plugin (TensorRT/plugin/multiscaleDeformableAttnPlugin): version "1"
# (IPluginV2DynamicExt, TensorRT 8.4+, deprecated since 10.11) and "2" (IPluginV3, TensorRT 10.11+);
# no plugin fields; value [N,S,M,D], spatial_shapes [L,2] INT32, level_start_index [L] INT32,
# sampling_locations [N,Lq,M,L,P,2], attention_weights [N,Lq,M,L,P] -> [N,Lq,M,D]; float or half.
TRT_BUILTIN_PLUGIN = PluginIdentity(op_type="MultiscaleDeformableAttnPlugin_TRT", onnx_domain="trt.plugins",
                                    version="2", namespace="", library="libnvinfer_plugin.so",
                                    needs_plugin_library=False, output_rank=4, versions=("1", "2"))
CUSTOM_PLUGINS = (OUR_PLUGIN, TRT_BUILTIN_PLUGIN)


def plugin_identity(form: str) -> "PluginIdentity | None":
    """The custom node identity of an MSDA form (None for the pure-ONNX forms)."""
    check_msda_form(form)
    return {MSDA_PLUGIN: OUR_PLUGIN, MSDA_TRT_BUILTIN: TRT_BUILTIN_PLUGIN}.get(form)


# ------------------------------------------------------------------------------------------------
# Feature levels
# ------------------------------------------------------------------------------------------------
LEVEL0_STRIDE = 8   # level 0 = res3 of the backbone
MASK_STRIDE = 4     # mask_features / pred_masks


def level_strides(num_levels: int) -> List[int]:
    """Strides of the L feature levels: 8, 16, 32, then doubling (3x3 stride-2 convs)."""
    return [LEVEL0_STRIDE * 2 ** i for i in range(num_levels)]


def level_sizes_from_level0(h0, w0, num_levels: int) -> List[Tuple[Any, Any]]:
    """Feature level sizes [(H_l, W_l)] * L from level 0 (stride 8): each next level halves rounding
    up (strides 16 and 32 from the backbone, then 3x3 stride-2 convs with padding 1). Plain ``//``
    arithmetic, so it also works on traced / symbolic sizes while exporting."""
    sizes = [(h0, w0)]
    for _ in range(num_levels - 1):
        h, w = sizes[-1]
        sizes.append(((h + 1) // 2, (w + 1) // 2))
    return sizes


def level_sizes(height, width, num_levels: int) -> List[Tuple[Any, Any]]:
    """Feature level sizes for a padded input of ``height`` x ``width`` (multiples of 32)."""
    return level_sizes_from_level0(height // LEVEL0_STRIDE, width // LEVEL0_STRIDE, num_levels)


def level_sizes_from_mask(h, w, num_levels: int) -> List[Tuple[Any, Any]]:
    """Feature level sizes from the stride-4 mask-feature size (h, w): level 0 is (h/2, w/2)."""
    r = LEVEL0_STRIDE // MASK_STRIDE
    return level_sizes_from_level0(h // r, w // r, num_levels)


# ------------------------------------------------------------------------------------------------
# Preprocessing: the resize rule
# ------------------------------------------------------------------------------------------------
RESIZE_RULE = ("scale so the shorter side is shorter_side unless the longer side would exceed max_size; "
               "then pad right/bottom to size_divisibility")


@dataclass(frozen=True)
class PreprocessSpec:
    """How frames are turned into model input (export.json "preprocess")."""
    color: str = "RGB"
    mean: Tuple[float, float, float] = (123.675, 116.28, 103.53)
    std: Tuple[float, float, float] = (58.395, 57.12, 57.375)
    shorter_side: int = 360
    max_size: int = 1280
    size_divisibility: int = 32


def resized_size(height: int, width: int, shorter_side: int, max_size: int) -> Tuple[int, int]:
    """(h, w) after the resize rule: scale so the shorter side becomes ``shorter_side`` unless the
    longer side would then exceed ``max_size`` (then the longer side becomes ``max_size``); sizes
    rounded to the nearest integer, at least 1."""
    if height <= 0 or width <= 0:
        raise ValueError(f"bad frame size {height}x{width}")
    scale = shorter_side / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def padded_size(height: int, width: int, divisibility: int) -> Tuple[int, int]:
    """Round (h, w) up to a multiple of ``divisibility`` (zero padding right/bottom)."""
    if divisibility <= 1:
        return height, width
    d = divisibility
    return (height + d - 1) // d * d, (width + d - 1) // d * d


# ------------------------------------------------------------------------------------------------
# The runtime's view of a model, and the config -> spec translation
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSpec:
    """Everything the runtime needs from export.json, validated (runtime.model_dir.load_model_dir)."""
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


def preprocess_from_config(cfg) -> PreprocessSpec:
    """The PreprocessSpec of a model config (mdqe's ModelConfig, read by attribute): RGB, the
    config's pixel mean/std, test_shorter_side / test_max_size, size_divisibility."""
    return PreprocessSpec(color="RGB", mean=tuple(float(x) for x in cfg.pixel_mean),
                          std=tuple(float(x) for x in cfg.pixel_std), shorter_side=int(cfg.test_shorter_side),
                          max_size=int(cfg.test_max_size), size_divisibility=int(cfg.size_divisibility))


def preprocess_meta(cfg) -> Dict[str, Any]:
    """export.json's "preprocess" section for a model config."""
    p = preprocess_from_config(cfg)
    return {"color": p.color, "mean": list(p.mean), "std": list(p.std), "shorter_side": p.shorter_side,
            "max_size": p.max_size, "size_divisibility": p.size_divisibility, "resize_rule": RESIZE_RULE}


def spec_from_config(cfg, model_dir: str, weights: Optional[Dict[str, Any]] = None,
                     msda: str = MSDA_ONNX) -> ModelSpec:
    """A ModelSpec for running an in-memory model of config ``cfg`` (mdqe's ModelConfig) without an
    export directory (the torch backend): ``model_dir`` is only a label, ``weights`` the
    export.json-style weights record ({"source": path} or {"seed": n})."""
    return ModelSpec(model_dir=model_dir, num_frames=int(cfg.num_frames), num_queries=int(cfg.num_grid_queries),
                     num_classes=int(cfg.num_classes), class_names=tuple(cfg.class_names),
                     embed_dim=int(cfg.embed_dim), mask_stride=MASK_STRIDE, preprocess=preprocess_from_config(cfg),
                     msda=msda, dtype="fp32", encoder_file="", decoder_file="", model_name=str(cfg.name),
                     config=cfg.to_dict(), weights=dict(weights or {}))
