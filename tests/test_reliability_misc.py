"""Export verification, the evaluator, the checkpoint loaders and the export tolerance margin: one
test per defect, each failing on the code before its fix."""
import json
import os

import numpy as np
import pytest

from mdqe.evaluate import main as evaluate_main
from runtime.rle import encode_rle


def _mask(x0, y0, x1, y1, h=20, w=30):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    r = encode_rle(m)
    return {"size": r["size"], "counts": r["counts"].decode() if isinstance(r["counts"], bytes) else r["counts"]}


def _gt():
    return {
        "videos": [{"id": 7, "height": 20, "width": 30, "length": 2}],
        "categories": [{"id": 1, "name": "disc"}],
        "annotations": [{"id": 1, "video_id": 7, "category_id": 1, "iscrowd": 0,
                         "segmentations": [_mask(0, 0, 5, 5), _mask(1, 1, 6, 6)], "areas": [25.0, 25.0]}],
    }


def _res():
    return [{"video_id": 7, "category_id": 1, "score": 0.9, "segmentations": [_mask(0, 0, 5, 5), None]}]


def _write(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return str(p)


def _eval(capsys, gt, res, *extra):
    rc = evaluate_main(["--gt", gt, "--results", res, *extra])
    return rc, capsys.readouterr().err


# structurally wrong ground truth / results, encodings, --output a directory, bad areas
STRUCTURAL = {
    "videos_null": (lambda g: g.update(videos=None), "'videos' must be a list"),
    "annotations_int": (lambda g: g.update(annotations=5), "'annotations' must be a list"),
    "categories_str": (lambda g: g.update(categories="disc"), "'categories' must be a list"),
    "areas_nan": (lambda g: g["annotations"][0].update(areas=[float("nan"), 25.0]), "areas[0] = nan"),
    "areas_negative": (lambda g: g["annotations"][0].update(areas=[25.0, -3.0]), "areas[1] = -3.0"),
    "areas_inf": (lambda g: g["annotations"][0].update(areas=[float("inf"), 25.0]), "must be finite"),
}


@pytest.mark.parametrize("case", sorted(STRUCTURAL))
def test_evaluator_rejects_structurally_wrong_ground_truth(case, tmp_path, capsys):
    mutate, needle = STRUCTURAL[case]
    g = _gt()
    mutate(g)
    p = tmp_path / "gt.json"
    p.write_text(json.dumps(g))          # json writes NaN / Infinity, which Python's json reads back
    rc, err = _eval(capsys, str(p), _write(tmp_path, "res.json", _res()))
    assert rc == 2 and err.startswith("error:") and needle in err and err.count("\n") == 1, err


def test_evaluator_non_utf8_file(tmp_path, capsys):
    p = tmp_path / "gt.json"
    p.write_bytes(b'{"videos": [], "categories": [{"id": 1, "name": "\xff\xfe"}], "annotations": []}')
    rc, err = _eval(capsys, str(p), _write(tmp_path, "res.json", []))
    assert rc == 2 and "not UTF-8" in err, err


def test_evaluator_directory_as_input_or_output(tmp_path, capsys):
    gt, res = _write(tmp_path, "gt.json", _gt()), _write(tmp_path, "res.json", _res())
    rc, err = _eval(capsys, str(tmp_path), res)
    assert rc == 2 and "is a directory" in err, err
    d = tmp_path / "metrics_dir"
    d.mkdir()
    rc, err = _eval(capsys, gt, res, "--output", str(d))
    assert rc == 2 and "is a directory" in err and os.listdir(d) == [], err


# refused checkpoints give one-line errors, exit 2, no advice to disable safety
@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory):
    import torch
    d = tmp_path_factory.mktemp("ckpt")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"model": Evil()}, str(d / "evil.pt"))
    (d / "garbage.pt").write_bytes(b"\x80\x02not a checkpoint")
    torch.save(torch.zeros(3), str(d / "tensor.pt"))
    return d


@pytest.mark.parametrize("name,needle", [("evil.pt", "refusing to load"), ("garbage.pt", "not a readable"),
                                         ("tensor.pt", "not a training state")])
def test_train_resume_refused_checkpoint(name, needle, bad_checkpoints, tmp_path, capsys):
    from mdqe import train
    rc = train.main(["--data", str(tmp_path / "nodata"), "--output", str(tmp_path / "out"), "--iters", "2",
                     "--resume", str(bad_checkpoints / name)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("error: --resume") and needle in err and err.count("\n") == 1, err
    assert "weights_only=False" not in err and "weights_only` set to `False" not in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["evil.pt", "garbage.pt"])
def test_torch_backend_refused_weights(name, bad_checkpoints, tmp_path, capsys):
    from mdqe.infer import main
    from reliability_utils import export_json, make_model_dir, make_video
    import mdqe
    cfg = json.loads(json.dumps(mdqe.get_config("tiny").to_dict()))
    meta = export_json(config=cfg, num_classes=cfg["num_classes"], class_names=cfg["class_names"],
                       num_frames=cfg["num_frames"], embed_dim=cfg["embed_dim"])
    for graph in ("encoder", "decoder"):   # the torch backend does not read the graphs
        meta[graph] = {"file": f"{graph}.onnx"}
    model = make_model_dir(str(tmp_path / "m"), meta=meta)
    rc = main(["--model", model, "--backend", "torch", "--weights", str(bad_checkpoints / name), "--video",
               make_video(str(tmp_path / "v.avi"), 4), "--output", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: cannot use weights {bad_checkpoints / name}") and err.count("\n") == 1, err
    assert "weights_only" not in err


# verification says "non-finite"
def test_export_verification_says_non_finite():
    from export import verify as V
    ref = {"memory": np.ones((2, 3), np.float32)}
    got = {"memory": np.array([[1, np.nan, 1], [1, 1, np.inf]], np.float32)}
    res = V.compare(got, ref, ["memory"], V.FP32_ATOL)
    with pytest.raises(V.VerificationError, match=r"not finite.*memory: ONNX Runtime output is non-finite \(1 NaN, 1 inf"):
        V.raise_on_failure("encoder", res)
    res = V.compare(ref, {"memory": np.full((2, 3), np.nan, np.float32)}, ["memory"], V.FP32_ATOL)
    with pytest.raises(V.VerificationError, match=r"not finite.*PyTorch reference is non-finite"):
        V.raise_on_failure("encoder", res)
    assert "non-finite" in V.format_report("encoder", res)


# a close call triggers the fp64-derived bound; the margin is stated
def test_export_close_call_uses_fp64_bound_with_margin():
    from export import verify as V
    ref = {"mask_features": np.zeros((4,), np.float32)}
    got = {"mask_features": np.array([9.25e-5, 0, 0, 0], np.float32)}   # the shipped checkpoint's error
    res = V.compare(got, ref, ["mask_features"], V.FP32_ATOL)
    assert res["mask_features"]["ok"] and V.needs_reference_error(res)   # 1.08x margin is a close call
    res = V.compare(got, ref, ["mask_features"], V.FP32_ATOL, ref_err={"mask_features": 9.4e-5})
    r = res["mask_features"]
    assert r["ok"] and r["bound"] == pytest.approx(V.REF_ERR_FACTOR * 9.4e-5) and r["margin"] >= 2.0
    assert "margin" in V.format_report("encoder", res)
    clear = V.compare({"x": np.array([1e-6], np.float32)}, {"x": np.zeros(1, np.float32)}, ["x"], V.FP32_ATOL)
    assert not V.needs_reference_error(clear)


def test_every_corrupt_checkpoint_is_a_checkpoint_error(tmp_path):
    """torch's weights-only unpickler fails on random bytes with UnpicklingError, IndexError,
    KeyError, UnicodeDecodeError, ...: every one becomes CheckpointError (exit 2), never a traceback."""
    from mdqe.checkpoint import CheckpointError, safe_torch_load

    kinds = set()
    for seed in range(300):
        path = tmp_path / f"{seed}.pt"
        path.write_bytes(np.random.default_rng(seed).bytes(512))
        with pytest.raises(CheckpointError, match="not a readable torch checkpoint") as exc:
            safe_torch_load(str(path))
        kinds.add(exc.value.args[0].split("format: ")[-1].split(":")[0])
    assert {"IndexError", "KeyError"} <= kinds, kinds
