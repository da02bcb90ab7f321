"""Imports flow one way: runtime (the torch-free floor) < mdqe < export < {tools, benchmarks, demos}.

Every .py under runtime/, mdqe/, export/, tools/ and benchmarks/ is parsed with ``ast``; every
import in it (module level, inside functions, inside try/if, relative ones resolved, and
``importlib.import_module("...")`` / ``__import__("...")`` with a constant name) is checked:

- a module may import our packages of its own layer or below, never above;
- runtime/ never imports torch (nor torchvision);

and each violation is reported as ``file:line``. The checker itself is tested on a small
synthetic tree that holds violations (so this test can fail). tests/test_runtime_import.py
imports every runtime module in a subprocess with torch, mdqe and export blocked.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

ROOT = Path(__file__).resolve().parent.parent

# layer of each of our top-level packages (higher may import lower or equal, never higher)
LAYERS: Dict[str, int] = {"runtime": 0, "mdqe": 1, "export": 2, "tools": 3, "benchmarks": 3, "demos": 3}
LAYER_NAMES = {0: "runtime (torch-free floor)", 1: "mdqe", 2: "export", 3: "tools/benchmarks/demos"}
# third-party packages a layer must never import
FORBIDDEN = {"runtime": ("torch", "torchvision")}
CHECKED = ("runtime", "mdqe", "export", "tools", "benchmarks")


def _package_of(rel: Path) -> Tuple[str, ...]:
    """Dotted package parts of a file relative to the root (runtime/backends/x.py -> runtime.backends)."""
    parts = rel.with_suffix("").parts
    return parts[:-1] if parts[-1] != "__init__" else parts[:-1]


def imported_modules(tree: ast.AST, rel: Path) -> Iterator[Tuple[int, str]]:
    """(line, absolute dotted module name) of every import in ``tree`` (``rel``: the file's path
    relative to the root, for resolving relative imports)."""
    pkg = _package_of(rel)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if node.level > len(pkg):
                    yield node.lineno, "<relative import above the top package>"
                    continue
                base = pkg[:len(pkg) - (node.level - 1)]
                mod = ".".join(base + ((node.module,) if node.module else ()))
            else:
                mod = node.module or ""
            yield node.lineno, mod
            for alias in node.names:      # `from mdqe import ops` imports mdqe.ops
                yield node.lineno, f"{mod}.{alias.name}"
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", None)
            if name in ("import_module", "__import__"):
                yield node.lineno, node.args[0].value


def layer_of_file(rel: Path) -> Optional[Tuple[str, int]]:
    top = rel.parts[0]
    return (top, LAYERS[top]) if top in LAYERS else None


def check_file(path: Path, root: Path) -> List[str]:
    """Violations of one file, each 'rel/path.py:LINE: what'."""
    rel = path.relative_to(root)
    own = layer_of_file(rel)
    if own is None:
        return []
    top, layer = own
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(rel))
    out, seen = [], set()
    for line, mod in imported_modules(tree, rel):
        head = mod.split(".")[0]
        msg = None
        if mod.startswith("<"):
            msg = mod
        elif head in LAYERS and LAYERS[head] > layer:
            msg = (f"{LAYER_NAMES[layer]} imports {mod} ({LAYER_NAMES[LAYERS[head]]}, a layer above: "
                   "imports flow runtime < mdqe < export < tools/benchmarks/demos)")
        elif head in FORBIDDEN.get(top, ()):
            msg = f"{top} imports {mod} (the runtime is torch-free)"
        if msg and (line, head) not in seen:
            seen.add((line, head))
            out.append(f"{rel.as_posix()}:{line}: {msg}")
    return out


def check_tree(root: Path, packages=CHECKED) -> List[str]:
    """Violations of every .py under root/<package> for the given packages."""
    out = []
    for pkg in packages:
        base = root / pkg
        if not base.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d not in ("__pycache__",) and not d.startswith("."))
            for name in sorted(filenames):
                if name.endswith(".py"):
                    out.extend(check_file(Path(dirpath) / name, root))
    return out


def test_imports_flow_one_way():
    violations = check_tree(ROOT)
    assert not violations, "imports against the layering:\n" + "\n".join(violations)


def test_every_package_is_checked():
    """The walk really covers the packages (a renamed folder must not silently skip the test)."""
    for pkg in ("runtime", "mdqe", "export", "tools", "benchmarks"):
        assert any((ROOT / pkg).rglob("*.py")), pkg
    n = sum(1 for pkg in CHECKED for _ in (ROOT / pkg).rglob("*.py"))
    assert n > 100, n


def test_checker_finds_violations(tmp_path):
    """The checker on a synthetic tree: each kind of violation is reported with file:line, and the
    allowed directions are not."""
    files = {
        "runtime/__init__.py": "",
        "runtime/ok.py": "import os\nfrom . import sibling\nfrom .contract import X\n",
        "runtime/bad_abs.py": "import numpy\n\ndef f():\n    from mdqe.model import MDQE\n    return MDQE\n",
        "runtime/sub/__init__.py": "",
        "runtime/sub/bad_rel.py": "from ...export import to_onnx\n",          # above the top package
        "runtime/sub/bad_rel2.py": "x = 1\nfrom ..sub import y\nimport export.ort_custom_ops as o\n",
        "runtime/bad_torch.py": "try:\n    import torch.nn\nexcept ImportError:\n    pass\n",
        "runtime/bad_dynamic.py": "import importlib\nm = importlib.import_module('mdqe.backend')\n",
        "mdqe/__init__.py": "from runtime.contract import VALID_HW\nimport torch\n",
        "mdqe/bad.py": "from export import wrappers\n",
        "mdqe/bad_from.py": "from benchmarks import fps\n",
        "export/__init__.py": "import mdqe\nimport runtime\nfrom tools import parity\n",
        "tools/ok.py": "import benchmarks.fps\nimport export.to_onnx\nimport mdqe\nimport runtime\n",
        "benchmarks/ok.py": "import tools\n",
    }
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    got = check_tree(tmp_path)
    where = sorted(v.split(": ", 1)[0] for v in got)
    assert where == sorted([
        "runtime/bad_abs.py:4", "runtime/sub/bad_rel.py:1", "runtime/sub/bad_rel2.py:3",
        "runtime/bad_torch.py:2", "runtime/bad_dynamic.py:2", "mdqe/bad.py:1", "mdqe/bad_from.py:1",
        "export/__init__.py:3"]), got
    assert any("runtime is torch-free" in v for v in got)
    assert any(v.startswith("mdqe/bad.py:1: mdqe imports export") for v in got)
