"""Model directory validation and backend errors (INTERFACES.md sections 5 and 6)."""
import json
import os
import sys

import numpy as np
import pytest

from runtime.backends import create_backend
from runtime.backends.trt_backend import find_plugin_library, load_plugin_library
from runtime.errors import BackendUnavailableError, ModelDirError, PluginLibraryError
from runtime.contract import PreprocessSpec, resized_size
from runtime.model_dir import load_model_dir
from runtime.preprocess import geometry_for, Preprocessor

ENC_OUT = ["memory", "spatial_shapes", "level_start_index", "mask_features", "query_feat", "query_points",
           "query_embed"]
DEC_IN = ENC_OUT + ["valid_hw"]
DEC_OUT = ["pred_logits", "pred_boxes", "pred_masks", "pred_embeds", "pred_queries"]


def export_json(**over):
    d = {"format_version": 2, "config": {}, "model_name": "t", "num_frames": 4, "num_queries": 4, "num_classes": 2,
         "class_names": ["a", "b"], "embed_dim": 8, "mask_stride": 4,
         "preprocess": {"color": "RGB", "mean": [1, 2, 3], "std": [1, 1, 1], "shorter_side": 64, "max_size": 128,
                        "size_divisibility": 32},
         "encoder": {"file": "encoder.onnx", "inputs": {"images": ["N", 3, "H", "W"], "valid_hw": ["N", 2]},
                     "outputs": {n: [] for n in ENC_OUT}},
         "decoder": {"file": "decoder.onnx", "inputs": {n: [] for n in DEC_IN},
                     "outputs": {n: [] for n in DEC_OUT}},
         "msda": "onnx", "dtype": "fp32"}
    d.update(over)
    return d


def make_dir(tmp_path, meta, files=("encoder.onnx", "decoder.onnx")):
    d = tmp_path / "model"
    d.mkdir(exist_ok=True)
    (d / "export.json").write_text(json.dumps(meta) if not isinstance(meta, str) else meta)
    for f in files:
        (d / f).write_bytes(b"not onnx")
    return str(d)


def test_valid_export_json(tmp_path):
    spec = load_model_dir(make_dir(tmp_path, export_json()))
    assert spec.num_frames == 4 and spec.class_names == ("a", "b") and spec.preprocess.shorter_side == 64


@pytest.mark.parametrize("meta,match", [
    (export_json(format_version=3), "format_version 3 is not supported"),
    (export_json(format_version=1), "format_version 1 is an older graph contract .* re-export"),
    ("{not json", "cannot read"),
    ({k: v for k, v in export_json().items() if k != "preprocess"}, "missing key 'preprocess'"),
    (export_json(class_names=["a"]), "1 class_names for num_classes=2"),
    (export_json(msda="magic"), "msda must be"),
])
def test_bad_export_json(tmp_path, meta, match):
    with pytest.raises(ModelDirError, match=match):
        load_model_dir(make_dir(tmp_path, meta))


def test_mismatched_tensor_names_in_export_json(tmp_path):
    meta = export_json()
    meta["decoder"]["outputs"] = {"logits": [], "pred_boxes": [], "pred_masks": [], "pred_embeds": [], "pred_queries": []}
    with pytest.raises(ModelDirError, match="decoder outputs.*missing \\['pred_logits'\\].*unexpected \\['logits'\\]"):
        load_model_dir(make_dir(tmp_path, meta))


def test_missing_dir_and_files(tmp_path):
    with pytest.raises(ModelDirError, match="model directory not found"):
        create_backend("ort", str(tmp_path / "none"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelDirError, match="no export.json"):
        create_backend("ort", str(tmp_path / "empty"))
    d = make_dir(tmp_path, export_json(), files=("encoder.onnx",))
    with pytest.raises(ModelDirError, match="missing decoder.onnx"):
        create_backend("ort", d)


def test_corrupt_graph_file(tmp_path):
    with pytest.raises(ModelDirError, match="ONNX Runtime cannot load .*encoder.onnx"):
        create_backend("ort", make_dir(tmp_path, export_json()))


def test_graph_with_other_tensor_names(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    d = make_dir(tmp_path, export_json(), files=())
    for f in ("encoder.onnx", "decoder.onnx"):
        onnx.save(m, os.path.join(d, f))
    with pytest.raises(ModelDirError, match="incompatible model directory: encoder.onnx inputs are \\['x'\\]"):
        create_backend("ort", d)


def test_plugin_graph_without_custom_op_module(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "runtime.native.ort_ops", None)
    with pytest.raises(PluginLibraryError, match="plugin-form graph.*--msda onnx"):
        create_backend("ort", make_dir(tmp_path, export_json(msda="plugin")))


def test_unknown_provider_and_backend(tmp_path):
    d = make_dir(tmp_path, export_json())
    with pytest.raises(BackendUnavailableError, match="provider NopeExecutionProvider is not available"):
        create_backend("ort", d, providers="NopeExecutionProvider")
    with pytest.raises(BackendUnavailableError, match="unknown backend 'tflite'"):
        create_backend("tflite", d)


def test_trt_backend_without_tensorrt(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)     # unimportable even where TensorRT exists
    with pytest.raises(BackendUnavailableError, match="needs the TensorRT Python package"):
        create_backend("trt", make_dir(tmp_path, export_json(msda="plugin")))


def test_missing_plugin_library(tmp_path, monkeypatch):
    monkeypatch.setenv("MDQE_TRT_PLUGIN", str(tmp_path / "nowhere" / "libmdqe_trt_plugin.so"))
    model_dir = str(tmp_path)
    if not any(os.path.isfile(p) for p in __import__("runtime.backends.trt_backend", fromlist=["x"])
               .plugin_search_paths(model_dir)):
        with pytest.raises(PluginLibraryError, match="libmdqe_trt_plugin.so not found.*Looked in: .*nowhere"):
            find_plugin_library(None, model_dir)
    with pytest.raises(PluginLibraryError, match="not found: /x/libfoo.so"):
        find_plugin_library("/x/libfoo.so", model_dir)
    junk = tmp_path / "libjunk.so"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(PluginLibraryError, match="cannot load TensorRT plugin library"):
        load_plugin_library(str(junk))


@pytest.mark.parametrize("hw,expect", [((272, 640), (163, 384)), ((640, 272), (384, 163)),
                                       ((192, 192), (192, 192)), ((100, 120), (192, 230))])
def test_resize_rule(hw, expect):
    assert resized_size(*hw, shorter_side=192, max_size=384) == expect


def test_preprocess_normalises_and_pads():
    spec = PreprocessSpec(color="RGB", mean=(10.0, 20.0, 30.0), std=(2.0, 4.0, 5.0), shorter_side=40, max_size=100,
                          size_divisibility=32)
    frame = np.zeros((50, 60, 3), np.uint8)
    frame[..., 0], frame[..., 1], frame[..., 2] = 30, 20, 10          # BGR
    g = geometry_for(50, 60, spec)
    assert g.resized == (40, 48) and g.padded == (64, 64)
    x = Preprocessor(spec)(frame)
    assert x.shape == (3, 64, 64) and x.dtype == np.float32
    assert np.allclose(x[:, :40, :48].reshape(3, -1).mean(1), [(10 - 10) / 2, (20 - 20) / 4, (30 - 30) / 5])
    frame[..., 2] = 110                                                   # R channel
    x = Preprocessor(spec)(frame)
    assert np.allclose(x[0, :40, :48], 50.0) and np.all(x[:, 40:, :] == 0) and np.all(x[:, :, 48:] == 0)


def test_provider_resolution():
    from runtime.backends.ort_backend import resolve_providers
    avail = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert resolve_providers(None, avail) == ["CPUExecutionProvider"]
    assert resolve_providers("auto", avail) == avail
    assert resolve_providers("auto", ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert resolve_providers("cuda", avail) == avail
    with pytest.raises(BackendUnavailableError, match="TensorrtExecutionProvider is not available"):
        resolve_providers("tensorrt,cuda", avail)
