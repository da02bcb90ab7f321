"""Mixed fp16 typing of an exported fp32 graph, for TensorRT 11 strongly typed networks
(where the tensor types in the ONNX graph are the precision) and TensorRT 10 with --fp16.

Policy (written here, no external converter):
- fp16 compute only inside the heavy trunks: backbone, input projections, encoder layers, mask
  head, decoder layers (node-name scopes of the TorchScript exporter, `FP16_SCOPES`), and only for
  ops in `HALF_OPS` (convolutions, matmuls, elementwise arithmetic, activations, GridSample and
  the MDQEMSDeformAttn plugin node, which takes fp16 value/locations/weights and returns fp16 while
  accumulating in fp32 inside the kernel).
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

import re
from typing import Dict, Tuple

import numpy as np

from runtime.contract import OUR_PLUGIN, TRT_BUILTIN_PLUGIN

FLOAT, FLOAT16 = 1, 10  # onnx.TensorProto.FLOAT / FLOAT16

FP16_SCOPES = re.compile(r"^/(?:model/)?(?:backbone|input_proj|encoder/layers\.\d+|mask_head|decoder/layers\.\d+)/")
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


def convert_graph_fp16(model):
    """Return a new ModelProto with the mixed-precision policy above applied (input untouched)."""
    import onnx
    from onnx import helper, numpy_helper

    orig_types = _float_types(model)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    cur: Dict[str, int] = {}                        # tensor -> elem type after conversion
    for name, t in orig_types.items():
        cur[name] = t
    new_nodes = []
    new_inits = []
    casts: Dict[Tuple[str, int], str] = {}

    def as_type(name: str, to: int) -> str:
        if not name or cur.get(name) not in (FLOAT, FLOAT16) or cur[name] == to:
            return name
        key = (name, to)
        if key in casts:
            return casts[key]
        if name in inits and to == FLOAT16 and cur[name] == FLOAT:
            arr = numpy_helper.to_array(inits[name]).astype(np.float16)
            new_name = f"{name}__fp16"
            new_inits.append(numpy_helper.from_array(arr, new_name))
        else:
            new_name = f"{name}__to_{'fp16' if to == FLOAT16 else 'fp32'}"
            new_nodes.append(helper.make_node("Cast", [name], [new_name], to=to,
                                              name=f"{new_name}__cast"))
        cur[new_name] = to
        casts[key] = new_name
        return new_name

    for node in g.node:
        op = node.op_type
        in_scope = bool(FP16_SCOPES.match(node.name or ""))
        float_ins = [i for i, n in enumerate(node.input) if n and cur.get(n) in (FLOAT, FLOAT16)]
        if op in TYPE_AGNOSTIC_OPS or not float_ins and op not in ("Constant",):
            new_nodes.append(node)
            continue
        keep = KEEP_INPUT_TYPES.get(op, set())
        if op in HALF_OPS and in_scope:
            target = FLOAT16
        elif op in FOLLOW_OPS:
            kinds = {cur[node.input[i]] for i in float_ins if i not in keep}
            if kinds == {FLOAT16}:
                target = FLOAT16
            elif FLOAT16 in kinds and in_scope:
                target = FLOAT16
            else:
                target = FLOAT
        else:
            target = FLOAT
        for i in float_ins:
            if i in keep:
                continue
            node.input[i] = as_type(node.input[i], target)
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
        new_nodes.append(node)

    # graph outputs back to their declared types
    out_fix = []
    for out in g.output:
        want = out.type.tensor_type.elem_type
        if cur.get(out.name) == FLOAT16 and want == FLOAT:
            out_fix.append(out.name)
    if out_fix:
        renames = {n: f"{n}__fp16out" for n in out_fix}
        for node in new_nodes:
            for i, n in enumerate(node.input):
                if n in renames:
                    node.input[i] = renames[n]
            for i, n in enumerate(node.output):
                if n in renames:
                    node.output[i] = renames[n]
        for n, r in renames.items():
            new_nodes.append(helper.make_node("Cast", [r], [n], to=FLOAT, name=f"{n}__cast_out"))
            cur[r] = FLOAT16
            cur[n] = FLOAT

    out_model = onnx.ModelProto()
    out_model.CopyFrom(model)
    og = out_model.graph
    del og.node[:]
    og.node.extend(new_nodes)
    og.initializer.extend(new_inits)
    # keep only initializers still read
    used = {n for node in og.node for n in node.input}
    kept = [i for i in og.initializer if i.name in used]
    del og.initializer[:]
    og.initializer.extend(kept)
    # value_info: element types after conversion (custom-node outputs need them; shapes re-inferred)
    del og.value_info[:]
    for node in og.node:
        if node.op_type in MSDA_CUSTOM_OPS:
            for o in node.output:
                og.value_info.append(helper.make_tensor_value_info(o, cur.get(o, FLOAT), None))
    try:
        out_model = onnx.shape_inference.infer_shapes(out_model, strict_mode=False)
    except Exception:
        pass
    return out_model


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
