"""Op-level export tests: MSDeformAttn's ONNX forms (all four: tests/test_export_forms.py) on a small module, the numpy
reference kernel, the ONNX Runtime custom-op bridge, and the fp16 typing pass. No MDQE model."""
from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

from mdqe.ops import MSDACaller, ms_deform_attn, ms_deform_attn_torch, use_msda_impl
from mdqe.ops.msda.forms import ms_deform_attn_gridsample_form
from runtime.native.msda_numpy import ms_deform_attn_numpy
from runtime.native.ort_ops import ORT_DOMAIN, count_plugin_nodes, create_session, prepare_for_ort

REPO = Path(__file__).resolve().parents[1]


def _random_call(seed=0, N=2, M=4, D=8, shapes=((8, 10), (4, 5), (2, 3)), Lq=7, P=3):
    g = torch.Generator().manual_seed(seed)
    ss = torch.tensor(shapes, dtype=torch.int64)
    lsi = torch.cat([ss.new_zeros(1), (ss[:, 0] * ss[:, 1]).cumsum(0)[:-1]])
    S = int((ss[:, 0] * ss[:, 1]).sum())
    value = torch.randn(N, S, M, D, generator=g)
    loc = torch.rand(N, Lq, M, len(shapes), P, 2, generator=g) * 1.4 - 0.2   # some samples outside [0, 1]
    aw = torch.rand(N, Lq, M, len(shapes), P, generator=g)
    return value, ss, lsi, loc, aw


def test_numpy_reference_and_onnx_form_match_torch():
    args = _random_call()
    ref = ms_deform_attn_torch(*args)
    got = ms_deform_attn_numpy(*[a.numpy() for a in args])
    assert got.shape == tuple(ref.shape)
    assert np.abs(got - ref.numpy()).max() < 1e-5
    assert (ms_deform_attn_gridsample_form(*args) - ref).abs().max().item() < 1e-6


def test_export_form_selection_is_explicit_and_restored():
    """use_msda_impl sets the form on the model's MSDeformAttn callers and restores it; nesting works;
    nothing else (another model, a call passing its own impl=) is affected."""
    m, other = _MiniEncoder(), _MiniEncoder()
    assert m.msda_impl == "torch"
    with use_msda_impl(m, "plugin"):
        assert m.msda_impl == "plugin"
        with use_msda_impl(m, "onnx"):
            assert m.msda_impl == "onnx"
        assert m.msda_impl == "plugin"
        assert other.msda_impl == "torch"
    assert m.msda_impl == "torch"
    with pytest.raises(ValueError, match="plugin"):
        with use_msda_impl(m, "tensorrt"):
            pass
    # an explicit impl= wins inside the block: the torch form is traced, not the plugin node
    op = _ExplicitTorch()
    with use_msda_impl(op, "plugin"), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = torch.jit.trace(op, _random_call()).graph
    kinds = {n.kind() for n in graph.nodes()}
    assert "aten::grid_sampler" in kinds and not any("MSDA" in k for k in kinds), kinds


class _ExplicitTorch(MSDACaller, nn.Module):
    """Calls the op with its own impl="torch" whatever msda_impl says."""

    def forward(self, value, spatial_shapes, level_start_index, loc, attn):
        return ms_deform_attn(value, spatial_shapes, level_start_index, loc, attn, impl="torch")


class _MiniEncoder(MSDACaller, nn.Module):
    """Three levels from strided convs, level sizes/offsets computed from shapes, one MSDA call (the
    implementation set on the module: the torch form eagerly, the export form inside use_msda_impl)."""

    msda_impl = "torch"

    def __init__(self, C=32, M=4, L=3, P=2):
        super().__init__()
        self.M, self.L, self.P = M, L, P
        self.stem = nn.Conv2d(3, C, 3, 8, 1)
        self.downs = nn.ModuleList(nn.Conv2d(C, C, 3, 2, 1) for _ in range(L - 1))
        self.off = nn.Linear(C, M * L * P * 2)
        self.aw = nn.Linear(C, M * L * P)
        self.vp = nn.Linear(C, C)

    def forward(self, x):
        feats = [self.stem(x)]
        for d in self.downs:
            feats.append(d(feats[-1]))
        if torch.jit.is_tracing():
            ss = torch.stack([torch._shape_as_tensor(f)[-2:] for f in feats]).to(torch.int64)
        else:
            ss = torch.tensor([f.shape[-2:] for f in feats], dtype=torch.int64)
        lsi = torch.cat([ss.new_zeros(1), (ss[:, 0] * ss[:, 1]).cumsum(0)[:-1]])
        src = torch.cat([f.flatten(2).transpose(1, 2) for f in feats], 1)
        N, S, C = src.shape
        v = self.vp(src).view(N, S, self.M, C // self.M)
        loc = torch.sigmoid(src[..., :2])[:, :, None, None, None, :] + self.off(src).view(N, S, self.M, self.L, self.P, 2) / 8
        aw = self.aw(src).view(N, S, self.M, self.L * self.P).softmax(-1).view(N, S, self.M, self.L, self.P)
        return ms_deform_attn(v, ss, lsi, loc, aw, impl=self.msda_impl), ss


def _export(module, x, path, mode):
    with use_msda_impl(module, mode), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (x,), str(path), dynamo=False, opset_version=17, input_names=["images"],
                          output_names=["out", "ss"], dynamic_axes={"images": {0: "N", 2: "H", 3: "W"}},
                          custom_opsets={"mdqe": 1} if mode == "plugin" else None)
    return onnx.load(str(path))


@pytest.mark.parametrize("mode", ["plugin", "onnx", "gridsample"])
def test_mini_module_forms_dynamic(tmp_path, mode):
    torch.manual_seed(0)
    m = _MiniEncoder().eval()
    model = _export(m, torch.randn(2, 3, 128, 160), tmp_path / "m.onnx", mode)
    onnx.checker.check_model(model)
    ops = [(n.domain, n.op_type) for n in model.graph.node]
    if mode == "plugin":
        plugin = [n for n in model.graph.node if n.op_type == "MDQEMSDeformAttn"]
        assert len(plugin) == 1 and ("", "GridSample") not in ops
        node = plugin[0]
        assert node.domain == "mdqe" and len(node.input) == 5 and len(node.output) == 1
        assert {a.name: a.s or a.i for a in node.attribute} == {
            "plugin_version": b"1", "plugin_namespace": b"mdqe", "num_heads": 4, "head_dim": 8}
        # spatial_shapes / level_start_index reach the node as INT32 (what the TensorRT plugin takes)
        casts = {n.output[0]: n for n in model.graph.node if n.op_type == "Cast"}
        for i in (1, 2):
            assert {a.name: a.i for a in casts[node.input[i]].attribute}["to"] == onnx.TensorProto.INT32
        # output type/shape info: float, [N, Lq, M*D] with M*D static
        vi = {v.name: v for v in list(model.graph.value_info) + list(model.graph.output)}[node.output[0]]
        assert vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert vi.type.tensor_type.shape.dim[2].dim_value == 32
    else:
        assert all(d in ("", "ai.onnx") for d, _ in ops)
        assert ops.count(("", "GridSample")) == (3 if mode == "gridsample" else 0)   # "onnx": the Gather form
    sess = create_session(model)
    for shape in [(2, 3, 128, 160), (1, 3, 192, 256), (3, 3, 96, 320)]:   # other N, H, W than exported
        x = torch.randn(shape)
        with torch.no_grad():
            ref, ss = m(x)
        out, ss_o = sess.run(None, {"images": x.numpy()})
        assert np.array_equal(ss_o, ss.numpy())
        assert np.abs(out - ref.numpy()).max() < 1e-5, shape


def test_prepare_for_ort_keeps_original(tmp_path):
    torch.manual_seed(0)
    model = _export(_MiniEncoder().eval(), torch.randn(1, 3, 64, 64), tmp_path / "m.onnx", "plugin")
    before = model.SerializeToString()
    prepared = prepare_for_ort(model)
    assert model.SerializeToString() == before                 # the TensorRT-facing graph is untouched
    assert count_plugin_nodes(model) == 1 and count_plugin_nodes(prepared) == 0
    assert [n.domain for n in prepared.graph.node if n.op_type == "MDQEMSDeformAttn"] == [ORT_DOMAIN]


def test_fp16_pass_types_plugin_node_and_runs(tmp_path):
    from export.fp16 import FLOAT, FLOAT16, _float_types, convert_graph_fp16

    torch.manual_seed(0)
    m = _MiniEncoder().eval()
    model = _export(m, torch.randn(2, 3, 64, 96), tmp_path / "m.onnx", "plugin")
    # the mini module has no model scopes: rename nodes into the encoder scope so the policy applies
    for n in model.graph.node:
        n.name = "/encoder/layers.0/" + (n.name or n.op_type).lstrip("/")
    half = convert_graph_fp16(model)
    onnx.checker.check_model(half)
    types = _float_types(half)
    node = [n for n in half.graph.node if n.op_type == "MDQEMSDeformAttn"][0]
    assert [types[node.input[i]] for i in (0, 3, 4)] == [FLOAT16] * 3
    assert types[node.output[0]] == FLOAT16
    assert [types[i] for i in (node.input[1], node.input[2])] == [onnx.TensorProto.INT32] * 2
    softmax = [n for n in half.graph.node if n.op_type == "Softmax"][0]
    assert types[softmax.output[0]] == FLOAT                       # softmax kept in fp32
    assert half.graph.input[0].type.tensor_type.elem_type == FLOAT  # graph I/O stays fp32
    assert half.graph.output[0].type.tensor_type.elem_type == FLOAT
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ref, _ = m(x)
    out = create_session(half).run(["out"], {"images": x.numpy()})[0]
    assert out.dtype == np.float32
    err = np.abs(out - ref.numpy()).max()
    assert err < 1e-2 + 2e-2 * np.abs(ref.numpy()).max(), err
    assert err > 0  # really computed in fp16


def test_ort_ops_is_torch_free():
    code = ("import sys; import runtime.native.ort_ops, export.verify, export.polygraphy_ref, export.build_engines; "
            "bad = [m for m in ('torch', 'tensorrt') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


def test_numpy_fallback_kernel_in_ort(tmp_path):
    """Without the native library the Python op falls back to the numpy kernel, with a warning."""
    torch.manual_seed(0)
    m = _MiniEncoder().eval()
    _export(m, torch.randn(1, 3, 64, 96), tmp_path / "m.onnx", "plugin")
    x = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        ref, _ = m(x)
    np.save(tmp_path / "x.npy", x.numpy())
    np.save(tmp_path / "ref.npy", ref.numpy())
    code = (
        "import sys, warnings, numpy as np\n"
        "from runtime.native.ort_ops import create_session, kernel_name\n"
        f"d = {str(tmp_path)!r}\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    out = create_session(d + '/m.onnx').run(['out'], {'images': np.load(d + '/x.npy')})[0]\n"
        "assert kernel_name() == 'numpy', kernel_name()\n"
        "assert any('numpy reference kernel' in str(x.message) for x in w), [str(x.message) for x in w]\n"
        "err = np.abs(out - np.load(d + '/ref.npy')).max()\n"
        "assert err < 1e-5, err\n")
    env = dict(**__import__("os").environ, MDQE_ORT_MSDA_KERNEL="numpy")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, env=env)


@pytest.mark.slow
def test_plugin_node_with_dynamo_exporter():
    """The custom-node forms also serve torch.onnx's torch.export-based exporter (torch.onnx.ops.symbolic);
    export/to_onnx.py uses the TorchScript-based one."""
    torch.manual_seed(0)
    m = _MiniEncoder().eval()
    dims = ({0: torch.export.Dim("N", min=1, max=64), 2: torch.export.Dim.DYNAMIC, 3: torch.export.Dim.DYNAMIC},)
    with use_msda_impl(m, "plugin"), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prog = torch.onnx.export(m, (torch.randn(2, 3, 128, 160),), dynamo=True, input_names=["images"],
                                 output_names=["out", "ss"], dynamic_shapes=dims, opset_version=17, verbose=False)
    model = prog.model_proto
    plugin = [n for n in model.graph.node if n.op_type == "MDQEMSDeformAttn"]
    assert len(plugin) == 1 and plugin[0].domain == "mdqe"
    assert {a.name: a.s or a.i for a in plugin[0].attribute} == {
        "plugin_version": b"1", "plugin_namespace": b"mdqe", "num_heads": 4, "head_dim": 8}
    sess = create_session(model)
    x = torch.randn(1, 3, 192, 256)
    with torch.no_grad():
        ref, _ = m(x)
    assert np.abs(sess.run(["out"], {"images": x.numpy()})[0] - ref.numpy()).max() < 1e-5
