"""Whole-model ONNX export tests on the `tiny` config; the r50 ones are in
tests/test_export_r50.py. One export per form, shared through module-scoped fixtures."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from export import to_onnx
from runtime.native.ort_ops import create_session
from export.to_onnx import ExportError, build_model_with_weights, check_state_fits, export_model
from export.wrappers import DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_OUTPUTS, DecoderGraph, EncoderGraph, run_torch
from runtime.atomic import file_sha256

REPO = Path(__file__).resolve().parents[1]
H, W = 128, 160          # export resolution
H2, W2 = 192, 256        # another resolution the same graphs must run at
ATOL = 1e-4
# the reference at the export size uses padded frames (valid 112x136 of 128x160: padding masks on
# every level); the other size is unpadded
VALID = {(H, W): (112, 136), (H2, W2): (H2, W2)}


def expected_msda_nodes(cfg):
    """From the config: encoder = one deformable self-attention per encoder layer; decoder = per
    layer one frame-level cross-attention + one TCA call per feature level."""
    return cfg.enc_layers, cfg.dec_layers * (1 + cfg.num_feature_levels)


def torch_reference(model, height, width, seed=3, valid=None):
    """PyTorch outputs of both graphs at height x width plus the per-output bound: ATOL, or, where
    PyTorch fp32 itself is more than ATOL/2 off an fp64 run of the same model (a GroupNorm over a
    near-constant channel of the randomly initialised mask head amplifies fp32 rounding), twice
    that error: an fp32 export cannot match an fp32 reference closer than the reference matches
    the exact result."""
    g = torch.Generator().manual_seed(seed)
    T = model.cfg.num_frames
    images = torch.randn(T, 3, height, width, generator=g)
    vh, vw = valid or (height, width)
    images[:, :, vh:] = 0
    images[:, :, :, vw:] = 0
    valid_hw = torch.tensor([[vh, vw]] * T, dtype=torch.int64)
    ref_e = run_torch(EncoderGraph(model).eval(), (images, valid_hw), ENCODER_OUTPUTS)
    dec_in = {**ref_e, "valid_hw": valid_hw}
    ref_d = run_torch(DecoderGraph(model).eval(), tuple(dec_in[k] for k in DECODER_INPUTS), DECODER_OUTPUTS)
    ee, ed = to_onnx.reference_rounding_error(model, images, valid_hw, dec_in, ref_d)
    bounds = {f"encoder.{k}": max(ATOL, 2 * v) for k, v in ee.items()}
    bounds.update({f"decoder.{k}": max(ATOL, 2 * v) for k, v in ed.items()})
    return (images, valid_hw), ref_e, ref_d, bounds


def enc_feeds(images):
    """{"images", "valid_hw"} numpy feeds from torch_reference's (images, valid_hw)."""
    return {"images": images[0].numpy(), "valid_hw": images[1].numpy()}


def dec_feeds(images, ref_e):
    return {k: (images[1] if k == "valid_hw" else ref_e[k]).numpy() for k in DECODER_INPUTS}


def ort_errors(model_dir: Path, images, ref_e, ref_d):
    se = create_session(model_dir / "encoder.onnx")
    sd = create_session(model_dir / "decoder.onnx")
    got_e = dict(zip(ENCODER_OUTPUTS, se.run(list(ENCODER_OUTPUTS), enc_feeds(images))))
    got_d = dict(zip(DECODER_OUTPUTS, sd.run(list(DECODER_OUTPUTS), dec_feeds(images, ref_e))))
    errs = {}
    for name, got, ref in (("encoder", got_e, ref_e), ("decoder", got_d, ref_d)):
        for k in ref:
            assert got[k].shape == tuple(ref[k].shape), (name, k)
            assert got[k].dtype == ref[k].numpy().dtype, (name, k)
            errs[f"{name}.{k}"] = float(np.abs(got[k].astype(np.float64) - ref[k].numpy()).max())
    return errs


@pytest.fixture(scope="module")
def tiny_model():
    model, cfg, info = build_model_with_weights("tiny", "random", seed=0)
    return model, info


@pytest.fixture(scope="module")
def references(tiny_model):
    return {size: torch_reference(tiny_model[0], *size, valid=VALID[size]) for size in ((H, W), (H2, W2))}


@pytest.fixture(scope="module")
def tiny_plugin(tmp_path_factory):
    """Through the CLI, verification on (the default)."""
    out = tmp_path_factory.mktemp("exp") / "tiny_plugin"
    rc = to_onnx.main(["--config", "tiny", "--weights", "random", "--output", str(out), "--height", str(H),
                       "--width", str(W), "--seed", "0", "--msda", "plugin"])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "tiny_onnx"
    export_model("tiny", "random", str(out), msda="onnx", height=H, width=W, seed=0, verify=False, quiet=True)
    return out


@pytest.fixture(scope="module")
def tiny_gridsample(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "tiny_gridsample"
    export_model("tiny", "random", str(out), msda="gridsample", height=H, width=W, seed=0, verify=False, quiet=True)
    return out


@pytest.fixture(scope="module")
def tiny_builtin(tmp_path_factory):
    """NVIDIA's MultiscaleDeformableAttnPlugin_TRT nodes, through the CLI with verification on."""
    out = tmp_path_factory.mktemp("exp") / "tiny_builtin"
    rc = to_onnx.main(["--config", "tiny", "--weights", "random", "--output", str(out), "--height", str(H),
                       "--width", str(W), "--seed", "0", "--msda", "trt-builtin", "--no-progress"])
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def form_dirs(tiny_plugin, tiny_onnx, tiny_gridsample, tiny_builtin):
    return {"plugin": tiny_plugin, "onnx": tiny_onnx, "gridsample": tiny_gridsample, "trt-builtin": tiny_builtin}


@pytest.fixture(scope="module")
def tiny_fp16(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp") / "tiny_fp16"
    export_model("tiny", "random", str(out), msda="plugin", dtype="fp16", height=H, width=W, seed=0,
                 verify=False, quiet=True)
    return out


def test_export_json(tiny_plugin, tiny_model):
    model, info = tiny_model
    meta = json.loads((tiny_plugin / "export.json").read_text())
    cfg = model.cfg
    assert sorted(os.listdir(tiny_plugin)) == ["decoder.onnx", "encoder.onnx", "export.json"]
    assert meta["format_version"] == 2 and meta["model_name"] == "tiny"
    assert meta["num_frames"] == cfg.num_frames == 4 and meta["num_queries"] == 64
    assert meta["class_names"] == list(cfg.class_names) and meta["num_classes"] == 5
    assert meta["msda"] == "plugin" and meta["dtype"] == "fp32" and meta["opset"] == 17
    assert meta["plugin"] == {**meta["plugin"], "name": "MDQEMSDeformAttn", "version": "1", "namespace": "mdqe"}
    assert meta["weights"]["source"] == "random" and meta["weights"]["sha256"] == info["sha256"]
    assert meta["preprocess"]["mean"] == list(cfg.pixel_mean) and meta["preprocess"]["shorter_side"] == 192
    assert meta["export_size"] == [H, W] and meta["dynamic_size"] is True
    assert list(meta["encoder"]["outputs"]) == list(ENCODER_OUTPUTS)
    assert list(meta["decoder"]["inputs"]) == list(DECODER_INPUTS)
    assert list(meta["decoder"]["outputs"]) == list(DECODER_OUTPUTS)
    assert meta["encoder"]["outputs"]["memory"] == ["N", "S", 64]
    assert meta["decoder"]["outputs"]["pred_masks"] == [64, 4, "h", "w"]
    ver = meta["verification"]
    assert set(ver["encoder"]) == set(ENCODER_OUTPUTS) and set(ver["decoder"]) == set(DECODER_OUTPUTS)
    assert max(ver["decoder"].values()) <= ATOL
    # the runtime's reader accepts it
    from runtime.model_dir import load_model_dir
    spec = load_model_dir(str(tiny_plugin))
    assert spec.num_frames == 4 and spec.msda == "plugin"


def test_graph_io_names_and_dynamic_axes(tiny_plugin):
    enc = onnx.load(str(tiny_plugin / "encoder.onnx"))
    dec = onnx.load(str(tiny_plugin / "decoder.onnx"))
    assert [i.name for i in enc.graph.input] == ["images", "valid_hw"]
    assert [o.name for o in enc.graph.output] == list(ENCODER_OUTPUTS)
    assert [i.name for i in dec.graph.input] == list(DECODER_INPUTS)
    assert [o.name for o in dec.graph.output] == list(DECODER_OUTPUTS)

    def dims(vi):
        return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
    assert dims(enc.graph.input[0]) == ["N", 3, "H", "W"]
    dmem = dims(dec.graph.input[0])
    assert dmem[0] == 4 and dmem[1] == "S" and dmem[2] == 64        # T fixed, S dynamic
    assert dims(dec.graph.input[3])[2:] == ["h", "w"]


def test_plugin_form_node_census(tiny_plugin, tiny_model):
    cfg = tiny_model[0].cfg
    n_enc, n_dec = expected_msda_nodes(cfg)
    for name, expected in (("encoder", n_enc), ("decoder", n_dec)):
        m = onnx.load(str(tiny_plugin / f"{name}.onnx"))
        plugin = [n for n in m.graph.node if n.op_type == "MDQEMSDeformAttn"]
        assert len(plugin) == expected, name
        assert all(n.domain == "mdqe" for n in plugin)
        M = cfg.num_heads
        assert all({a.name: a.s or a.i for a in n.attribute} == {"plugin_version": b"1", "plugin_namespace": b"mdqe",
                                                               "num_heads": M, "head_dim": cfg.hidden_dim // M}
                   for n in plugin)
        from export.fp16 import _float_types
        types = _float_types(m)
        assert all(types[n.input[1]] == types[n.input[2]] == onnx.TensorProto.INT32 for n in plugin)
        # plugin form: no GridSample at all (MSDA calls are plugin nodes; the query initialisation
        # samples features with Gather ops)
        assert not [n for n in m.graph.node if n.op_type == "GridSample"], name
        assert {o.domain for o in m.opset_import} == {"", "mdqe"}


@pytest.mark.parametrize("form", ["onnx", "gridsample"])
def test_pure_onnx_forms_have_no_custom_nodes(form, tiny_onnx, tiny_gridsample, tiny_model):
    cfg = tiny_model[0].cfg
    n_enc, n_dec = expected_msda_nodes(cfg)
    model_dir = tiny_onnx if form == "onnx" else tiny_gridsample
    assert json.loads((model_dir / "export.json").read_text())["msda"] == form
    for name, calls in (("encoder", n_enc), ("decoder", n_dec)):
        m = onnx.load(str(model_dir / f"{name}.onnx"))
        assert all(n.domain in ("", "ai.onnx") for n in m.graph.node), name
        assert {o.domain for o in m.opset_import} == {""}
        grid = [n for n in m.graph.node if n.op_type == "GridSample"]
        if form == "onnx":          # the Gather form: no GridSample anywhere (TensorRT 10.14+ miscompiles it)
            assert not grid, name
            continue
        zeros = [n for n in grid if {a.name: a.s for a in n.attribute}["padding_mode"] == b"zeros"]
        # one GridSample per level per MSDA call
        levels = cfg.num_feature_levels
        expected = calls * levels if name == "encoder" else cfg.dec_layers * (levels + levels * cfg.num_frames)
        assert len(zeros) == expected, name


def test_trt_builtin_form_node_census(tiny_builtin, tiny_model):
    from runtime.contract import TRT_BUILTIN_PLUGIN
    from runtime.model_dir import load_model_dir

    meta = json.loads((tiny_builtin / "export.json").read_text())
    assert meta["msda"] == "trt-builtin"
    assert meta["plugin"] == {"name": "MultiscaleDeformableAttnPlugin_TRT", "version": "2", "namespace": "",
                              "onnx_domain": "trt.plugins", "library": "libnvinfer_plugin.so",
                              "needs_plugin_library": False}
    assert load_model_dir(str(tiny_builtin)).msda == "trt-builtin"
    n_enc, n_dec = expected_msda_nodes(tiny_model[0].cfg)
    for name, expected in (("encoder", n_enc), ("decoder", n_dec)):
        m = onnx.shape_inference.infer_shapes(onnx.load(str(tiny_builtin / f"{name}.onnx")))
        nodes = [n for n in m.graph.node if n.op_type == TRT_BUILTIN_PLUGIN.op_type]
        assert len(nodes) == expected == meta[name]["msda_nodes"]
        assert all(n.domain == "trt.plugins" for n in nodes)
        assert not [n for n in m.graph.node if n.op_type == "GridSample"]
        assert all({a.name: a.s for a in n.attribute} == {"plugin_version": b"2", "plugin_namespace": b""}
                   for n in nodes)
        vis = {v.name: v.type.tensor_type for v in m.graph.value_info}
        assert all(vis[n.input[1]].elem_type == vis[n.input[2]].elem_type == onnx.TensorProto.INT32 for n in nodes)
        assert all(len(vis[n.output[0]].shape.dim) == 4 for n in nodes)        # [N, Lq, M, D]


@pytest.mark.parametrize("form", ["plugin", "onnx", "gridsample", "trt-builtin"])
@pytest.mark.parametrize("size", [(H, W), (H2, W2)], ids=["export_size", "other_size"])
def test_parity_with_pytorch(form, size, form_dirs, references):
    model_dir = form_dirs[form]
    images, ref_e, ref_d, bounds = references[size]
    errs = ort_errors(model_dir, images, ref_e, ref_d)
    bad = {k: (e, bounds[k]) for k, e in errs.items() if not e <= bounds[k]}
    assert not bad, bad
    # everything except the ill-conditioned mask features meets 1e-4 outright
    assert all(e <= ATOL for k, e in errs.items() if k != "encoder.mask_features"), errs


def test_fp16_export(tiny_fp16, tiny_model, references):
    from export.fp16 import FLOAT, FLOAT16, _float_types
    from export.verify import FP16_ATOL, FP16_RTOL, SELECTION_OUTPUTS, compare_selection_fp16

    meta = json.loads((tiny_fp16 / "export.json").read_text())
    assert meta["dtype"] == "fp16"
    for name in ("encoder", "decoder"):
        m = onnx.load(str(tiny_fp16 / f"{name}.onnx"))
        types = _float_types(m)
        plugin = [n for n in m.graph.node if n.op_type == "MDQEMSDeformAttn"]
        assert plugin and all(types[n.input[0]] == FLOAT16 and types[n.output[0]] == FLOAT16 for n in plugin)
        for n in m.graph.node:
            if n.op_type in ("LayerNormalization", "InstanceNormalization", "Softmax"):
                assert types[n.output[0]] == FLOAT, (name, n.name)
        convs = [n for n in m.graph.node if n.op_type in ("Conv", "MatMul") and types.get(n.output[0]) == FLOAT16]
        assert len(convs) > 10
        assert all(o.type.tensor_type.elem_type in (FLOAT, onnx.TensorProto.INT64) for o in m.graph.output)
    images, ref_e, ref_d, _ = references[(H, W)]
    got_e = create_session(tiny_fp16 / "encoder.onnx").run(None, enc_feeds(images))
    got_d = create_session(tiny_fp16 / "decoder.onnx").run(None, dec_feeds(images, ref_e))
    for names, got, ref in ((ENCODER_OUTPUTS, got_e, ref_e), (DECODER_OUTPUTS, got_d, ref_d)):
        for k, gv in zip(names, got):
            r = ref[k].numpy()
            assert gv.dtype == r.dtype
            if k in SELECTION_OUTPUTS:   # argmax near-ties may flip in fp16: counted and bounded below
                continue
            err = float(np.abs(gv.astype(np.float64) - r).max())
            assert err <= FP16_ATOL + FP16_RTOL * float(np.abs(r).max()), (k, err)
    sel = compare_selection_fp16(dict(zip(ENCODER_OUTPUTS, got_e)), {k: v.numpy() for k, v in ref_e.items()},
                                 FP16_ATOL, FP16_RTOL)
    assert all(r["ok"] for r in sel.values()), sel


def test_cli_errors(tmp_path, capsys):
    def run(*extra, out=None):
        return to_onnx.main(["--config", "tiny", "--weights", "random", "--output", str(out or tmp_path / "o"),
                             "--no-verify", "--no-progress", *extra])
    assert run("--height", "130", "--width", "160") == 2
    assert "multiple of 32" in capsys.readouterr().err
    assert run("--height", "128") == 2
    assert "go together" in capsys.readouterr().err
    assert run("--height", "32", "--width", "32") == 2
    assert "query grid" in capsys.readouterr().err
    assert run("--opset", "13") == 2
    assert "opset" in capsys.readouterr().err
    assert to_onnx.main(["--config", "nope", "--weights", "random", "--output", str(tmp_path / "x")]) == 2
    assert "unknown config" in capsys.readouterr().err
    assert to_onnx.main(["--config", "tiny", "--weights", str(tmp_path / "missing.pth"),
                         "--output", str(tmp_path / "x")]) == 2
    assert "no such file" in capsys.readouterr().err
    # unwritable / unusable output locations
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert run(out=blocker / "sub") == 2
    assert "--output" in capsys.readouterr().err
    assert run(out=blocker) == 2
    assert "not a directory" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert run(out=foreign) == 2
    assert "refusing" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"
    if os.geteuid() != 0:   # root ignores permission bits
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        assert run(out=ro / "out") == 2
        assert "not writable" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        to_onnx.parse_args(["--config", "tiny", "--weights", "random", "--output", "o", "--msda", "trt"])
    assert not (tmp_path / "o").exists()   # nothing written on failure


def test_checkpoint_mismatch_lists_keys(tiny_model):
    model = tiny_model[0]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state.pop("cls_embed.layers.2.bias")
    state["extra.weight"] = torch.zeros(3)
    k = "decoder.bbox_embed.layers.0.weight"
    state[k] = torch.zeros(7, 7)
    with pytest.raises(ExportError) as e:
        check_state_fits(model, state, "ckpt.pth")
    msg = str(e.value)
    assert "missing keys" in msg and "cls_embed.layers.2.bias" in msg
    assert "unexpected keys" in msg and "extra.weight" in msg
    assert k in msg and "(7, 7)" in msg


def test_checkpoint_loading(tmp_path, capsys, tiny_model):
    from mdqe.checkpoint import save_checkpoint

    model = tiny_model[0]
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(model, str(path), model.cfg)
    loaded, cfg, info = build_model_with_weights("tiny", str(path), seed=123)
    assert cfg == model.cfg and info["sha256"] == file_sha256(str(path))
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    assert build_model_with_weights("checkpoint", str(path), seed=0)[1] == model.cfg
    # a checkpoint of another config
    rc = to_onnx.main(["--config", "r50_ytvis21", "--weights", str(path), "--output", str(tmp_path / "o"), "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "'tiny'" in err and "num_classes" in err and "--config checkpoint" in err
    # a state dict without a stored config that does not fit: missing / unexpected keys listed
    bad = {k: v for k, v in model.state_dict().items() if not k.startswith("cls_embed.")}
    bad["head.extra"] = torch.zeros(2)
    torch.save(bad, tmp_path / "bad.pth")
    rc = to_onnx.main(["--config", "tiny", "--weights", str(tmp_path / "bad.pth"), "--output", str(tmp_path / "o"),
                       "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "missing keys" in err and "cls_embed.layers.0.weight" in err and "head.extra" in err
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert to_onnx.main(["--config", "tiny", "--weights", str(tmp_path / "junk.pth"), "--output",
                         str(tmp_path / "o"), "--no-progress"]) == 2
    assert "cannot load checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_publish_is_atomic_per_directory(tmp_path):
    from export.to_onnx import OUTPUT_FILES, publish

    def staged(tag):
        d = tmp_path / f".stage-{tag}"
        d.mkdir()
        for n in OUTPUT_FILES:
            (d / n).write_text(f"{tag}:{n}")
        return d
    out = tmp_path / "model"
    publish(str(staged("a")), str(out))          # new directory: renamed into place in one step
    assert sorted(os.listdir(out)) == sorted(OUTPUT_FILES)
    (out / "engines").mkdir()                   # files of other tools in an export directory are kept
    publish(str(staged("b")), str(out))          # existing export: each file replaced (os.replace)
    assert all((out / n).read_text() == f"b:{n}" for n in OUTPUT_FILES)
    assert (out / "engines").is_dir()
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".stage")]


def test_build_engines_print_only(tiny_plugin, tiny_fp16):
    from runtime.contract import level_sizes

    def run(model_dir, *extra):
        p = subprocess.run([sys.executable, "export/build_engines.py", "--model", str(model_dir), "--print-only",
                            "--plugin-lib", "/opt/mdqe/libmdqe_trt_plugin.so", *extra],
                           cwd=REPO, capture_output=True, text=True)
        return p.returncode, p.stdout, p.stderr
    rc, out, err = run(tiny_plugin, "--profile-opt-size", "128x160", "--profile-max-size", "384x384")
    assert rc == 0, err
    lines = [ln for ln in out.splitlines() if ln.startswith("trtexec")]
    assert len(lines) == 4                                       # 2 graphs x TensorRT 10 / 11
    t10_enc, t10_dec, t11_enc, t11_dec = lines
    for ln in lines:
        assert "--dynamicPlugins=/opt/mdqe/libmdqe_trt_plugin.so" in ln
    assert t10_enc.endswith("--fp16") and t10_dec.endswith("--fp16")
    assert "--fp16" not in t11_enc and "--fp16" not in t11_dec
    assert "--minShapes=images:1x3x64x64" in t10_enc and "--optShapes=images:4x3x128x160" in t10_enc
    assert "--maxShapes=images:4x3x384x384" in t10_enc
    # the valid-size input follows the frame batch N (int64 [N, 2])
    assert "--minShapes=images:1x3x64x64,valid_hw:1x2 " in t10_enc + " " and "valid_hw:4x2" in t10_enc
    S_opt = sum(h * w for h, w in level_sizes(128, 160, 4))
    S_max = sum(h * w for h, w in level_sizes(384, 384, 4))
    assert S_opt == 426                                           # the exported memory length at 128x160
    assert f"memory:4x{S_opt}x64" in t10_dec and f"memory:4x{S_max}x64" in t10_dec
    assert "mask_features:4x16x96x96" in t10_dec and "spatial_shapes" not in t10_dec  # static: no range
    assert "polygraphy run" in out and "--load-inputs" in out
    # fp16-typed export: strongly typed on TensorRT 10, never --fp16
    rc, out, err = run(tiny_fp16, "--trt-version", "10")
    assert rc == 0, err
    lines = [ln for ln in out.splitlines() if ln.startswith("trtexec")]
    assert len(lines) == 2 and all("--stronglyTyped" in ln and "--fp16" not in ln for ln in lines)
    # bad profile, missing directory
    rc, _, err = run(tiny_plugin, "--profile-min-size", "100x160")
    assert rc == 2 and "multiples of 32" in err
    rc, _, err = run(REPO / "nonexistent")
    assert rc == 2 and "model directory not found" in err   # runtime.model_dir, the one validation


def test_build_engines_without_tensorrt(tiny_plugin):
    pytest.importorskip  # noqa: B018
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here")
    except ImportError:
        pass
    p = subprocess.run([sys.executable, "export/build_engines.py", "--model", str(tiny_plugin),
                        "--plugin-lib", "x.so"], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 2
    assert "TensorRT" in p.stderr and "--print-only" in p.stderr


@pytest.mark.parametrize("form", ["plugin", "onnx", "gridsample", "trt-builtin"])
def test_polygraphy_reference_files(form, form_dirs, tmp_path):
    from polygraphy.comparator import RunResults
    from polygraphy.json import load_json

    from export.polygraphy_ref import write_reference
    files = write_reference(str(form_dirs[form]), out_dir=str(tmp_path))
    dec_inputs = load_json(files["decoder"][0])[0]
    assert dec_inputs["spatial_shapes"].tolist() == [[16, 20], [8, 10], [4, 5], [2, 3]]
    res = RunResults.load(files["decoder"][1])
    assert set(res[0][1][0].keys()) == set(DECODER_OUTPUTS)
    # every graph input has a reference value (the Gather-form decoder keeps its unread inputs)
    assert set(dec_inputs) == {i.name for i in onnx.load(str(form_dirs[form] / "decoder.onnx")).graph.input}


def test_build_engines_lines_for_trt_builtin(tiny_builtin):
    """NVIDIA's plugin lives in libnvinfer_plugin: no --dynamicPlugins / --plugins for this form."""
    p = subprocess.run([sys.executable, "export/build_engines.py", "--model", str(tiny_builtin), "--print-only"],
                       cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    trtexec = [ln for ln in p.stdout.splitlines() if ln.startswith("trtexec")]
    poly = [ln for ln in p.stdout.splitlines() if ln.startswith("polygraphy run")]
    assert len(trtexec) == 4 and len(poly) == 2
    assert not any("Plugins" in ln for ln in trtexec) and not any("--plugins" in ln for ln in poly)
    assert "MultiscaleDeformableAttnPlugin_TRT version 2" in p.stdout
