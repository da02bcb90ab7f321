"""Every CLI x missing, empty, corrupt and wrongly typed inputs.

Each case asserts: the exit code (2 = bad input), exactly one line carrying ``error:`` that names
the problem, no traceback, and that the files already in the output folder are unchanged.

Cost: cases run in-process through each CLI's ``main(argv)`` (an uncaught exception fails the test
just as a traceback would); one case per CLI also runs as a real subprocess (``python -m ...`` or
the script path) to prove the command-line wiring. The whole file takes well under 2 minutes.
"""
import json
import os
import sys

import numpy as np
import pytest

from reliability_utils import make_model_dir, make_video, run_cli, snapshot


# ----------------------------------------------------------------------------------------------
# input files (built once)
# ----------------------------------------------------------------------------------------------
# 512 seeded random bytes on which torch's weights-only unpickler raises IndexError (not an
# UnpicklingError): a corrupt checkpoint must still be a one-line bad-input error
CORRUPT_PT = np.random.default_rng(17).bytes(512)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad_inputs")
    f = {"dir": d}
    f["model"] = make_model_dir(str(d / "model"))
    f["video"] = make_video(str(d / "video.avi"), 6)
    (d / "empty").mkdir()
    f["empty_dir"] = str(d / "empty")
    for name, data in (("empty.mp4", b""), ("corrupt.mp4", os.urandom(4096)), ("empty.json", b""),
                       ("corrupt.json", b'{"videos": [1, 2'), ("list.json", b"[1, 2, 3]"),
                       ("object.json", b'{"a": 1}'), ("empty.pt", b""), ("corrupt.pt", CORRUPT_PT),
                       ("empty.safetensors", b""), ("corrupt.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json"),
                       ("text.txt", b"hello")):
        p = d / name
        p.write_bytes(data)
        f[name] = str(p)
    # a model directory whose export.json is corrupt / wrongly typed / empty
    for name, text in (("model_corrupt", "{not json"), ("model_list", "[]"), ("model_empty", ""),
                       ("model_typed", None)):
        m = make_model_dir(str(d / name))
        if text is None:
            meta = json.load(open(os.path.join(m, "export.json")))
            meta["num_frames"] = "four"
            text = json.dumps(meta)
        with open(os.path.join(m, "export.json"), "w") as fh:
            fh.write(text)
        f[name] = m
    gt = {"videos": [{"id": 1, "height": 8, "width": 8, "length": 1}], "categories": [{"id": 1, "name": "a"}],
          "annotations": []}
    (d / "gt.json").write_text(json.dumps(gt))
    (d / "res.json").write_text("[]")
    f["gt"], f["res"] = str(d / "gt.json"), str(d / "res.json")
    import torch
    torch.save(torch.zeros(2), str(d / "tensor.pt"))
    f["tensor.pt"] = str(d / "tensor.pt")
    return f


# ----------------------------------------------------------------------------------------------
# the CLIs: (in-process main, subprocess argv prefix)
# ----------------------------------------------------------------------------------------------
def _main(cli):
    if cli == "infer":
        from runtime.infer import main
    elif cli == "to_onnx":
        from export.to_onnx import main
    elif cli == "build_engines":
        from export.build_engines import main
    elif cli == "evaluate":
        from mdqe.evaluate import main
    elif cli == "train":
        from mdqe.train import main
    elif cli == "convert":
        from mdqe.convert import main
    elif cli == "fps":
        from benchmarks.fps import main
    elif cli == "demo":
        from mdqe.demo import main
    return main


SUBPROCESS = {"infer": ["-m", "runtime.infer"], "to_onnx": ["export/to_onnx.py"],
              "build_engines": ["export/build_engines.py"], "evaluate": ["-m", "mdqe.evaluate"],
              "train": ["-m", "mdqe.train"], "convert": ["-m", "mdqe.convert"], "fps": ["-m", "benchmarks.fps"],
              "demo": ["-m", "mdqe.demo"]}


def _argv(cli, f, out, **kw):
    """A valid command line for ``cli`` writing to ``out``, with the inputs in ``kw`` replaced."""
    out = str(out)
    if cli == "infer":
        a = {"--model": f["model"], "--video": f["video"]}
        a.update(kw)
        return [x for k, v in a.items() for x in (k, v)] + ["--output", out, "--no-progress"]
    if cli == "to_onnx":
        a = {"--config": "tiny", "--weights": "random"}
        a.update(kw)
        return [x for k, v in a.items() for x in (k, v)] + ["--output", out, "--no-progress", "--no-verify"]
    if cli == "build_engines":
        return ["--model", kw.get("--model", f["model"]), "--print-only", "--engine-dir", out]
    if cli == "evaluate":
        return ["--gt", kw.get("--gt", f["gt"]), "--results", kw.get("--results", f["res"]),
                "--output", os.path.join(out, "metrics.json")]
    if cli == "train":
        a = {"--data": kw.pop("--data", f["empty_dir"]), "--iters": "2"}
        a.update(kw)
        return [x for k, v in a.items() for x in (k, v)] + ["--output", out]
    if cli == "convert":
        return [kw.get("src", f["tensor.pt"]), os.path.join(out, "converted.safetensors"), "--config", "tiny"]
    if cli == "fps":
        a = {"--model": f["model"], "--video": f["video"]}
        a.update(kw)
        return [x for k, v in a.items() for x in (k, v)] + ["--output", out, "--warmup-frames", "0", "--no-progress"]
    if cli == "demo":
        a = {"--video": f["video"]}
        a.update(kw)
        return [x for k, v in a.items() for x in (k, v)] + ["--output", out]
    raise KeyError(cli)


# (cli, case id, {input: file key or literal}, needle in the error line)
MISSING = "/nonexistent/input"
CASES = [
    # runtime.infer
    ("infer", "video-missing", {"--video": MISSING}, "video not found"),
    ("infer", "video-empty", {"--video": "empty.mp4"}, "video file is empty"),
    ("infer", "video-corrupt", {"--video": "corrupt.mp4"}, "cannot open video"),
    ("infer", "video-folder-without-images", {"--video": "empty_dir"}, "no image files"),
    ("infer", "model-missing", {"--model": MISSING}, "model directory not found"),
    ("infer", "model-empty-dir", {"--model": "empty_dir"}, "no export.json"),
    ("infer", "model-is-a-file", {"--model": "text.txt"}, "is not a directory"),
    ("infer", "export-json-corrupt", {"--model": "model_corrupt"}, "cannot read"),
    ("infer", "export-json-empty", {"--model": "model_empty"}, "cannot read"),
    ("infer", "export-json-list", {"--model": "model_list"}, "expected a JSON object"),
    ("infer", "export-json-typed", {"--model": "model_typed"}, "num_frames must be an integer"),
    # export/to_onnx.py
    ("to_onnx", "weights-missing", {"--weights": MISSING}, "no such file"),
    ("to_onnx", "weights-empty", {"--weights": "empty.safetensors"}, "empty.safetensors"),
    ("to_onnx", "weights-corrupt", {"--weights": "corrupt.pt"}, "corrupt.pt"),
    ("to_onnx", "weights-wrong-type", {"--weights": "tensor.pt"}, "tensor.pt"),
    ("to_onnx", "config-unknown", {"--config": "no_such_preset"}, "no_such_preset"),
    ("to_onnx", "config-corrupt-json", {"--config": "corrupt.json"}, "corrupt.json"),
    # export/build_engines.py --print-only
    ("build_engines", "model-missing", {"--model": MISSING}, "model directory not found"),
    ("build_engines", "model-empty-dir", {"--model": "empty_dir"}, "no export.json"),
    ("build_engines", "export-json-corrupt", {"--model": "model_corrupt"}, "cannot read"),
    ("build_engines", "export-json-typed", {"--model": "model_typed"}, "num_frames must be an integer"),
    # mdqe.evaluate
    ("evaluate", "gt-missing", {"--gt": MISSING}, "not found"),
    ("evaluate", "gt-empty", {"--gt": "empty.json"}, "not valid JSON"),
    ("evaluate", "gt-corrupt", {"--gt": "corrupt.json"}, "not valid JSON"),
    ("evaluate", "gt-wrong-type", {"--gt": "list.json"}, "expected an object"),
    ("evaluate", "gt-directory", {"--gt": "empty_dir"}, "is a directory"),
    ("evaluate", "results-missing", {"--results": MISSING}, "not found"),
    ("evaluate", "results-corrupt", {"--results": "corrupt.json"}, "not valid JSON"),
    ("evaluate", "results-wrong-type", {"--results": "object.json"}, "expected a list"),
    # mdqe.train
    ("train", "resume-missing", {"--resume": MISSING}, "no such file"),
    ("train", "resume-empty", {"--resume": "empty.pt"}, "empty.pt"),
    ("train", "resume-corrupt", {"--resume": "corrupt.pt"}, "not a readable"),
    ("train", "resume-wrong-type", {"--resume": "tensor.pt"}, "not a training state"),
    ("train", "config-corrupt-json", {"--config": "corrupt.json"}, "corrupt.json"),
    ("train", "data-missing", {"--data": MISSING}, MISSING),
    # mdqe.convert
    ("convert", "src-missing", {"src": MISSING}, "no such file"),
    ("convert", "src-empty", {"src": "empty.pt"}, "empty.pt"),
    ("convert", "src-corrupt", {"src": "corrupt.pt"}, "not a readable"),
    ("convert", "src-wrong-type", {"src": "tensor.pt"}, "expected a detectron2 checkpoint"),
    # benchmarks.fps
    ("fps", "model-missing", {"--model": MISSING}, "model directory not found"),
    ("fps", "export-json-typed", {"--model": "model_typed"}, "num_frames must be an integer"),
    ("fps", "video-missing", {"--video": MISSING}, "video not found"),
    ("fps", "video-corrupt", {"--video": "corrupt.mp4"}, "cannot open video"),
    # mdqe.demo (checked before its minutes-long export)
    ("demo", "weights-missing", {"--weights": MISSING}, "weights not found"),
    ("demo", "weights-empty", {"--weights": "empty.safetensors"}, "weights file is empty"),
    ("demo", "video-missing", {"--video": MISSING}, "video not found"),
    ("demo", "video-corrupt", {"--video": "corrupt.mp4"}, "cannot open video"),
]
FIRST_OF_CLI = {}
for _c in CASES:
    FIRST_OF_CLI.setdefault(_c[0], _c[1])


def _resolve(f, inputs):
    return {k: (f[v] if v in f else v) for k, v in inputs.items()}


def _prefill(out, cli):
    """An output folder that already holds files (from an earlier run of ``cli``)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "keep.txt").write_text("earlier output")
    (out / "results.json").write_text("[]")
    if cli == "to_onnx":       # to_onnx only replaces a folder that holds an earlier export
        (out / "export.json").write_text('{"format_version": 1}')
    return snapshot(str(out))


def _check(code, err, needle):
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert code == 2, f"exit {code}\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    assert len(lines) == 1, f"expected one error line, got {lines}\n{err[-2000:]}"
    assert needle.lower() in lines[0].lower(), f"{needle!r} not in {lines[0]!r}"


@pytest.mark.parametrize("cli,case,inputs,needle", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_bad_input(cli, case, inputs, needle, files, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    before = _prefill(out, cli)
    argv = _argv(cli, files, out, **_resolve(files, inputs))
    monkeypatch.setattr(sys, "argv", ["prog"] + argv)
    try:
        code = _main(cli)(argv)
    except SystemExit as e:
        code = e.code
    _check(code, capsys.readouterr().err, needle)
    assert snapshot(str(out)) == before


@pytest.mark.parametrize("cli", sorted(FIRST_OF_CLI))
def test_bad_input_subprocess(cli, files, tmp_path):
    """The first case of each CLI again, as the real command line."""
    case = next(c for c in CASES if c[0] == cli)
    out = tmp_path / "out"
    before = _prefill(out, cli)
    r = run_cli(SUBPROCESS[cli] + _argv(cli, files, out, **_resolve(files, case[2])))
    _check(r.returncode, r.stderr, case[3])
    assert snapshot(str(out)) == before
