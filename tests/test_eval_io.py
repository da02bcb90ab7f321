"""Evaluator input validation and the `python -m mdqe.evaluate` command line."""
import copy
import json
import subprocess
import sys

import numpy as np
import pytest

from mdqe.evaluate import main as evaluate_main
from mdqe.evaluation import FormatError, evaluate
from runtime.rle import encode_rle


def _mask(x0, y0, x1, y1, h=20, w=30):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return encode_rle(m)


@pytest.fixture()
def gt():
    return {
        "videos": [{"id": 7, "height": 20, "width": 30, "length": 2, "file_names": ["a/0.jpg", "a/1.jpg"]}],
        "categories": [{"id": 1, "name": "disc"}, {"id": 2, "name": "square"}],
        "annotations": [{"id": 1, "video_id": 7, "category_id": 1, "iscrowd": 0,
                         "segmentations": [_mask(0, 0, 5, 5), None], "areas": [25.0, None],
                         "bboxes": [[0, 0, 5, 5], None]}],
    }


@pytest.fixture()
def res():
    return [{"video_id": 7, "category_id": 1, "score": 0.9, "segmentations": [_mask(0, 0, 5, 5), None]}]


def test_valid_input_evaluates(gt, res):
    assert evaluate(gt, res)["AP"] == pytest.approx(1.0)


@pytest.mark.parametrize("mutate, message", [
    (lambda g, r: g.pop("videos"), "missing key"),
    (lambda g, r: g["annotations"][0].pop("segmentations"), "missing key"),
    (lambda g, r: g["annotations"][0]["segmentations"].append(None), "segmentations has length 3"),
    (lambda g, r: g["annotations"][0].update(video_id=99), "unknown video_id 99"),
    (lambda g, r: g["annotations"][0].update(category_id=5), "unknown category_id 5"),
    (lambda g, r: g["annotations"][0].update(occlusion=["bad", None]), "unknown occlusion label"),
    (lambda g, r: r[0].update(video_id=8), "video_id 8 is not in the ground truth"),
    (lambda g, r: r[0].update(category_id=3), "category_id 3 is not in the ground truth"),
    (lambda g, r: r[0]["segmentations"].pop(), "segmentations has length 1"),
    (lambda g, r: r[0].pop("score"), "missing key"),
    (lambda g, r: r[0].update(score=float("nan")), "finite number"),
    (lambda g, r: r[0]["segmentations"].__setitem__(0, {"size": [10, 30], "counts": "0"}), "does not match the video size"),
    (lambda g, r: r[0]["segmentations"].__setitem__(0, {"size": [20, 30], "counts": "44"}), "run lengths sum"),
    (lambda g, r: r[0]["segmentations"].__setitem__(0, {"size": [20, 30], "counts": "a~~"}), "invalid character"),
    (lambda g, r: r[0]["segmentations"].__setitem__(0, [1, 2]), "RLE dict"),
])
def test_malformed_input_names_the_problem(gt, res, mutate, message):
    g, r = copy.deepcopy(gt), copy.deepcopy(res)
    mutate(g, r)
    with pytest.raises(FormatError, match=message):
        evaluate(g, r)


def test_cli_writes_metrics_atomically(tmp_path, gt, res, capsys):
    gp, rp, out = tmp_path / "gt.json", tmp_path / "res.json", tmp_path / "sub" / "metrics.json"
    gp.write_text(json.dumps(gt))
    rp.write_text(json.dumps(res))
    assert evaluate_main(["--gt", str(gp), "--results", str(rp), "--output", str(out), "--per-category"]) == 0
    metrics = json.loads(out.read_text())
    for k in ("AP", "AP50", "AP75", "AR1", "AR10"):
        assert metrics[k] == pytest.approx(1.0)
    assert metrics["per_category_AP"] == {"disc": pytest.approx(1.0), "square": -1.0}
    assert [p.name for p in out.parent.iterdir()] == ["metrics.json"]  # no temp file left
    assert "AP50" in capsys.readouterr().out


def test_cli_reports_malformed_file_with_exit_code_2(tmp_path, gt):
    gp, rp = tmp_path / "gt.json", tmp_path / "res.json"
    gp.write_text(json.dumps(gt))
    rp.write_text("{not json")
    proc = subprocess.run([sys.executable, "-m", "mdqe.evaluate", "--gt", str(gp), "--results", str(rp)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "not valid JSON" in proc.stderr
    # the evaluator must not need torch
    code = "import sys, mdqe.evaluate, mdqe.evaluation; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_rle_string_validation_agrees_with_pycocotools():
    from pycocotools import mask as mask_utils
    from mdqe.evaluation.rle import _compressed_counts_total, check_rle, decode_rles
    rng = np.random.default_rng(1)
    for i in range(40):
        h, w = (int(x) for x in rng.integers(1, 90, 2))
        m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        if i % 4 == 0:
            m[:] = i % 8 == 0  # all empty / all full
        rle = mask_utils.encode(np.asfortranarray(m))
        assert _compressed_counts_total(rle["counts"]) == h * w
        ok = check_rle({"size": [h, w], "counts": rle["counts"].decode()}, h, w, "x")
        assert np.array_equal(decode_rles([ok])[0], m.astype(bool))


def test_make_result_and_save_results_round_trip(tmp_path, gt):
    from mdqe.evaluation import make_result, save_results
    m0 = np.zeros((20, 30), bool)
    m0[0:5, 0:5] = True
    r = make_result(7, 1, 0.8, [m0, np.zeros((20, 30), bool)])
    assert r["segmentations"][1] is None and isinstance(r["segmentations"][0]["counts"], str)
    path = tmp_path / "res.json"
    save_results([r], str(path))
    assert evaluate(gt, str(path))["AP"] == pytest.approx(1.0)


def test_uncompressed_rle_ground_truth(gt, res):
    # YouTube-VIS training files store uncompressed RLE: run lengths (column-major, zeros first).
    m = np.zeros((20, 30), np.uint8)
    m[0:5, 0:5] = 1
    flat = m.flatten(order="F")
    ends = np.flatnonzero(np.diff(np.r_[0, flat, 1 - flat[-1]]))  # value changes; first run is zeros
    counts = np.diff(np.r_[0, ends]).tolist()
    assert counts[:4] == [0, 5, 15, 5] and sum(counts) == 600
    g = copy.deepcopy(gt)
    g["annotations"][0]["segmentations"][0] = {"size": [20, 30], "counts": counts}
    assert evaluate(g, res)["AP"] == pytest.approx(1.0)
    g["annotations"][0]["segmentations"][0] = {"size": [20, 30], "counts": counts[:-1]}
    with pytest.raises(FormatError, match="run lengths sum"):
        evaluate(g, res)


def test_benchmark_case_runs(capsys):
    from mdqe.evaluation.benchmark import main as bench_main
    assert bench_main(["--videos", "4", "--frames", "3", "--height", "60", "--width", "90"]) == 0
    assert "evaluated in" in capsys.readouterr().out
