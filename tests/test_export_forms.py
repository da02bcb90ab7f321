"""The four MSDeformAttn export forms: names and plugin identities from their one home
(runtime.model_dir), the Gather form's semantics, NVIDIA's MultiscaleDeformableAttnPlugin_TRT node
contract, ONNX Runtime execution of every form, the fast Python-op output path, and the printed
trtexec / polygraphy lines per form. Op level (a small module), fast; whole-model exports are in
tests/test_export.py and tests/test_export_r50.py."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export import build_engines
from export.verify import VerificationError, check_graph, check_msda_form
from mdqe.ops import MSDACaller, ms_deform_attn_torch, use_msda_impl
from mdqe.ops.msda.forms import ms_deform_attn_gather_form, ms_deform_attn_gridsample_form
from runtime.native.ort_ops import create_session, fast_output, prepare_for_ort
from runtime.errors import ModelDirError
from runtime.contract import (FORMAT_VERSION, MSDA_EXPORT_DEFAULT, MSDA_FORMS, MSDA_ORT_CPU_FASTEST,
                              OUR_PLUGIN, TRT_BUILTIN_PLUGIN, plugin_identity)
from runtime.model_dir import load_model_dir

from test_export_ops import _MiniEncoder, _random_call  # the same small module as the op-level tests

REPO = Path(__file__).resolve().parents[1]

# NVIDIA's documented contract of MultiscaleDeformableAttnPlugin_TRT (TensorRT
# plugin/multiscaleDeformableAttnPlugin/README.md and its supportsFormatCombination / getOutputShapes):
# input ranks and element types, output rank, no plugin fields.
NV_INPUT_RANKS = (4, 2, 1, 6, 5)            # value, spatial_shapes, level_start_index, sampling_locations, weights
NV_INT32_INPUTS = (1, 2)
NV_OUTPUT_RANK = 4                          # [N, Lq, M, D]


def test_form_names_and_identities_have_one_home():
    assert MSDA_FORMS == ("onnx", "gridsample", "plugin", "trt-builtin")
    assert MSDA_EXPORT_DEFAULT == "onnx" and MSDA_ORT_CPU_FASTEST in MSDA_FORMS
    assert plugin_identity("onnx") is None and plugin_identity("gridsample") is None
    assert plugin_identity("plugin") is OUR_PLUGIN and plugin_identity("trt-builtin") is TRT_BUILTIN_PLUGIN
    assert TRT_BUILTIN_PLUGIN.op_type == "MultiscaleDeformableAttnPlugin_TRT"
    assert TRT_BUILTIN_PLUGIN.version == "2" and TRT_BUILTIN_PLUGIN.versions == ("1", "2")
    assert TRT_BUILTIN_PLUGIN.namespace == "" and not TRT_BUILTIN_PLUGIN.needs_plugin_library
    assert TRT_BUILTIN_PLUGIN.output_rank == NV_OUTPUT_RANK
    with pytest.raises(ValueError, match="trt-builtin"):
        plugin_identity("tensorrt")
    # the exporter's CLI choices and default are these names
    from export import to_onnx
    assert to_onnx.parse_args(["--config", "tiny", "--weights", "random", "--output", "x"]).msda == "onnx"
    for form in MSDA_FORMS:
        assert to_onnx.parse_args(["--config", "t", "--weights", "r", "--output", "x", "--msda", form]).msda == form


def test_model_dir_accepts_every_form(tmp_path):
    base = json.loads(json.dumps({
        "format_version": FORMAT_VERSION, "encoder": {"file": "encoder.onnx"}, "decoder": {"file": "decoder.onnx"},
        "preprocess": {"mean": [0, 0, 0], "std": [1, 1, 1], "shorter_side": 360, "max_size": 640},
        "class_names": ["a"], "num_classes": 1, "num_frames": 4, "num_queries": 4, "embed_dim": 8}))
    for form in MSDA_FORMS + ("tensorrt",):
        (tmp_path / "export.json").write_text(json.dumps({**base, "msda": form}))
        if form == "tensorrt":
            with pytest.raises(ModelDirError, match="trt-builtin"):
                load_model_dir(str(tmp_path))
        else:
            assert load_model_dir(str(tmp_path)).msda == form


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gather_form_equals_grid_sample(seed):
    """Zero padding, align_corners=False, points far outside, exactly on borders, one-pixel levels."""
    args = list(_random_call(seed=seed, shapes=((8, 10), (4, 5), (1, 1), (2, 3))))
    loc = args[3]
    loc[0, 0, :, :, 0] = torch.tensor([0.0, 1.0])     # map corners
    loc[0, 1, :, :, 1] = torch.tensor([-3.0, 7.0])    # far outside: contributes 0
    loc[1, 2, 0, 0, 0] = torch.tensor([1.0 + 0.5 / 10, 0.5])   # x = W exactly: outside
    ref = ms_deform_attn_torch(*args)
    got = ms_deform_attn_gather_form(*args)
    assert got.shape == ref.shape
    assert (got - ref).abs().max().item() < 1e-5


def _export(module, x, path, mode, plugin_version=None):
    with use_msda_impl(module, mode, plugin_version), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=17, input_names=["images"],
                          output_names=["out", "ss"], dynamic_axes={"images": {0: "N", 2: "H", 3: "W"}},
                          custom_opsets={i.onnx_domain: 1 for i in (OUR_PLUGIN, TRT_BUILTIN_PLUGIN)})
    return onnx.load(str(path))


@pytest.fixture(scope="module")
def mini():
    torch.manual_seed(0)
    return _MiniEncoder().eval()


@pytest.fixture(scope="module")
def mini_graphs(mini, tmp_path_factory):
    d = tmp_path_factory.mktemp("forms")
    return {form: _export(mini, torch.randn(2, 3, 128, 160), d / f"{form}.onnx", form) for form in MSDA_FORMS}


@pytest.mark.parametrize("form", MSDA_FORMS)
def test_every_form_runs_in_ort_at_other_sizes(form, mini, mini_graphs):
    model = mini_graphs[form]
    inferred = check_graph(model, form)
    check_msda_form(inferred, form, form, expected_plugin_nodes=1, expected_gridsample=3)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("GridSample") == (3 if form == "gridsample" else 0)
    sess = create_session(model)
    for shape in [(2, 3, 128, 160), (1, 3, 192, 256), (3, 3, 96, 320)]:
        x = torch.randn(shape)
        with torch.no_grad():
            ref, ss = mini(x)
        out, ss_o = sess.run(None, {"images": x.numpy()})
        assert np.array_equal(ss_o, ss.numpy())
        assert np.abs(out - ref.numpy()).max() < 1e-5, (form, shape)


def test_trt_builtin_node_carries_nvidias_contract(mini_graphs):
    model = onnx.shape_inference.infer_shapes(mini_graphs["trt-builtin"])
    nodes = [n for n in model.graph.node if n.op_type == TRT_BUILTIN_PLUGIN.op_type]
    assert len(nodes) == 1
    node = nodes[0]
    assert node.domain == TRT_BUILTIN_PLUGIN.onnx_domain
    assert {a.name: a.s for a in node.attribute} == {"plugin_version": b"2", "plugin_namespace": b""}
    assert len(node.input) == 5 and len(node.output) == 1
    vis = {v.name: v.type.tensor_type for v in list(model.graph.value_info) + list(model.graph.output)
           + list(model.graph.input)}
    casts = {n.output[0]: n for n in model.graph.node if n.op_type == "Cast"}
    for i, rank in enumerate(NV_INPUT_RANKS):
        t = vis.get(node.input[i])
        if t is not None and t.HasField("shape"):
            assert len(t.shape.dim) == rank, (i, t)
        if i in NV_INT32_INPUTS:
            assert {a.name: a.i for a in casts[node.input[i]].attribute}["to"] == onnx.TensorProto.INT32
    out = vis[node.output[0]]
    assert out.elem_type == onnx.TensorProto.FLOAT and len(out.shape.dim) == NV_OUTPUT_RANK
    assert [d.dim_value for d in out.shape.dim[2:]] == [4, 8]            # M, D static
    # the 4-D output is reshaped to [N, Lq, M*D] right after the node
    consumers = [n for n in model.graph.node if node.output[0] in n.input]
    assert [n.op_type for n in consumers] == ["Reshape"]


def test_trt_builtin_plugin_version_1_and_census_errors(mini, tmp_path, mini_graphs):
    m1 = _export(mini, torch.randn(1, 3, 64, 96), tmp_path / "v1.onnx", "trt-builtin", plugin_version="1")
    node = [n for n in m1.graph.node if n.op_type == TRT_BUILTIN_PLUGIN.op_type][0]
    assert {a.name: a.s for a in node.attribute} == {"plugin_version": b"1", "plugin_namespace": b""}
    check_msda_form(check_graph(m1, "v1"), "v1", "trt-builtin", 1, plugin_version="1")
    with pytest.raises(VerificationError, match="NVIDIA's plugin takes exactly"):
        check_msda_form(check_graph(m1, "v1"), "v1", "trt-builtin", 1)           # expects "2"
    with pytest.raises(ValueError, match="plugin_version"):
        with use_msda_impl(mini, "trt-builtin", "3"):
            pass
    with pytest.raises(ValueError, match="trt-builtin"):
        with use_msda_impl(mini, "plugin", "1"):
            pass
    # the census tells the forms apart
    with pytest.raises(VerificationError, match="GridSample"):
        check_msda_form(mini_graphs["gridsample"], "g", "onnx", 1)
    with pytest.raises(VerificationError, match="custom nodes"):
        check_msda_form(mini_graphs["plugin"], "p", "onnx", 1)
    with pytest.raises(VerificationError, match="MultiscaleDeformableAttnPlugin_TRT nodes, expected 2"):
        check_msda_form(mini_graphs["trt-builtin"], "b", "trt-builtin", 2)
    with pytest.raises(VerificationError, match="GridSample nodes, expected 4"):
        check_msda_form(mini_graphs["gridsample"], "g", "gridsample", 1, expected_gridsample=4)


@pytest.mark.parametrize("form", ["onnx", "gridsample"])
def test_fp16_typing_of_pure_onnx_forms(form, mini, mini_graphs):
    """The Gather form survives the fp16 pass: index arithmetic stays int64, the result is close."""
    from export.fp16 import FLOAT16, _float_types, convert_graph_fp16

    model = onnx.ModelProto()
    model.CopyFrom(mini_graphs[form])
    for n in model.graph.node:
        n.name = "/encoder/layers.0/" + (n.name or n.op_type).lstrip("/")
    half = convert_graph_fp16(model)
    onnx.checker.check_model(half)
    types = _float_types(half)
    op = "MatMul" if form == "onnx" else "GridSample"
    assert any(types.get(n.output[0]) == FLOAT16 for n in half.graph.node if n.op_type == op)
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ref, _ = mini(x)
    out = create_session(half).run(["out"], {"images": x.numpy()})[0]
    err = np.abs(out - ref.numpy()).max()
    assert 0 < err < 1e-2 + 2e-2 * np.abs(ref.numpy()).max(), err


def test_fp16_typing_of_trt_builtin_node(mini, tmp_path):
    from export.fp16 import FLOAT16, _float_types, convert_graph_fp16

    model = _export(mini, torch.randn(2, 3, 64, 96), tmp_path / "b.onnx", "trt-builtin")
    for n in model.graph.node:
        n.name = "/encoder/layers.0/" + (n.name or n.op_type).lstrip("/")
    half = convert_graph_fp16(model)
    onnx.checker.check_model(half)
    types = _float_types(half)
    node = [n for n in half.graph.node if n.op_type == TRT_BUILTIN_PLUGIN.op_type][0]
    assert [types[node.input[i]] for i in (0, 3, 4)] == [FLOAT16] * 3 and types[node.output[0]] == FLOAT16
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ref, _ = mini(x)
    out = create_session(half).run(["out"], {"images": x.numpy()})[0]
    assert np.abs(out - ref.numpy()).max() < 1e-2 + 2e-2 * np.abs(ref.numpy()).max()


def test_python_op_output_path_is_fast_and_exact(mini_graphs):
    """Our ops return a numpy array through the onnxruntime-extensions hook (not a Python list)."""
    from runtime.native import msda

    prepared = prepare_for_ort(mini_graphs["plugin"])
    assert [n.domain for n in prepared.graph.node if n.op_type == OUR_PLUGIN.op_type] == ["ai.onnx.contrib"]
    create_session(mini_graphs["plugin"])
    assert fast_output()
    if not msda.is_available():
        pytest.skip("native kernel not built")
    rng = np.random.default_rng(0)
    shapes = np.array([[6, 7], [3, 4]])
    S = int((shapes[:, 0] * shapes[:, 1]).sum())
    v = rng.standard_normal((2, S, 2, 4), dtype=np.float32)
    loc = rng.random((2, 5, 2, 2, 3, 2), dtype=np.float32)
    aw = rng.random((2, 5, 2, 2, 3), dtype=np.float32)
    ref = msda.ms_deform_attn_cpu(v, shapes, np.array([0, 42]), loc, aw)
    g = onnx.helper
    node = g.make_node(TRT_BUILTIN_PLUGIN.op_type, ["v", "ss", "lsi", "loc", "aw"], ["out"],
                       domain=TRT_BUILTIN_PLUGIN.onnx_domain, plugin_version="2", plugin_namespace="")
    graph = g.make_graph([node], "nv", [
        g.make_tensor_value_info("v", onnx.TensorProto.FLOAT, v.shape),
        g.make_tensor_value_info("ss", onnx.TensorProto.INT32, [2, 2]),
        g.make_tensor_value_info("lsi", onnx.TensorProto.INT32, [2]),
        g.make_tensor_value_info("loc", onnx.TensorProto.FLOAT, loc.shape),
        g.make_tensor_value_info("aw", onnx.TensorProto.FLOAT, aw.shape)],
        [g.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [2, 5, 2, 4])])
    model = g.make_model(graph, opset_imports=[g.make_opsetid("", 17), g.make_opsetid(TRT_BUILTIN_PLUGIN.onnx_domain, 1)])
    out = create_session(model).run(None, {"v": v, "ss": shapes.astype(np.int32), "lsi": np.array([0, 42], np.int32),
                                           "loc": loc, "aw": aw})[0]
    assert out.shape == (2, 5, 2, 4)
    assert np.array_equal(out.reshape(2, 5, 8), ref)


def _meta(form, version=None):
    return {"format_version": FORMAT_VERSION, "msda": form, "dtype": "fp32", "num_frames": 4, "num_queries": 196,
            "embed_dim": 256, "export_size": [384, 640], "num_levels": 4, "class_names": ["a"], "num_classes": 1,
            "config": {"hidden_dim": 256, "mask_dim": 256, "num_feature_levels": 4},
            "preprocess": {"size_divisibility": 32, "max_size": 1280, "shorter_side": 360,
                           "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]},
            "plugin": ({"version": version or "2"} if form == "trt-builtin" else {}),
            "encoder": {"file": "encoder.onnx"}, "decoder": {"file": "decoder.onnx"}}


@pytest.mark.parametrize("form", MSDA_FORMS)
def test_printed_trtexec_and_polygraphy_lines_per_form(form, capsys, tmp_path):
    d = tmp_path / form
    d.mkdir()
    (d / "export.json").write_text(json.dumps(_meta(form)))
    for f in ("encoder.onnx", "decoder.onnx"):
        (d / f).write_bytes(b"")
    assert build_engines.main(["--model", str(d), "--plugin-lib", "/opt/lib/libmdqe_trt_plugin.so",
                               "--print-only"]) == 0
    out = capsys.readouterr().out
    trtexec = [ln for ln in out.splitlines() if ln.startswith("trtexec")]
    poly = [ln for ln in out.splitlines() if ln.startswith("polygraphy run")]
    assert len(trtexec) == 4 and len(poly) == 2
    if form == "plugin":
        assert all("--dynamicPlugins=/opt/lib/libmdqe_trt_plugin.so" in ln for ln in trtexec)
        assert all("--plugins /opt/lib/libmdqe_trt_plugin_static.so" in ln for ln in poly)
    else:
        assert not any("Plugins" in ln for ln in trtexec) and not any("--plugins" in ln for ln in poly)
    for graph, ln in zip(("encoder", "decoder"), poly):
        assert f"{d}/{graph}.onnx --trt" in ln
        assert f"--load-inputs {d}/polygraphy/{graph}_inputs.json" in ln
        assert f"--load-outputs {d}/polygraphy/{graph}_ort_outputs.json" in ln
    if form == "trt-builtin":
        assert "MultiscaleDeformableAttnPlugin_TRT version 2 from libnvinfer_plugin.so" in out
        assert "TensorRT >= 10.11" in out
    if form == "gridsample":
        assert "miscompile" in out


def test_runtime_picks_the_fastest_ort_cpu_form(monkeypatch):
    """The demo's default form: the measured fastest (our kernel behind the Python op) when the
    kernel and onnxruntime-extensions are here, else the fastest plain-ONNX form."""
    from runtime.backends import ort_backend
    from runtime.contract import MSDA_ORT_CPU_FASTEST_PLAIN

    assert plugin_identity(MSDA_ORT_CPU_FASTEST_PLAIN) is None
    monkeypatch.setattr(ort_backend, "custom_node_support", lambda: None)
    assert ort_backend.ort_cpu_form()[0] == MSDA_ORT_CPU_FASTEST
    monkeypatch.setattr(ort_backend, "custom_node_support", lambda: "the native kernel is not built")
    form, why = ort_backend.ort_cpu_form()
    assert form == (MSDA_ORT_CPU_FASTEST if plugin_identity(MSDA_ORT_CPU_FASTEST) is None
                    else MSDA_ORT_CPU_FASTEST_PLAIN)
    if plugin_identity(MSDA_ORT_CPU_FASTEST) is not None:
        assert "not built" in why


def test_precision_study_emulations():
    """benchmarks.msda_precision: the fp64 reference equals grid_sample in float64; our fp16
    emulation on half-exact inputs equals our fp32 kernel up to the output rounding; NVIDIA's
    half arithmetic is measurably worse than ours and still close."""
    from benchmarks import msda_precision as mp
    from runtime.native import msda

    if not msda.is_available():
        pytest.skip("native kernel not built")
    rng = np.random.default_rng(0)
    shapes = [(6, 10), (3, 5)]
    ref_pts = rng.uniform(0.05, 0.95, (2, 9, 2))
    args = mp.make_case(rng, 2, 9, shapes, ref_pts)
    t = [torch.from_numpy(a) for a in args]
    ref64 = mp.msda_fp64(*args)
    grid64 = ms_deform_attn_torch(t[0].double(), t[1], t[2], t[3].double(), t[4].double()).numpy()
    assert np.abs(ref64.reshape(grid64.shape) - grid64).max() < 1e-10
    half_exact = [a.astype(np.float16).astype(np.float32) if a.dtype == np.float32 else a for a in args]
    ours16 = mp.msda_ours_fp16(*half_exact).astype(np.float64)
    ours32 = mp.msda_ours_fp32(*half_exact).astype(np.float64)
    assert np.abs(ours16 - ours32).max() <= np.abs(ours32).max() * 2 ** -10       # half output rounding
    e_ours = np.abs(mp.msda_ours_fp16(*args) - ref64).mean()
    e_nv = np.abs(mp.msda_nvidia_fp16(*args).astype(np.float64) - ref64).mean()
    assert e_ours < e_nv < 0.05 * np.abs(ref64).max()


def test_exporter_rejects_bad_form_options(tmp_path, capsys):
    from export import to_onnx

    out = str(tmp_path / "x")
    assert to_onnx.main(["--config", "tiny", "--weights", "random", "--output", out, "--msda", "plugin",
                         "--plugin-version", "1"]) == 2
    assert "--plugin-version applies to --msda trt-builtin only" in capsys.readouterr().err
    with pytest.raises(to_onnx.ExportError, match="--msda must be one of onnx, gridsample, plugin, trt-builtin"):
        to_onnx.export_model("tiny", "random", out, msda="tensorrt")
    with pytest.raises(SystemExit):
        to_onnx.parse_args(["--config", "tiny", "--weights", "random", "--output", out, "--msda", "trt-builtin",
                            "--plugin-version", "3"])


class _Op(MSDACaller, torch.nn.Module):
    msda_impl = "torch"

    def forward(self, value, spatial_shapes, level_start_index, loc, attn):
        from mdqe.ops import ms_deform_attn
        return ms_deform_attn(value, spatial_shapes, level_start_index, loc, attn, impl=self.msda_impl)


@pytest.mark.parametrize("form", MSDA_FORMS)
def test_bad_samples_contribute_zero_in_every_form(form, tmp_path):
    """mdqe.ops' semantics for bad samples hold in every exported form: a non-finite location, or one
    with no corner inside its map, contributes exactly 0 whatever its weight (even NaN)."""
    from runtime.native.ort_ops import create_session as session

    args = list(_random_call(seed=4))
    loc, aw = args[3], args[4]
    loc[0, 0, :, 0, 0] = torch.tensor([float("nan"), 0.5])
    loc[0, 1, :, 1, 1] = torch.tensor([float("inf"), 0.5])
    loc[1, 2, :, 2, 2] = torch.tensor([0.5, -float("inf")])
    loc[1, 3, :, 0, 1] = torch.tensor([3.0, 0.5])          # far right: no corner inside
    aw[0, 0, :, 0, 0] = float("nan")
    aw[0, 1, :, 1, 1] = float("inf")
    aw[1, 3, :, 0, 1] = float("nan")
    ref = ms_deform_attn_torch(*args)
    assert torch.isfinite(ref).all()
    path = tmp_path / "op.onnx"
    names = ["value", "spatial_shapes", "level_start_index", "loc", "attn"]
    op = _Op()
    with use_msda_impl(op, form), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(op, tuple(args), str(path), dynamo=False, opset_version=17, input_names=names,
                          output_names=["out"],
                          custom_opsets={i.onnx_domain: 1 for i in (OUR_PLUGIN, TRT_BUILTIN_PLUGIN)})
    sess = session(path)
    feeds = {n: a.numpy() for n, a in zip(names, args) if n in {i.name for i in sess.get_inputs()}}
    out = sess.run(None, feeds)[0]
    assert np.isfinite(out).all(), form
    assert np.abs(out - ref.numpy()).max() < 1e-5, form
    if form in ("onnx", "gridsample"):
        hook = ms_deform_attn_gather_form if form == "onnx" else ms_deform_attn_gridsample_form
        assert (hook(*args) - ref).abs().max().item() < 1e-5


def test_precision_study_end_to_end_runs_on_padded_frames():
    """benchmarks.msda_precision's end-to-end study runs the R50 graphs on frames padded to a
    multiple of 32 (valid_hw input): our fp32 kernel stays at fp32 rounding of the fp64 run, and
    NVIDIA's fp16 arithmetic moves the mask logits more than ours."""
    from benchmarks import msda_precision as mp
    from runtime.native import msda

    if not msda.is_available():
        pytest.skip("native kernel not built")
    rows = mp.e2e_study((60, 90), seed=0, threads=0)       # padded to 64x96
    fp32 = next(v for k, v in rows.items() if isinstance(v, dict) and "fp32" in k)
    assert fp32["mask_logit_max_abs"] < 1e-3 and fp32["top_class_changed"] == 0
    ours16 = next(v for k, v in rows.items() if isinstance(v, dict) and "ours fp16" in k)
    nv16 = next(v for k, v in rows.items() if isinstance(v, dict) and "NVIDIA" in k)
    assert nv16["mask_logit_max_abs"] > ours16["mask_logit_max_abs"] > fp32["mask_logit_max_abs"]


def test_forms_benchmark_runs(tmp_path):
    """benchmarks.msda_forms times every form it is given on the same graph inputs (valid_hw
    included) and the forms agree on the decoder outputs."""
    from benchmarks import msda_forms
    from runtime.native import msda

    if not msda.is_available():
        pytest.skip("native kernel not built")
    res = msda_forms.bench_config("tiny", ["onnx", "plugin"], 1, 1, str(tmp_path), np.random.default_rng(0))
    assert [r["form"] for r in res["rows"]] == ["onnx", "plugin"] and res["fastest"] in ("onnx", "plugin")
    assert res["rows"][1]["max_abs_diff_vs_onnx"] < 1e-3 and all(r["fps"] > 0 for r in res["rows"])
