"""Mixed fp16 typing of an exported fp32 graph, for TensorRT 11 strongly typed networks
(where the tensor types in the ONNX graph are the precision) and TensorRT 10 with --fp16.

Policy (written here, no external converter):
- fp16 compute only inside the heavy trunks: the model modules marked ``fp16_compute = True``
  (``FP16_MARK``; in MDQE the classes of the backbone, the input projection, the encoder layers,
  the mask head and the decoder layers). ``Fp16Policy.from_module(model)`` reads the marks and
  maps them to the node-name scopes of the TorchScript exporter (``/<module path>/<op>``); only
  ops in `HALF_OPS` go to fp16 there (convolutions, matmuls, elementwise arithmetic, activations,
  GridSample and the MDQEMSDeformAttn plugin node, which takes fp16 value/locations/weights and
  returns fp16 while accumulating in fp32 inside the kernel).
- fp32 everywhere else: every normalization (LayerNormalization, InstanceNormalization used by
  GroupNorm), Softmax, reductions (incl. the ReduceSum that accumulates the onnx-form MSDA),
  Exp/Log/Pow/Sqrt, sine position encodings, comparisons/ArgMax (query selection stays exact),
  the score/box/embedding/mask-coefficient heads, the query initialisation and association, and
  all graph inputs/outputs (the graph I/O stays float32/int64: docs/INTERFACES.md section 5).
- data-movement ops (`FOLLOW_OPS`: Reshape, Transpose, Slice, Concat...) keep whatever type
  their input has, so no Casts appear around shape plumbing.
Casts are inserted where a tensor crosses precisions (one Cast per tensor and target type);
fp32 initializers read by fp16 nodes get an fp16 copy.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Dict, FrozenSet, Iterable, Optional, Tuple

import numpy as np

from runtime.contract import OUR_PLUGIN, TRT_BUILTIN_PLUGIN

FLOAT, FLOAT16 = 1, 10  # onnx.TensorProto.FLOAT / FLOAT16

FP16_MARK = "fp16_compute"   # attribute of the model modules whose ops may compute in fp16 (Fp16Policy)
HALF_OPS = {
    "Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum", "Add", "Sub", "Mul", "Div", "Relu", "Erf", "Tanh",
    "Sigmoid", "Neg", "Abs", "Max", "Min", "Clip", "MaxPool", "AveragePool", "GridSample", "Resize",
    OUR_PLUGIN.op_type, TRT_BUILTIN_PLUGIN.op_type,   # fp16 value/locations/weights in, fp16 out
}
MSDA_CUSTOM_OPS = {OUR_PLUGIN.op_type, TRT_BUILTIN_PLUGIN.op_type}
FOLLOW_OPS = {
    "Reshape", "Transpose", "Slice", "Concat", "Gather", "GatherElements", "Split", "Squeeze", "Unsqueeze",
    "Expand", "Flatten", "Identity", "Where", "Tile", "Pad",
}
TYPE_AGNOSTIC_OPS = {"Shape", "Size"}           # read only the shape: never cast their input
KEEP_INPUT_TYPES = {"Resize": {1, 2}}           # roi / scales keep their own type


def _float_types(model) -> Dict[str, int]:
    """name -> onnx elem_type of every typed tensor, after ONNX shape inference."""
    import onnx

    from runtime.native.ort_ops import elem_types
    return elem_types(onnx.shape_inference.infer_shapes(model, strict_mode=False))


def node_scope(node_name: str) -> Optional[Tuple[str, ...]]:
    """The module path of a node named by the TorchScript exporter: "/model/encoder/layers.0/self_attn/Add_1"
    -> ("model", "encoder", "layers.0", "self_attn"); None for a name without a scope."""
    if not node_name or not node_name.startswith("/"):
        return None
    return tuple(node_name.split("/")[1:-1])


class Fp16Policy:
    """Which graph nodes may compute in fp16: those inside a module marked ``fp16_compute = True``
    (a class attribute, or set on one instance), named by its dotted path in the exported module
    ("model.encoder.layers.0" for /model/encoder/layers.0/... nodes). Ops outside these modules, and
    ops not in HALF_OPS inside them, stay fp32."""

    def __init__(self, half_modules: Iterable[str]):
        self.half_modules: FrozenSet[str] = frozenset(half_modules)

    @classmethod
    def from_module(cls, module, prefix: str = "") -> "Fp16Policy":
        """The marked submodules of the torch `module` that is exported (e.g. export.wrappers.EncoderGraph,
        whose nodes are scoped /model/...); `prefix` is prepended to their paths."""
        return cls(prefix + name for name, m in module.named_modules() if name and getattr(m, FP16_MARK, False))

    def __or__(self, other: "Fp16Policy") -> "Fp16Policy":
        return Fp16Policy(self.half_modules | other.half_modules)

    def covers(self, node_name: str) -> bool:
        """True if the node lies inside a marked module (its scope or one of the scope's parents)."""
        scope = node_scope(node_name)
        if not scope:
            return False
        return any(".".join(scope[:k]) in self.half_modules for k in range(1, len(scope) + 1))


@lru_cache(maxsize=1)
def mdqe_policy() -> Fp16Policy:
    """The policy of the MDQE model, bare (nodes /backbone/...) or inside the export wrappers
    (/model/backbone/...), built from the preset with the most encoder/decoder layers (a graph with
    more layers needs ``Fp16Policy.from_module`` of its own model, as export/to_onnx.py passes)."""
    import torch
    import mdqe
    from mdqe.config import PRESETS

    cfg = max((mdqe.get_config(name) for name in PRESETS), key=lambda c: (c.enc_layers, c.dec_layers))
    with torch.random.fork_rng(devices=[]):      # building initialises weights: leave the caller's RNG alone
        model = mdqe.build_model(cfg)
    return Fp16Policy.from_module(model) | Fp16Policy.from_module(model, prefix="model.")


class _Retyper:
    """Stage 1 state: each tensor's element type after conversion (`cur`), and the Casts / fp16
    initializer copies made so far (one per tensor and target type)."""

    def __init__(self, orig_types: Dict[str, int], inits: dict):
        self.cur: Dict[str, int] = dict(orig_types)
        self.inits = inits
        self.nodes: list = []
        self.new_inits: list = []
        self.casts: Dict[Tuple[str, int], str] = {}

    def as_type(self, name: str, to: int) -> str:
        """Name of tensor `name` in element type `to` (a Cast node, or an fp16 copy of an initializer)."""
        from onnx import helper, numpy_helper

        cur = self.cur
        if not name or cur.get(name) not in (FLOAT, FLOAT16) or cur[name] == to:
            return name
        key = (name, to)
        if key in self.casts:
            return self.casts[key]
        if name in self.inits and to == FLOAT16 and cur[name] == FLOAT:
            arr = numpy_helper.to_array(self.inits[name]).astype(np.float16)
            new_name = f"{name}__fp16"
            self.new_inits.append(numpy_helper.from_array(arr, new_name))
        else:
            new_name = f"{name}__to_{'fp16' if to == FLOAT16 else 'fp32'}"
            self.nodes.append(helper.make_node("Cast", [name], [new_name], to=to, name=f"{new_name}__cast"))
        cur[new_name] = to
        self.casts[key] = new_name
        return new_name


def _node_target(op: str, in_scope: bool, input_kinds: set) -> int:
    """The precision a node computes in: HALF_OPS in a marked module -> fp16; data movement
    (FOLLOW_OPS) follows its float inputs (fp16 if all are, or some are and it is in a marked
    module); everything else fp32."""
    if op in HALF_OPS and in_scope:
        return FLOAT16
    if op in FOLLOW_OPS:
        if input_kinds == {FLOAT16} or (FLOAT16 in input_kinds and in_scope):
            return FLOAT16
    return FLOAT


def _assign_precisions(nodes, orig_types: Dict[str, int], inits: dict, policy: Fp16Policy) -> _Retyper:
    """Stage 1: walk the nodes in graph order, give each its precision (`_node_target`), cast its float
    inputs to it and record its outputs' new types. Returns the _Retyper holding the new node list."""
    rt = _Retyper(orig_types, inits)
    cur = rt.cur
    for node in nodes:
        op = node.op_type
        in_scope = policy.covers(node.name or "")
        float_ins = [i for i, n in enumerate(node.input) if n and cur.get(n) in (FLOAT, FLOAT16)]
        if op in TYPE_AGNOSTIC_OPS or not float_ins and op not in ("Constant",):
            rt.nodes.append(node)
            continue
        keep = KEEP_INPUT_TYPES.get(op, set())
        target = _node_target(op, in_scope, {cur[node.input[i]] for i in float_ins if i not in keep})
        for i in float_ins:
            if i in keep:
                continue
            node.input[i] = rt.as_type(node.input[i], target)
        # output types: same-as-input ops produce `target` where they produced fp32 before
        for o in node.output:
            if not o:
                continue
            t = orig_types.get(o)
            if op in MSDA_CUSTOM_OPS:
                t = FLOAT
            if t == FLOAT and target == FLOAT16 and (op in HALF_OPS or op in FOLLOW_OPS):
                cur[o] = FLOAT16
            elif t is not None:
                cur[o] = t
        rt.nodes.append(node)
    return rt


def _cast_outputs_back(graph_outputs, rt: _Retyper) -> None:
    """Stage 2: graph outputs that became fp16 are renamed inside the graph and Cast back to their
    declared float32 under their own name (the graph I/O contract stays float32/int64)."""
    from onnx import helper

    out_fix = [out.name for out in graph_outputs
               if rt.cur.get(out.name) == FLOAT16 and out.type.tensor_type.elem_type == FLOAT]
    if not out_fix:
        return
    renames = {n: f"{n}__fp16out" for n in out_fix}
    for node in rt.nodes:
        for i, n in enumerate(node.input):
            if n in renames:
                node.input[i] = renames[n]
        for i, n in enumerate(node.output):
            if n in renames:
                node.output[i] = renames[n]
    for n, r in renames.items():
        rt.nodes.append(helper.make_node("Cast", [r], [n], to=FLOAT, name=f"{n}__cast_out"))
        rt.cur[r] = FLOAT16
        rt.cur[n] = FLOAT


def _assemble(model, rt: _Retyper):
    """Stage 3: a copy of `model` with the new nodes, the initializers still read, the custom nodes'
    output types as value_info, and shapes re-inferred."""
    import onnx
    from onnx import helper

    out_model = onnx.ModelProto()
    out_model.CopyFrom(model)
    og = out_model.graph
    del og.node[:]
    og.node.extend(rt.nodes)
    og.initializer.extend(rt.new_inits)
    used = {n for node in og.node for n in node.input}
    kept = [i for i in og.initializer if i.name in used]
    del og.initializer[:]
    og.initializer.extend(kept)
    # value_info: element types after conversion (custom-node outputs need them; shapes re-inferred)
    del og.value_info[:]
    for node in og.node:
        if node.op_type in MSDA_CUSTOM_OPS:
            for o in node.output:
                og.value_info.append(helper.make_tensor_value_info(o, rt.cur.get(o, FLOAT), None))
    try:
        out_model = onnx.shape_inference.infer_shapes(out_model, strict_mode=False)
    except Exception:
        pass
    return out_model


def convert_graph_fp16(model, policy: Optional[Fp16Policy] = None):
    """Return a new ModelProto with the mixed-precision policy above applied (input untouched).
    `policy`: which nodes lie in fp16 modules (default `mdqe_policy()`; the exporter passes
    ``Fp16Policy.from_module`` of the model it exported)."""
    import onnx

    policy = policy if policy is not None else mdqe_policy()
    orig_types = _float_types(model)
    work = onnx.ModelProto()
    work.CopyFrom(model)                 # stage 1 rewrites node inputs in place
    g = work.graph
    rt = _assign_precisions(g.node, orig_types, {i.name: i for i in g.initializer}, policy)
    _cast_outputs_back(g.output, rt)
    return _assemble(work, rt)


def precision_census(model) -> Dict[str, int]:
    """{"fp16": n, "fp32": m} over the node outputs with float types (after shape inference)."""
    import onnx

    types = _float_types(model)
    counts = {"fp16": 0, "fp32": 0}
    for node in model.graph.node:
        for o in node.output:
            t = types.get(o)
            if t == FLOAT16:
                counts["fp16"] += 1
            elif t == FLOAT:
                counts["fp32"] += 1
    del onnx
    return counts
