"""mdqe/ops/msda is the one home of MSDeformAttn: every submodule is reachable under its own name (no
function shadows a module), the folder's modules import each other without a cycle, the "are we
exporting" test is written once (mdqe/tracing.py), and every registered implementation - the
export forms included - computes the op's numbers when called eagerly."""
from __future__ import annotations

import ast
import importlib
import pkgutil
import types
from pathlib import Path

import pytest
import torch

import mdqe.ops.msda as msda
from mdqe.ops import available_impls, ms_deform_attn, ms_deform_attn_torch
from mdqe.ops.msda.forms import trt_builtin_form

REPO = Path(__file__).resolve().parents[1]
HOME = REPO / "mdqe" / "ops" / "msda"


def _submodules():
    return [m.name for m in pkgutil.walk_packages(msda.__path__, "mdqe.ops.msda.")]


def test_no_module_is_shadowed_by_a_function():
    names = _submodules()
    assert {"mdqe.ops.msda.dispatch", "mdqe.ops.msda.torch_form", "mdqe.ops.msda.build",
            "mdqe.ops.msda.forms.plugin", "mdqe.ops.msda.reference"} <= set(names)
    for name in names + ["mdqe.ops.msda"]:
        parent, _, short = name.rpartition(".")
        mod = importlib.import_module(name)
        assert isinstance(mod, types.ModuleType), name
        assert getattr(importlib.import_module(parent), short) is mod, f"{name} is shadowed"
    # the op's function keeps its name on the packages, and no module carries it
    assert callable(importlib.import_module("mdqe.ops").ms_deform_attn)
    assert all(not n.endswith(".ms_deform_attn") for n in names)


def _module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set:
    """Modules of mdqe.ops.msda that `path` imports (relative and absolute imports resolved)."""
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    known = set(_submodules()) | {"mdqe.ops.msda"}
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                out.add(full if full in known else base)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m in known and m != me}


def test_no_import_cycle_inside_the_home():
    graph = {_module_name(p): _imports(p) for p in HOME.rglob("*.py")}
    # a package's __init__ runs before its modules: an edge module -> its own package is not a cycle
    graph = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    state = {}

    def visit(m, stack):
        state[m] = "open"
        for d in sorted(graph.get(m, ())):
            if state.get(d) == "open":
                raise AssertionError("import cycle: " + " -> ".join(stack + [m, d]))
            if d not in state:
                visit(d, stack + [m])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [])


def test_exporting_predicate_is_written_once():
    hits = []
    for top in ("mdqe", "export", "runtime", "benchmarks"):
        for p in (REPO / top).rglob("*.py"):
            text = p.read_text()
            if "is_in_onnx_export" in text or "is_compiling" in text:
                hits.append(str(p.relative_to(REPO)))
    assert hits == ["mdqe/tracing.py"], hits


def _call(seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor([[6, 8], [3, 4], [1, 1]])
    starts = torch.tensor([0, 48, 60])
    value = torch.randn(2, 61, 4, 8, generator=g)
    loc = torch.rand(2, 7, 4, 3, 2, 2, generator=g) * 1.4 - 0.2
    attn = torch.rand(2, 7, 4, 3, 2, generator=g)
    return value, shapes, starts, loc, attn


@pytest.mark.parametrize("impl", [i for i in available_impls() if i != "cuda"])
def test_every_implementation_computes_the_op_eagerly(impl):
    args = _call()
    ref = ms_deform_attn_torch(*args)
    with torch.no_grad():
        out = ms_deform_attn(*args, impl=impl)
    assert out.shape == ref.shape and (out - ref).abs().max().item() < 1e-5, impl


def test_implementation_function_and_unknown_name():
    args = _call(1)
    with torch.no_grad():
        out = ms_deform_attn(*args, impl=trt_builtin_form(plugin_version="1"))
    assert (out - ms_deform_attn_torch(*args)).abs().max().item() < 1e-5
    with pytest.raises(ValueError, match="plugin_version"):
        trt_builtin_form(plugin_version="7")
    with pytest.raises(ValueError, match="not available here; available: .*'plugin'"):
        ms_deform_attn(*args, impl="tensorrt")
