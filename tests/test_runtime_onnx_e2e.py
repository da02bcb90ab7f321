"""End to end on the real bikes.mp4 with the tiny model exported by export/to_onnx.py, run by ONNX Runtime.

The export (random weights, onnx form) takes ~20 s on a 2-core machine; the run uses the first
12 frames. Random weights give low class scores, so --score-thr is lowered to get tracks.
"""
import json
import os
import subprocess
import sys

import cv2
import pytest

from runtime.infer import main
from runtime.rle import decode_rle
from runtime.samples import sample_video

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N = 12


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    pytest.importorskip("torch")
    out = str(tmp_path_factory.mktemp("tiny_onnx"))
    r = subprocess.run([sys.executable, os.path.join(ROOT, "export", "to_onnx.py"), "--config", "tiny",
                        "--weights", "random", "--output", out, "--msda", "onnx", "--no-verify", "--no-progress",
                        "--threads", "1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return out


def test_bikes_with_exported_tiny_model(tiny_onnx, tmp_path, capsys):
    out = str(tmp_path / "out")
    # the default tracks with the raw clip query (pred_queries, an output of every contract-2 export)
    with open(os.path.join(tiny_onnx, "export.json")) as f:
        assert "pred_queries" in json.load(f)["decoder"]["outputs"]
    rc = main(["--model", tiny_onnx, "--video", sample_video("bikes.mp4"), "--output", out, "--backend", "ort",
               "--max-frames", str(N), "--score-thr", "0.001", "--vis-thr", "0", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    assert len(results) >= 10
    for r in results:
        assert len(r["segmentations"]) == N and r["video_id"] == 1 and 1 <= r["category_id"] <= 5
        for s in r["segmentations"]:
            if s is not None:
                assert s["size"] == [272, 640] and isinstance(s["counts"], str)
                assert decode_rle(s).shape == (272, 640)
    assert any(s is not None for r in results for s in r["segmentations"])
    with open(os.path.join(out, "timing.json")) as f:
        t = json.load(f)
    assert t["frames"] == t["encoder_frames"] == N and t["decoder_clips"] == N - 2   # + the truncated last clip
    assert t["backend"]["backend"] == "ort" and t["input_size"] == [192, 384]
    cap = cv2.VideoCapture(os.path.join(out, "overlay.mp4"))
    frames = 0
    while cap.read()[0]:
        frames += 1
    cap.release()
    assert frames == N


def test_incompatible_model_dir_cli(tiny_onnx, tmp_path, capsys):
    """A model directory whose export.json has another format_version is refused with a clear message."""
    bad = tmp_path / "bad"
    bad.mkdir()
    meta = json.load(open(os.path.join(tiny_onnx, "export.json")))
    meta["format_version"] = 99
    (bad / "export.json").write_text(json.dumps(meta))
    for f in ("encoder.onnx", "decoder.onnx"):
        os.symlink(os.path.join(tiny_onnx, f), bad / f)
    rc = main(["--model", str(bad), "--video", sample_video("bikes.mp4"), "--output", str(tmp_path / "o")])
    assert rc == 2 and "format_version 99 is not supported" in capsys.readouterr().err


def test_torch_backend_matches_ort(tiny_onnx):
    """The torch backend (random export weights recreated from the recorded seed and hash) agrees with ORT."""
    import numpy as np

    from runtime.backends import create_backend
    from runtime.clip_buffer import FeatureRing
    from runtime.preprocess import Preprocessor
    from runtime.video import FrameSource

    from mdqe.backend import register
    register()                              # the torch backend lives in mdqe (python -m mdqe.infer does this)
    ort_b = create_backend("ort", tiny_onnx)
    torch_b = create_backend("torch", tiny_onnx)
    assert "sha256 verified" in torch_b.describe()["weights"]
    from runtime.contract import DECODER_OUTPUTS

    pre = Preprocessor(ort_b.spec.preprocess)
    ring_o, ring_t = FeatureRing(4), FeatureRing(4)
    for frame in FrameSource(sample_video("bikes.mp4"), max_frames=4):
        x = pre(frame)[None]
        g = pre.geometry
        assert g.resized == (163, 384) and g.padded == (192, 384)    # 640x272 needs padding: 29 rows
        valid = np.array([g.resized], np.int64)
        fo, ft = ort_b.encode(x, valid), torch_b.encode(x, valid)
        assert (fo["valid_hw"] == valid).all() and (ft["valid_hw"] == valid).all()
        assert np.abs(fo["memory"] - ft["memory"]).max() < 1e-3
        assert np.abs(fo["query_points"] - ft["query_points"]).max() == 0
        ring_o.push(fo)
        ring_t.push(ft)
    oo, ot = ort_b.decode(ring_o.clip()), torch_b.decode(ring_t.clip())
    assert set(oo) == set(ot) == set(DECODER_OUTPUTS)
    for k in DECODER_OUTPUTS:
        assert oo[k].shape == ot[k].shape
        assert np.abs(oo[k] - ot[k]).max() < 1e-3, k
    # the padding masks matter: the unpadded call gives other outputs
    full = torch_b.encode(x)
    assert np.abs(full["memory"] - ring_t.clip()["memory"][-1:]).max() > 1e-3


def test_runtime_on_padded_video_equals_pytorch_path(tiny_onnx, tmp_path):
    """The whole runtime (ort backend, exported graphs) on bikes.mp4, whose frames are padded from
    163 to 192 rows, gives the results of the same runtime on the PyTorch model (torch backend)."""
    import numpy as np

    from mdqe.infer import main as mdqe_main     # runtime.infer's main with the torch backend registered

    res = {}
    for backend in ("ort", "torch"):
        out = str(tmp_path / backend)
        rc = (mdqe_main if backend == "torch" else main)(["--model", tiny_onnx, "--video", sample_video("bikes.mp4"), "--output", out, "--backend", backend,
                   "--max-frames", "8", "--score-thr", "0.001", "--vis-thr", "0", "--no-progress", "--no-overlay"])
        assert rc == 0
        with open(os.path.join(out, "results.json")) as f:
            res[backend] = json.load(f)
    a, b = res["ort"], res["torch"]
    assert len(a) == len(b) >= 5
    for ra, rb in zip(a, b):
        assert ra["category_id"] == rb["category_id"]
        assert abs(ra["score"] - rb["score"]) < 1e-4
        for sa, sb in zip(ra["segmentations"], rb["segmentations"]):
            assert (sa is None) == (sb is None)
            if sa is not None:
                ma, mb = decode_rle(sa).astype(bool), decode_rle(sb).astype(bool)
                union = (ma | mb).sum()
                assert union == 0 or (ma & mb).sum() / union > 0.99
