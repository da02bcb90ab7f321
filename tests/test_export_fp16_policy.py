"""The fp16 policy of export/fp16.py is read from marks on the model (``fp16_compute = True`` on the
trunk classes), not from attribute names. These tests pin that the marks select the same nodes as the
policy they replaced, and that the marks follow the module, not its name."""
from __future__ import annotations

import re

import onnx
import pytest
import torch

import mdqe
from export.fp16 import FP16_MARK, Fp16Policy, convert_graph_fp16, mdqe_policy
from export.to_onnx import export_model
from mdqe.model.backbone import ResNet
from mdqe.model.decoder import DecoderLayer
from mdqe.model.encoder import EncoderLayer, InputProjection
from mdqe.model.mask_head import MaskHead

# The policy before the marks (the regex over TorchScript node-name scopes it replaced): fp16 inside
# the backbone, the input projection, each encoder layer, the mask head and each decoder layer, with
# or without the wrapper's "model/" scope. Written down as the specification the marks must meet.
PREVIOUS_SCOPES = re.compile(r"^/(?:model/)?(?:backbone|input_proj|encoder/layers\.\d+|mask_head|decoder/layers\.\d+)/")
TRUNKS = (ResNet, InputProjection, EncoderLayer, MaskHead, DecoderLayer)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return mdqe.build_model(mdqe.get_config("tiny")).eval()


@pytest.fixture(scope="module")
def tiny_graphs(tmp_path_factory):
    out = tmp_path_factory.mktemp("fp16_policy") / "tiny"
    export_model(config="tiny", weights="random", output=str(out), msda="plugin", verify=False, quiet=True)
    return {name: onnx.load(str(out / f"{name}.onnx")) for name in ("encoder", "decoder")}


def test_marks_are_on_the_trunk_classes(tiny):
    marked = {type(m) for _, m in tiny.named_modules() if getattr(m, FP16_MARK, False)}
    assert marked == set(TRUNKS)
    policy = Fp16Policy.from_module(tiny)
    cfg = tiny.cfg
    assert policy.half_modules == ({"backbone", "input_proj", "mask_head"}
                                   | {f"encoder.layers.{i}" for i in range(cfg.enc_layers)}
                                   | {f"decoder.layers.{i}" for i in range(cfg.dec_layers)})


@pytest.mark.parametrize("graph", ["encoder", "decoder"])
def test_marks_select_the_nodes_the_previous_policy_selected(graph, tiny, tiny_graphs):
    names = [n.name for n in tiny_graphs[graph].graph.node]
    before = {n for n in names if PREVIOUS_SCOPES.match(n)}
    assert len(before) > 100                      # the trunks are most of each graph
    assert before != set(names)                   # and the heads / query initialisation are not
    for policy in (Fp16Policy.from_module(tiny), mdqe_policy()):
        assert {n for n in names if policy.covers(n)} == before
    # the prediction heads stay fp32 whatever their ops
    heads = ("/cls_embed/", "/mask_embed/", "/track_embed/", "/rpn_cls_embed/", "/decoder/bbox_embed/")
    assert not [n for n in names if n.startswith(heads) and Fp16Policy.from_module(tiny).covers(n)]


def test_default_policy_converts_as_the_model_policy(tiny, tiny_graphs):
    model = tiny_graphs["encoder"]
    before = model.SerializeToString()
    a = convert_graph_fp16(model)
    assert model.SerializeToString() == before    # the input graph is left untouched
    b = convert_graph_fp16(model, Fp16Policy.from_module(tiny))
    assert a.SerializeToString() == b.SerializeToString()


def test_a_mark_follows_the_module_not_its_name(tiny):
    """Marking one head instance puts its nodes under fp16; renaming a trunk keeps its mark."""
    policy = Fp16Policy.from_module(tiny)
    assert not policy.covers("/cls_embed/layers.0/MatMul")
    tiny.cls_embed.fp16_compute = True
    try:
        assert Fp16Policy.from_module(tiny).covers("/cls_embed/layers.0/MatMul")
    finally:
        del tiny.cls_embed.fp16_compute

    class Wrapper(torch.nn.Module):
        def __init__(self, trunk):
            super().__init__()
            self.renamed_trunk = trunk

    wrapped = Fp16Policy.from_module(Wrapper(tiny.mask_head))
    assert wrapped.covers("/renamed_trunk/lay1/Conv") and not wrapped.covers("/mask_head/lay1/Conv")
    assert not policy.covers("Conv_3") and not policy.covers("/Conv_3")   # no scope: fp32
