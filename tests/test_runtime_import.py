"""The runtime must work without torch: import every module (except the torch backend) with torch blocked."""
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent(r"""
    import importlib, pkgutil, sys

    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name == "torch" or name.startswith("torch."):
                raise ImportError(f"torch is blocked in this test ({name})")
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
        if m.name == "runtime.backends.torch_backend" or m.name.rsplit(".", 1)[-1].startswith("lib"):
            continue  # the torch backend; native shared libraries (not Python modules)
        importlib.import_module(m.name)
        names.append(m.name)
    assert "torch" not in sys.modules and "mdqe" not in sys.modules, sorted(k for k in sys.modules if "torch" in k)

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
        from runtime.backends.torch_backend import TorchBackend
        from runtime.backends.fake import fake_spec
        TorchBackend(None, spec=fake_spec())
        raise SystemExit("torch backend did not fail")
    except BackendUnavailableError as e:
        assert "needs torch" in str(e)
    assert "torch" not in sys.modules
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
