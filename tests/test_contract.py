"""runtime.contract, the one home of the exported-model contract: the C++ side (trt_plugins/,
CMake targets) agrees with it, and its rules (forms, level sizes, resize, config -> spec) hold."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from runtime import contract as C

REPO = Path(__file__).resolve().parents[1]


def _cmake_text() -> str:
    return (REPO / "CMakeLists.txt").read_text() + "".join(
        p.read_text() for p in (REPO / "trt_plugins").rglob("CMakeLists.txt"))


def test_cpp_plugin_identity_equals_python_contract():
    """trt_plugins' constants (name, version, namespace, fields) are the ones runtime.contract names."""
    header = (REPO / "trt_plugins" / "plugin" / "msda_plugin_logic.h").read_text()
    consts = dict(re.findall(r'constexpr char (k\w+)\[\] = "([^"]*)";', header))
    assert consts["kPluginName"] == C.OUR_PLUGIN.op_type
    assert consts["kPluginVersion"] == C.OUR_PLUGIN.version and C.OUR_PLUGIN.versions == (C.OUR_PLUGIN.version,)
    assert consts["kPluginNamespace"] == C.OUR_PLUGIN.namespace
    fields = [v for k, v in consts.items() if k.startswith("kField")]
    assert tuple(fields) == C.OUR_PLUGIN.fields
    assert re.search(rf"kNbFields = {len(C.OUR_PLUGIN.fields)};", header)


def test_library_names_and_abi_equal_the_build():
    """The library file names are those CMake builds (lib<target>.so) and the CPU kernel's ABI
    version is the header's."""
    cmake = _cmake_text()
    for lib in (C.CPU_KERNEL_LIBRARY, C.TRT_PLUGIN_LIBRARY, C.TRT_PLUGIN_STATIC_LIBRARY):
        target = Path(lib).stem[3:]                            # libmdqe_trt_plugin.so <- mdqe_trt_plugin
        assert re.search(rf"add_library\({target} SHARED", cmake), lib
    assert C.OUR_PLUGIN.library == C.TRT_PLUGIN_LIBRARY
    h = (REPO / "trt_plugins" / "include" / "mdqe_msda" / "msda_cpu.h").read_text()
    assert int(re.search(r"#define MDQE_MSDA_ABI_VERSION (\d+)", h).group(1)) == C.CPU_KERNEL_ABI_VERSION
    h = (REPO / "trt_plugins" / "include" / "mdqe_msda" / "postprocess_cpu.h").read_text()
    assert int(re.search(r"#define MDQE_PP_ABI_VERSION (\d+)", h).group(1)) == C.POSTPROCESS_ABI_VERSION
    setup = (REPO / "setup.py").read_text()                    # the build script cannot import the package
    assert f'"{C.CPU_KERNEL_LIBRARY}"' in setup


def test_check_msda_form():
    for form in C.MSDA_FORMS:
        assert C.check_msda_form(form) == form
    with pytest.raises(ValueError, match="MSDeformAttn form must be one of onnx, gridsample, plugin, trt-builtin, "
                                         "got 'tensorrt'"):
        C.check_msda_form("tensorrt")

    class Bad(Exception):
        pass
    with pytest.raises(Bad, match="^--msda must be one of"):
        C.check_msda_form(None, "--msda", Bad)
    assert set(C.MSDA_PLAIN_FORMS) == {f for f in C.MSDA_FORMS if C.plugin_identity(f) is None}


def test_tensor_names():
    assert C.ENCODER_OUTPUTS == C.FEATURE_NAMES and C.DECODER_INPUTS == C.FEATURE_NAMES + (C.VALID_HW,)
    every = set(C.ENCODER_INPUTS) | set(C.ENCODER_OUTPUTS) | set(C.DECODER_INPUTS) | set(C.DECODER_OUTPUTS)
    assert set(C.TENSOR_RANKS) == every
    assert set(C.PER_FRAME_FEATURES) | set(C.LEVEL_TENSORS) == set(C.DECODER_INPUTS)
    assert set(C.INT64_TENSORS) <= every


@pytest.mark.parametrize("hw", [(384, 640), (352, 608), (96, 128), (224, 224)])
def test_level_sizes_agree(hw):
    """Strides 8/16/32 then halving rounding up; the three entry points agree."""
    H, W = hw
    L = 4
    sizes = C.level_sizes(H, W, L)
    assert sizes[:3] == [(H // 8, W // 8), (H // 16, W // 16), (H // 32, W // 32)]
    assert sizes[3] == (-(-H // 64), -(-W // 64))
    assert C.level_sizes_from_mask(H // 4, W // 4, L) == sizes == C.level_sizes_from_level0(H // 8, W // 8, L)
    assert C.level_strides(L) == [8, 16, 32, 64]


def test_level_sizes_match_the_model():
    """The model's encoder produces the level sizes the contract computes (tiny config, 2 sizes)."""
    torch = pytest.importorskip("torch")
    import mdqe
    model = mdqe.build_model("tiny").eval()
    for H, W in ((128, 160), (96, 224)):
        with torch.inference_mode():
            feats = model.encode_frames(torch.zeros(1, 3, H, W))
        got = [tuple(int(v) for v in r) for r in feats["spatial_shapes"].tolist()]
        assert got == C.level_sizes(H, W, model.cfg.num_feature_levels)


def test_resize_rule():
    assert C.resized_size(720, 1280, 360, 1280) == (360, 640)
    assert C.resized_size(100, 1000, 360, 1280) == (128, 1280)     # the long side caps the scale
    assert C.resized_size(1, 1, 360, 1280) == (360, 360)
    assert C.padded_size(360, 640, 32) == (384, 640) and C.padded_size(5, 7, 1) == (5, 7)
    with pytest.raises(ValueError, match="bad frame size"):
        C.resized_size(0, 10, 360, 1280)
    from runtime import preprocess
    assert preprocess.resized_size is C.resized_size            # preprocess uses the contract's rule


def test_spec_from_config():
    pytest.importorskip("torch")
    import mdqe
    cfg = mdqe.get_config("tiny")
    spec = C.spec_from_config(cfg, "<label>", {"seed": 3})
    assert (spec.num_frames, spec.num_queries, spec.num_classes, spec.embed_dim) == (
        cfg.num_frames, cfg.num_grid_queries, cfg.num_classes, cfg.embed_dim)
    assert spec.class_names == tuple(cfg.class_names) and spec.config == cfg.to_dict()
    assert spec.preprocess.shorter_side == cfg.test_shorter_side and spec.preprocess.max_size == cfg.test_max_size
    assert spec.preprocess.mean == tuple(cfg.pixel_mean) and spec.mask_stride == C.MASK_STRIDE
    meta = C.preprocess_meta(cfg)
    assert meta["size_divisibility"] == cfg.size_divisibility and meta["resize_rule"] == C.RESIZE_RULE
