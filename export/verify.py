"""Export-time checks of the ONNX graphs: onnx.checker, shape inference, node census, and ONNX
Runtime vs reference outputs. Torch-free (the PyTorch reference outputs come in as numpy)."""
from __future__ import annotations

from typing import Dict, Iterable, Mapping, Optional

import numpy as np

from runtime.contract import MSDA_GRIDSAMPLE, MSDA_ONNX, MSDA_PLUGIN, plugin_identity
from runtime.errors import VerificationFailed

from runtime.native.ort_ops import create_session

# fp16 graphs are compared with the fp32 PyTorch model: |ort - ref| <= FP16_ATOL + FP16_RTOL * max|ref|
# per output (a scale-aware bound: fp16 has ~3 significant digits; see docs/export.md).
FP32_ATOL = 1e-4
FP16_ATOL = 1e-2
FP16_RTOL = 2e-2
# Where PyTorch fp32 is itself far from the exact (fp64) result, an output's bound becomes
# REF_ERR_FACTOR x that error: |ort - torch32| <= |ort - exact| + |torch32 - exact|, so 3x lets ONNX
# Runtime be up to twice as far from the exact result as PyTorch fp32 is (a summation order or a
# fused kernel of another CPU / ORT build) and still leaves a margin.
REF_ERR_FACTOR = 3.0
# An output whose error is above bound / MIN_MARGIN is a close call: the export then measures
# PyTorch's own fp64 error and derives the bound from it (see needs_reference_error), so a pass never
# rests on a margin thinner than this against a bound that does not follow the model's own rounding.
MIN_MARGIN = 2.0


class VerificationError(VerificationFailed, RuntimeError):
    """An exported graph failed a check (structure or numerical tolerance): exit 3."""


def check_graph(model, name: str) -> "onnx.ModelProto":  # noqa: F821
    """onnx.checker and ONNX shape inference with type checking (non-strict: the custom-domain plugin
    node has no schema, its output type comes from the graph's value_info). Returns the inferred model."""
    import onnx

    try:
        onnx.checker.check_model(model, full_check=False)
    except onnx.checker.ValidationError as e:
        raise VerificationError(f"{name}: onnx.checker failed: {e}") from e
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=False)
    except Exception as e:  # onnx raises InferenceError / ValidationError
        raise VerificationError(f"{name}: ONNX shape inference failed: {e}") from e
    return inferred


def op_census(model) -> Dict[str, int]:
    """{"domain::op_type" or "op_type": count} over the main graph."""
    counts: Dict[str, int] = {}
    for n in model.graph.node:
        key = f"{n.domain}::{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
        counts[key] = counts.get(key, 0) + 1
    return counts


def _elem_type_of(model, name: str):
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        if vi.name == name and vi.type.HasField("tensor_type"):
            return vi.type.tensor_type.elem_type, len(vi.type.tensor_type.shape.dim) \
                if vi.type.tensor_type.HasField("shape") else None
    for n in model.graph.node:   # a Cast's target type without value_info
        if n.op_type == "Cast" and n.output and n.output[0] == name:
            return next(a.i for a in n.attribute if a.name == "to"), None
    return None, None


def check_msda_form(model, name: str, msda: str, expected_plugin_nodes: int,
                    expected_gridsample: Optional[int] = None, plugin_version: Optional[str] = None) -> None:
    """Node census of an MSDeformAttn form (names: runtime.model_dir.MSDA_FORMS).

    onnx: no custom-domain node and no GridSample at all. gridsample: no custom node, and
    `expected_gridsample` GridSample nodes when given. plugin: exactly `expected_plugin_nodes`
    MDQEMSDeformAttn nodes with the TensorRT parser attributes and no GridSample. trt-builtin:
    exactly `expected_plugin_nodes` MultiscaleDeformableAttnPlugin_TRT nodes carrying NVIDIA's
    contract (5 inputs, spatial_shapes / level_start_index INT32, one 4-D output of value's type,
    attributes exactly plugin_version (`plugin_version`, default "2") and plugin_namespace "")
    and no GridSample. `model` should be the shape-inferred graph (check_graph's result)."""
    import onnx

    custom = [n for n in model.graph.node if n.domain not in ("", "ai.onnx")]
    grid = [n for n in model.graph.node if n.op_type == "GridSample"]
    ident = plugin_identity(msda)
    if ident is None:
        if custom:
            raise VerificationError(f"{name}: {msda}-form graph holds custom nodes "
                                    f"{sorted({f'{n.domain}::{n.op_type}' for n in custom})}")
        if msda == MSDA_ONNX and grid:
            raise VerificationError(f"{name}: onnx-form graph holds {len(grid)} GridSample nodes (the Gather form "
                                    "has none; --msda gridsample is the GridSample form)")
        if msda == MSDA_GRIDSAMPLE and expected_gridsample is not None and len(grid) != expected_gridsample:
            raise VerificationError(f"{name}: {len(grid)} GridSample nodes, expected {expected_gridsample}")
        return
    nodes = [n for n in custom if n.op_type == ident.op_type and n.domain == ident.onnx_domain]
    if len(nodes) != expected_plugin_nodes:
        raise VerificationError(f"{name}: {len(nodes)} {ident.onnx_domain}::{ident.op_type} nodes, "
                                f"expected {expected_plugin_nodes}")
    other = [f"{n.domain}::{n.op_type}" for n in custom if n not in nodes]
    if other:
        raise VerificationError(f"{name}: unexpected custom nodes {sorted(set(other))}")
    if grid:
        raise VerificationError(f"{name}: {msda}-form graph holds GridSample nodes {[n.name for n in grid][:5]} "
                                "(an MSDeformAttn call was not routed to the plugin node)")
    for n in nodes:
        attrs = {a.name: (a.s.decode() if a.type == a.STRING else a.i) for a in n.attribute}
        if len(n.input) != 5 or len(n.output) != 1:
            raise VerificationError(f"{name}: node {n.name} has {len(n.input)} inputs / {len(n.output)} outputs, "
                                    "expected 5 / 1")
        for i, what in ((1, "spatial_shapes"), (2, "level_start_index")):
            et, _ = _elem_type_of(model, n.input[i])
            if et != onnx.TensorProto.INT32:
                raise VerificationError(f"{name}: node {n.name} input {what} is ONNX type {et}, the plugin takes INT32")
        if msda == MSDA_PLUGIN:
            if attrs.get("plugin_version") != ident.version or attrs.get("plugin_namespace") != ident.namespace \
                    or not all(isinstance(attrs.get(f), int) for f in ident.fields):
                raise VerificationError(f"{name}: node {n.name} has attributes {attrs}")
            continue
        want = {"plugin_version": plugin_version or ident.version, "plugin_namespace": ident.namespace}
        if attrs != want:
            raise VerificationError(f"{name}: node {n.name} has attributes {attrs}, NVIDIA's plugin takes exactly {want}")
        vt, _ = _elem_type_of(model, n.input[0])
        ot, rank = _elem_type_of(model, n.output[0])
        if rank is not None and rank != ident.output_rank:
            raise VerificationError(f"{name}: node {n.name} output has rank {rank}, the plugin returns "
                                    f"[N, Lq, M, D] (rank {ident.output_rank})")
        if vt is not None and ot is not None and vt != ot:
            raise VerificationError(f"{name}: node {n.name} output type {ot} differs from value's type {vt}")


def compare(got: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray], names: Iterable[str],
            atol: float, rtol: float = 0.0, ref_err: Optional[Mapping[str, float]] = None) -> Dict[str, dict]:
    """Per output: max abs error and whether |got - ref| <= bound holds, where
    bound = max(atol + rtol * max|ref|, REF_ERR_FACTOR * ref_err[k]). `ref_err[k]` is the reference's
    own rounding error (max |PyTorch fp32 - PyTorch fp64|) on this input, given only when the plain
    bound failed: an export cannot be asked to match an fp32 reference closer than that reference
    matches the exact result (e.g. a GroupNorm over a near-constant channel of a randomly
    initialised model amplifies fp32 rounding)."""
    res = {}
    for k in names:
        g, r = np.asarray(got[k]), np.asarray(ref[k])
        if g.shape != r.shape:
            res[k] = {"max_abs_err": float("inf"), "ok": False, "why": f"shape {g.shape} != {r.shape}"}
            continue
        if g.dtype.kind in "iub":
            err = float(np.abs(g.astype(np.int64) - r.astype(np.int64)).max()) if g.size else 0.0
            res[k] = {"max_abs_err": err, "ok": err == 0.0, "bound": 0.0}
            continue
        g64, r64 = g.astype(np.float64), r.astype(np.float64)
        if not np.all(np.isfinite(r64)):
            res[k] = {"max_abs_err": float("nan"), "ok": False, "non_finite": "reference",
                      "why": f"the PyTorch reference is non-finite ({_count_non_finite(r64)}): NaN/inf weights?"}
            continue
        if not np.all(np.isfinite(g64)):
            res[k] = {"max_abs_err": float("nan"), "ok": False, "non_finite": "onnxruntime",
                      "why": f"ONNX Runtime output is non-finite ({_count_non_finite(g64)})"}
            continue
        err = float(np.abs(g64 - r64).max()) if g.size else 0.0
        scale = float(np.abs(r64).max()) if r.size else 0.0
        bound = atol + rtol * scale
        entry = {"max_abs_err": err, "ok": err <= bound, "bound": bound, "ref_max_abs": scale}
        if ref_err is not None and k in ref_err:
            entry["ref_fp32_vs_fp64"] = float(ref_err[k])
            bound = max(bound, REF_ERR_FACTOR * float(ref_err[k]))
            entry.update(bound=bound, ok=err <= bound)
        entry["margin"] = (bound / err) if err > 0 else float("inf")
        res[k] = entry
    return res


def _count_non_finite(a: np.ndarray) -> str:
    nan = int(np.isnan(a).sum())
    inf = int(np.isinf(a).sum())
    return f"{nan} NaN, {inf} inf of {a.size} values"


def needs_reference_error(*results: Dict[str, dict]) -> bool:
    """True when some float output failed its bound or passed it with less than MIN_MARGIN: then the
    export measures PyTorch fp32's own error against fp64 and re-checks with the derived bounds."""
    for res in results:
        for r in res.values():
            if r.get("non_finite"):
                continue   # no bound can make NaN pass
            if not r["ok"] or (r.get("bound", 0.0) > 0.0 and r["max_abs_err"] > r["bound"] / MIN_MARGIN):
                return True
    return False


def run_ort(path_or_model, feeds: Mapping[str, np.ndarray], output_names, threads: int = 0) -> Dict[str, np.ndarray]:
    sess = create_session(path_or_model, intra_op_num_threads=threads)
    outs = sess.run(list(output_names), dict(feeds))
    return dict(zip(output_names, outs))


def format_report(name: str, res: Dict[str, dict]) -> str:
    lines = []
    for k, r in res.items():
        status = "ok" if r["ok"] else "FAIL"
        extra = f" (bound {r['bound']:.1e})" if "bound" in r else f" ({r.get('why', '')})"
        if "bound" in r and r["max_abs_err"] > 0:
            extra += f" margin {r['bound'] / r['max_abs_err']:.1f}x"
        if "ref_fp32_vs_fp64" in r:
            extra += f" [PyTorch fp32 itself is {r['ref_fp32_vs_fp64']:.1e} off fp64 here]"
        if "selection_flips" in r:
            extra += f" [{r['selection_flips']}/{r['selection_points']} selected points moved at near-ties]"
        lines.append(f"    {name}.{k:<18} max abs err {r['max_abs_err']:.3e}{extra} {status}")
    return "\n".join(lines)


def raise_on_failure(name: str, res: Dict[str, dict], extra: Optional[str] = None) -> None:
    bad = {k: r for k, r in res.items() if not r["ok"]}
    non_finite = {k: r for k, r in bad.items() if r.get("non_finite")}
    if non_finite:
        msg = "; ".join(f"{k}: {r['why']}" for k, r in non_finite.items())
        raise VerificationError(f"{name}: outputs are not finite (NaN/inf): {msg}"
                                + (f" ({extra})" if extra else ""))
    if bad:
        msg = ", ".join(f"{k}: {r['max_abs_err']:.3e} > {r.get('bound', 0):.1e}" for k, r in bad.items())
        raise VerificationError(f"{name}: ONNX Runtime output differs from PyTorch beyond tolerance: {msg}"
                                + (f" ({extra})" if extra else ""))


# fp16 graphs: the grid-guided query selection is an argmax over an upsampled score map whose
# neighbouring values are interpolations of each other; fp16 rounding upstream flips near-ties.
# At most this fraction of the selected points may move; the query features/embeddings are then
# compared on the unmoved queries only.
FP16_MAX_SELECTION_FLIPS = 0.05
SELECTION_OUTPUTS = ("query_points", "query_feat", "query_embed")


def compare_selection_fp16(got: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray], atol: float,
                           rtol: float) -> Dict[str, dict]:
    """fp16 only: compare the query-selection outputs (query_points [N,Q,2], query_feat, query_embed)
    allowing up to FP16_MAX_SELECTION_FLIPS of the points to move (a moved point = a different grid
    pixel); the others are compared with the usual fp16 bound. Entries carry `selection_flips`."""
    gp, rp = np.asarray(got["query_points"], np.float64), np.asarray(ref["query_points"], np.float64)
    moved = np.abs(gp - rp).max(-1) > 1e-4                                          # [N, Q]
    keep = ~moved
    res = {}
    for k in SELECTION_OUTPUTS:
        g, r = np.asarray(got[k], np.float64)[keep], np.asarray(ref[k], np.float64)[keep]
        err = float(np.abs(g - r).max()) if g.size else 0.0
        scale = float(np.abs(r).max()) if r.size else 0.0
        bound = atol + rtol * scale
        res[k] = {"max_abs_err": err, "bound": bound, "ref_max_abs": scale,
                  "ok": err <= bound and moved.mean() <= FP16_MAX_SELECTION_FLIPS,
                  "selection_flips": int(moved.sum()), "selection_points": int(moved.size)}
    return res
