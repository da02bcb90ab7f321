"""The runtime must work alone (it is the torch-free floor, tests/test_layering.py): import every
runtime module with torch, mdqe and export blocked, run the pipeline, and check that selecting the
torch backend (which lives in mdqe) fails with one line naming `python -m mdqe.infer`."""
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent(r"""
    import importlib, pkgutil, sys

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "mdqe", "export"):
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Blocker())
    try:
        import torch  # noqa: F401
        raise SystemExit("blocker failed")
    except ImportError:
        pass

    import runtime
    names = []
    for m in pkgutil.walk_packages(runtime.__path__, "runtime."):
        if m.name.rsplit(".", 1)[-1].startswith("lib"):
            continue  # native shared libraries (not Python modules)
        importlib.import_module(m.name)
        names.append(m.name)
    assert not {"torch", "mdqe", "export"} & set(sys.modules), sorted(k for k in sys.modules if "torch" in k)

    # the pipeline runs end to end (fake backend), and selecting the torch backend fails cleanly
    import tempfile
    from runtime.backends import create_backend
    from runtime.errors import BackendUnavailableError
    from runtime.pipeline import RunOptions, run_video
    from runtime.samples import sample_video
    with tempfile.TemporaryDirectory() as d:
        t = run_video(sample_video(), d, create_backend("fake", None), RunOptions(max_frames=5, progress=False))
        assert t["frames"] == 5
    try:
        create_backend("torch", None)
        raise SystemExit("torch backend did not fail")
    except BackendUnavailableError as e:
        assert "python -m mdqe.infer" in str(e) and "\n" not in str(e), str(e)
    assert not {"torch", "mdqe", "export"} & set(sys.modules)
    print("IMPORTED", len(names), " ".join(names))
""")


def test_runtime_imports_without_torch():
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    line = [x for x in r.stdout.splitlines() if x.startswith("IMPORTED")][0]
    mods = line.split()[2:]
    for m in ("runtime.pipeline", "runtime.infer", "runtime.tracker", "runtime.backends.ort_backend",
              "runtime.backends.trt_backend", "runtime.backends.fake", "runtime.outputs.results"):
        assert m in mods
    assert "runtime.contract" in mods and not any("torch_backend" in m for m in mods)


def test_runtime_infer_torch_backend_needs_mdqe_infer(tmp_path):
    """`python -m runtime.infer --backend torch` (mdqe not loaded): exit 2, one line naming
    `python -m mdqe.infer`, nothing written."""
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "runtime.infer", "--model", str(tmp_path), "--video", "0",
                        "--output", str(out), "--backend", "torch"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "python -m mdqe.infer" in lines[0], r.stderr
    assert not out.exists()


def test_backend_registry():
    """register_backend: explicit, refuses to replace a built-in kind or another factory."""
    import pytest

    from runtime import backends as B

    calls = []

    def factory(model_dir, **opts):
        calls.append((model_dir, opts))
        return "made"

    saved = B.registered_backends()
    try:
        with pytest.raises(ValueError, match="built in"):
            B.register_backend("ort", factory)
        B.register_backend("unit-test-kind", factory)
        B.register_backend("unit-test-kind", factory)             # the same factory again: no-op
        with pytest.raises(ValueError, match="already registered"):
            B.register_backend("unit-test-kind", lambda *a, **k: None)
        assert B.create_backend("unit-test-kind", "DIR", x=1) == "made" and calls == [("DIR", {"x": 1})]
        with pytest.raises(B.BackendUnavailableError, match="unknown backend 'nope'"):
            B.create_backend("nope", None)
    finally:
        B._REGISTRY.clear()
        B._REGISTRY.update(saved)


def test_mdqe_infer_registers_the_torch_backend(tmp_path):
    """`python -m mdqe.infer --backend torch` gets past the registry (here it stops at the empty
    model directory: exit 2, the model-directory message, not the registry's)."""
    r = subprocess.run([sys.executable, "-m", "mdqe.infer", "--model", str(tmp_path), "--video", "0",
                        "--output", str(tmp_path / "out"), "--backend", "torch"], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no export.json" in r.stderr and "mdqe.infer" not in r.stderr, r.stderr
