"""The one command-line convention (runtime/cli.py, docs/INTERFACES.md section 7): every console
script and every entry module answers --help with exit 0 and the exit-code epilog, shares one flag
vocabulary, and maps the project's errors to the same exit codes."""
import contextlib
import io
import os
import re
import runpy
import subprocess
import sys
import tomllib

import pytest

from runtime import cli
from runtime.errors import (BackendUnavailableError, ModelDirError, NonFiniteError, RuntimeErrorBase, UsageError,
                            VerificationFailed)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# every module with a __main__ block, run as `python -m MODULE`
ENTRY_MODULES = [
    "mdqe.demo", "mdqe.train", "mdqe.evaluate", "mdqe.convert", "mdqe.data.synthetic",
    "mdqe.evaluation.benchmark", "mdqe.engine.predict_split", "mdqe.infer", "mdqe.ops.msda.build",
    "export.to_onnx", "export.build_engines", "export.to_triton", "export.polygraphy_ref",
    "runtime.infer", "runtime.client", "runtime.batch", "runtime.serving.server",
    "benchmarks.fps", "benchmarks.gpu_suite", "benchmarks.batch_workers", "benchmarks.msda_forms",
    "benchmarks.msda_op", "benchmarks.msda_precision", "benchmarks.postprocess", "benchmarks.soak",
    "benchmarks.triton_streams",
    "tools.authors_parity", "tools.parity.criterion", "tools.parity.tracker",
]
# entry modules outside the convention, with the reason (none today)
NOT_CHECKED = {}
# flags retired in favour of one name per concept (docs/INTERFACES.md section 7)
RETIRED_FLAGS = ("--model-dir", "--out", "--dtype", "--quiet", "--json", "--max-size", "--min-size", "--opt-size",
                 "--size", "--min-frames", "--opt-frames")


def _help_of(call) -> str:
    """stdout of ``call()`` that must return 0 (``main``) or end in SystemExit(0) (``python -m``)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        try:
            rc = call()
        except SystemExit as e:
            rc = e.code
    assert rc in (0, None), buf.getvalue()[-2000:]
    return buf.getvalue()


def _check_help(text: str, where: str) -> None:
    assert "exit status:" in text and "2    bad input" in text and "3    verification failed" in text, where
    flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text))
    retired = sorted(flags & set(RETIRED_FLAGS))
    assert not retired, f"{where}: retired flag(s) {retired}"


def _scripts():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["scripts"]


def test_every_entry_module_is_listed():
    """A new __main__ block must join the convention (or NOT_CHECKED, with a reason)."""
    found = set()
    for top in ("mdqe", "export", "runtime", "benchmarks", "tools"):
        for d, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(d, name)
                    with open(path) as fh:
                        if 'if __name__ == "__main__"' in fh.read():
                            mod = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
                            found.add(mod[:-len(".__main__")] if mod.endswith(".__main__") else mod)
    assert found == set(ENTRY_MODULES) | set(NOT_CHECKED)


@pytest.mark.parametrize("name", sorted(_scripts()))
def test_console_script_help(name):
    """Each [project.scripts] target imports; main(["--help"]) exits 0 and shows the exit codes."""
    target = _scripts()[name]
    mod, func = target.split(":")
    import importlib
    main = getattr(importlib.import_module(mod), func)
    _check_help(_help_of(lambda: main(["--help"])), name)
    assert mod in ENTRY_MODULES or mod.removesuffix(".__main__") in ENTRY_MODULES


@pytest.mark.filterwarnings("ignore:.*found in sys.modules after import of package")
@pytest.mark.parametrize("module", ENTRY_MODULES)
def test_entry_module_help_as_m(module, monkeypatch):
    """``python -m MODULE --help`` (runpy runs the module as __main__, as python -m does)."""
    monkeypatch.setattr(sys, "argv", [module, "--help"])
    _check_help(_help_of(lambda: runpy.run_module(module, run_name="__main__", alter_sys=True)), module)


def test_help_in_subprocess(tmp_path):
    """Real processes: ``python -m runtime.infer --help`` from the repository, and the documented
    ``python export/to_onnx.py`` (the file, not the module) from another folder, with --help and
    with a bad value (one line, exit 2)."""
    r = subprocess.run([sys.executable, "-m", "runtime.infer", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    _check_help(r.stdout, "runtime.infer")
    script = os.path.join(ROOT, "export", "to_onnx.py")
    r = subprocess.run([sys.executable, script, "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    _check_help(r.stdout, "export/to_onnx.py")
    r = subprocess.run([sys.executable, script, "--config", "nope", "--weights", "random", "--output",
                        str(tmp_path / "o")], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("text,want", [("cpu", "cpu"), ("cuda", "cuda"), ("CUDA:1", "cuda:1"), (" cuda:0 ", "cuda:0")])
def test_parse_device(text, want):
    assert cli.parse_device(text) == want


@pytest.mark.parametrize("text", ["gpu", "auto", "cuda:", "cuda:x", "mps", ""])
def test_parse_device_refuses(text):
    import argparse
    with pytest.raises(argparse.ArgumentTypeError, match="cpu, cuda or cuda:N"):
        cli.parse_device(text)


def test_device_flag_is_one_vocabulary(capsys):
    """A --device outside cpu|cuda|cuda:N is a usage error (exit 2) for every command that has it."""
    from benchmarks.fps import main as fps
    from mdqe.engine.predict_split import main as predict
    from mdqe.train import main as train
    from runtime.infer import main as infer
    for main, args in ((infer, ["--video", "v", "--output", "o"]), (fps, []), (train, ["--data", "d", "--output", "o"]),
                       (predict, ["--gt", "g", "--output", "o", "--weights", "w"])):
        assert main(args + ["--device", "gpu"]) == 2
        err = capsys.readouterr().err
        assert "expected cpu, cuda or cuda:N" in err and len(err.strip().splitlines()) == 1, err


def _raising(exc):
    @cli.cli_main
    def main(argv=None):
        raise exc
    return main


@pytest.mark.parametrize("exc,code", [
    (UsageError("bad flag"), 2), (ModelDirError("no export.json"), 2), (BackendUnavailableError("no GPU"), 2),
    (VerificationFailed("differs"), 3), (NonFiniteError("NaN in decoder"), 3),
    (KeyboardInterrupt(), 130), (KeyboardInterrupt("SIGTERM"), 143),
    (FileNotFoundError(2, "No such file or directory", "/nope"), 2),
])
def test_cli_main_exit_codes(exc, code, capsys):
    assert _raising(exc)() == code
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and ("error: " in err or "interrupted" in err)


def test_project_errors_map_to_the_policy(capsys):
    """The error types of mdqe/, export/ and tools/ carry the policy's exit codes."""
    from export.build_engines import BuildError
    from export.to_onnx import ExportError
    from export.verify import VerificationError
    from mdqe.checkpoint import CheckpointError
    from runtime.clip_filter import ParamError
    for exc, code in ((ExportError("x"), 2), (BuildError("x"), 2), (CheckpointError("x"), 2), (ParamError("x"), 2),
                      (VerificationError("x"), 3)):
        assert isinstance(exc, RuntimeErrorBase)
        assert _raising(exc)() == code
    assert isinstance(VerificationError("x"), RuntimeError)      # callers catching RuntimeError still do
    capsys.readouterr()


def test_cli_main_lets_bugs_through():
    with pytest.raises(ZeroDivisionError):
        _raising(ZeroDivisionError("bug"))()
    assert cli.cli_main(lambda argv=None: None)() == 0


def test_fps_default_output_is_not_the_committed_results(tmp_path, monkeypatch):
    """benchmarks.fps without --output writes fps_report/ in the current folder; the committed
    benchmarks/results/ are left alone."""
    from benchmarks.fps import main as fps
    results = os.path.join(ROOT, "benchmarks", "results")
    before = {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
              for d, _, fs in os.walk(results) for f in fs}
    monkeypatch.chdir(tmp_path)
    assert fps(["--backend", "fake", "--max-frames", "4", "--warmup-frames", "0", "--no-progress"]) == 0
    assert sorted(os.listdir(tmp_path / "fps_report")) == ["fps_report.json", "fps_report.md", "fps_report.png"]
    after = {os.path.join(d, f): os.stat(os.path.join(d, f)).st_mtime_ns
             for d, _, fs in os.walk(results) for f in fs}
    assert after == before
