"""The GPU suite's code paths on the CPU: the whole suite in --dry-run mode, CUDA-graph logic with
EagerReplayApi (mdqe.engine.cuda_graphs), the torch backend's graph path, and bad input."""
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import gpu_suite
from mdqe.engine.cuda_graphs import EagerReplayApi, GraphedCall
from mdqe.engine.device_io import HostToDevice, to_host

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- GraphedCall
def _fn(calls):
    def fn(x, y):
        calls.append(1)
        return {"sum": x + y, "prod": (x * y).sum(-1)}
    return fn


def test_graphed_call_replays_with_new_inputs_and_static_outputs():
    calls, api = [], EagerReplayApi()
    g = GraphedCall(_fn(calls), api=api, warmup=2)
    x, y = torch.randn(3, 4), torch.randn(3, 4)
    out1 = g(x, y)
    # 2 warm-up runs, the capture, then the first replay (a captured graph has not run yet)
    assert api.captures == 1 and len(calls) == 4 and api.replays == 1
    assert torch.equal(out1["sum"], x + y)
    x2, y2 = torch.randn(3, 4), torch.randn(3, 4)
    out2 = g(x2, y2)
    assert out2 is out1                                     # static outputs, overwritten by the replay
    assert torch.equal(out2["sum"], x2 + y2) and torch.allclose(out2["prod"], (x2 * y2).sum(-1))
    assert api.replays == 2 and g.status()["graphs"] == 1 and g.status()["failures"] == {}


def test_graphed_call_new_signature_or_key_captures_again():
    api = EagerReplayApi()
    g = GraphedCall(lambda x: x * 2, api=api, warmup=1)
    g(torch.ones(2))
    g(torch.ones(3))
    g(torch.ones(3), key=("levels", 1))
    assert api.captures == 3 and g.status()["graphs"] == 3


def test_graphed_call_capture_failure_falls_back_to_eager_with_reason():
    api = EagerReplayApi(fail_capture="operation not permitted when stream is capturing")
    g = GraphedCall(lambda x: x + 1, api=api, warmup=1)
    for v in (1.0, 2.0):
        assert torch.equal(g(torch.full((2,), v)), torch.full((2,), v + 1))
    st = g.status()
    assert st["graphs"] == 0 and st["eager_calls"] == 2
    (why,) = st["failures"].values()
    assert "not permitted" in why


def test_graphed_call_max_graphs():
    g = GraphedCall(lambda x: x, api=EagerReplayApi(), warmup=0, max_graphs=1)
    g(torch.ones(1))
    g(torch.ones(2))
    st = g.status()
    assert st["graphs"] == 1 and "max_graphs" in next(iter(st["failures"].values()))


def test_host_io_on_cpu():
    h2d = HostToDevice("cpu")
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = h2d.upload("a", a)
    assert t.dtype == torch.float32 and np.array_equal(t.numpy(), a)
    src = {"x": torch.ones(2, dtype=torch.float16), "i": torch.arange(3)}
    out = to_host(src, copy=True)
    assert out["x"].dtype == np.float32 and out["i"].dtype == np.int64
    src["i"].add_(5)
    assert out["i"].tolist() == [0, 1, 2]                 # copied, not a view


# ----------------------------------------------------------------------------- torch backend, graph path
def _tiny_backend(**opts):
    from mdqe.backend import TorchBackend
    return TorchBackend(None, spec=gpu_suite.model_spec("tiny"), device="cpu", **opts)


def test_torch_backend_graph_path_matches_eager_over_several_calls():
    rng = np.random.default_rng(0)
    eager = _tiny_backend()
    graphed = _tiny_backend(cuda_graphs=True, graph_api=EagerReplayApi())
    broken = _tiny_backend(cuda_graphs=True, graph_api=EagerReplayApi(fail_capture="capture refused"))
    from runtime.clip_buffer import FeatureRing
    rings = {k: FeatureRing(4) for k in ("e", "g", "b")}
    for _ in range(4):
        img = rng.standard_normal((1, 3, 192, 384), dtype=np.float32)
        for k, b in (("e", eager), ("g", graphed), ("b", broken)):
            rings[k].push(b.encode(img))
    outs = {k: b.decode(rings[k].clip()) for k, b in (("e", eager), ("g", graphed), ("b", broken))}
    for k in ("g", "b"):
        for name, ref in outs["e"].items():
            assert np.array_equal(outs[k][name], ref), (k, name)
        for f_e, f_k in zip(rings["e"]._frames, rings[k]._frames):   # arrays kept by the ring: not aliased
            assert np.array_equal(f_e["memory"], f_k["memory"])
    st = graphed.graph_status()
    assert st["encoder"]["graphs"] == 1 and st["encoder"]["replays"] == 4 and st["decoder"]["replays"] == 1
    assert "capture refused" in next(iter(broken.graph_status()["encoder"]["failures"].values()))
    assert graphed.describe()["cuda_graphs"] is True


def test_torch_backend_gpu_options_need_a_gpu():
    from runtime.errors import BackendUnavailableError
    for opts in (dict(amp="fp16"), dict(msda="cuda"), dict(cuda_graphs=True), dict(msda="bogus")):
        with pytest.raises(BackendUnavailableError):
            _tiny_backend(**opts)


# ----------------------------------------------------------------------------- the whole suite, dry run
def test_dry_run_runs_every_stage(tmp_path, monkeypatch):
    monkeypatch.setenv("MDQE_CUDA_EXT_DIR", str(tmp_path / "ext"))
    monkeypatch.delenv("OUT", raising=False)
    out, bundle = tmp_path / "suite", tmp_path / "bundle"
    # a fresh process, as the command runs: single-threaded BLAS must be set before numpy loads
    # (in this test process numpy is loaded already, and 2 BLAS threads on a busy 2-core machine
    # slowed the run down 40-fold)
    r = subprocess.run([sys.executable, "-m", "benchmarks.gpu_suite", "--dry-run", "--output", str(out),
                        "--bundle", str(bundle), "--frames", "8", "--warmup-frames", "2"],
                       cwd=ROOT, capture_output=True, text=True, timeout=600)
    summary = json.loads((out / "summary.json").read_text())
    assert r.returncode == 0, (summary, r.stderr[-2000:])
    assert {k: v["status"] for k, v in summary["stages"].items()} == dict.fromkeys(gpu_suite.STAGES, "ok")
    # every result file names the device, driver, CUDA and torch versions
    for name in ("summary.json", "op_speed.json", "e2e_report.json", "memory.json"):
        env = json.loads((out / name).read_text())["environment"]
        assert {"device", "driver", "cuda", "torch", "nvcc"} <= set(env), name
    assert "torch " + torch.__version__ in (out / "e2e_report.md").read_text()
    # build stage: the exact commands for sm_90
    build = summary["stages"]["build"]
    assert "-DMDQE_CUDA_ARCHS=90" in build["cmake_commands"][0] and "--arch 9.0" in build["torch_ext_command"]
    # parity: the CPU-runnable tests of tests/test_msda_cuda.py ran and passed
    assert summary["stages"]["parity"]["tests"] > 0 and summary["stages"]["parity"]["failures"] == 0
    # op: every case in fp32 and the low-precision dtype; fp32 kernel against the fp64 reference
    op = json.loads((out / "op_speed.json").read_text())["results"]
    assert len(op) == 6 and all(r["kernel_max_abs_err"] <= 1e-5 for r in op if r["dtype"] == "fp32")
    # e2e: all variants ran, outputs equal the grid_sample form's within fp32 rounding, graphs replayed
    e2e = json.loads((out / "e2e_report.json").read_text())
    assert [v["variant"] for v in e2e["variants"]] == [n for n, _ in gpu_suite.VARIANTS]
    for v in e2e["variants"]:
        assert v["status"] == "ok" and v["fps"] > 0 and v["outputs_ok"], v
        assert v["vs_grid_sample_fp32"]["pred_masks"] <= 1e-4 and v["vs_grid_sample_fp32"]["finite"]
        if v["options"].get("cuda_graphs"):
            assert v["graphs"]["encoder"]["replays"] > 0 and not v["graphs"]["encoder"]["failures"]
        assert (out / "e2e" / gpu_suite._slug(v["variant"]) / "fps_report.png").is_file()
    mem = json.loads((out / "memory.json").read_text())
    assert set(mem["runs"]) == {"5", "15"} and mem["runs"]["15"]["frames"] == 15
    # bundle: few files, everything else in the tarball
    files = sorted(os.listdir(bundle))
    assert len(files) <= 6 and "results.tar.gz" in files and "summary.md" in files
    with tarfile.open(bundle / "results.tar.gz") as tar:
        names = tar.getnames()
    assert any(n.endswith("e2e/grid_sample_eager/fps_report.md") for n in names)
    assert not any("/work/" in n or "/build/" in n for n in names)


def test_bad_input_exit_2(tmp_path, capsys):
    assert gpu_suite.main(["--dry-run", "--output", str(tmp_path), "--stages", "op,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert gpu_suite.main(["--dry-run", "--output", str(tmp_path), "--weights", str(tmp_path / "nope.pt")]) == 2
    if not torch.cuda.is_available():
        assert gpu_suite.main(["--output", str(tmp_path)]) == 2
        assert "no CUDA GPU" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif((shutil.which("nvcc") is None and not os.path.exists("/usr/local/cuda/bin/nvcc"))
                    or shutil.which("ninja") is None, reason="needs nvcc and ninja")
def test_compile_check_builds_extension_objects_for_sm90(tmp_path):
    """Without a GPU: the torch extension's two objects compile for sm_90 (the link needs libtorch_cuda)."""
    from mdqe.ops.msda.build import build_cuda_extension
    out = build_cuda_extension(tmp_path, "9.0", compile_only=True)
    assert (out / "msda_cuda.cuda.o").stat().st_size > 0 and (out / "msda_torch_cuda.o").stat().st_size > 0
