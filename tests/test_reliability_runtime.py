"""Runtime defects: one test per defect, each failing on the code before its fix. Models are small constant-output ONNX graphs (tests/reliability_utils.py) run
by ONNX Runtime, or the fake backend; videos are small MJPG AVIs.
"""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from runtime.infer import main
from reliability_utils import (ROOT, assert_clean_error, export_json, make_model_dir, make_video, run_cli,
                               snapshot)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("rel")
    return {"model": make_model_dir(str(d / "model")), "video": make_video(str(d / "v.avi"), 12), "dir": d}


def _infer(model, video, out, *extra):
    return main(["--model", model, "--video", video, "--output", str(out), "--no-progress", *extra])


def _meta(**changes):
    m = export_json()
    for path, v in changes.items():
        node = m
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[k]
        if v is _DEL:
            node.pop(keys[-1])
        else:
            node[keys[-1]] = v
    return m


_DEL = object()

# export.json trusted without checks -> crash deep in the run, ORT traceback, or wrong results
BAD_EXPORTS = {
    "num_classes": (dict(num_classes=5, class_names=list("abcde"), decoder__outputs=_DEL), {}, "num_classes"),
    "num_frames": (dict(num_frames=3, decoder__inputs=_DEL, decoder__outputs=_DEL), {}, "num_frames"),
    "graph_classes": ({}, dict(graph_classes=4), "num_classes"),
    "mask_stride": (dict(mask_stride=8), {}, "mask_stride"),
    "std_zero": (dict(preprocess__std=[0, 1, 1]), {}, "std"),
    "shorter_side_zero": (dict(preprocess__shorter_side=0), {}, "shorter_side"),
    "encoder_list": (dict(encoder=[]), {}, "encoder"),
    "class_names_int": (dict(class_names=5), {}, "class_names"),
    "num_frames_str": (dict(num_frames="four"), {}, "num_frames"),
    "mean_nan": (dict(preprocess__mean=[float("nan"), 0, 0]), {}, "mean"),
    "msda_bad": (dict(msda="cuda"), {}, "msda"),
    "rank": (dict(decoder__outputs={"pred_logits": [8], "pred_boxes": [8, 4, 4], "pred_masks": [8, 4, "h", "w"],
                                    "pred_embeds": [8, 4], "pred_queries": [8, 8]}), {}, "rank"),
}


@pytest.mark.parametrize("case", sorted(BAD_EXPORTS))
def test_export_json_validated_against_graphs(case, assets, tmp_path, capsys):
    meta_changes, graph_kw, needle = BAD_EXPORTS[case]
    model = make_model_dir(str(tmp_path / "m"), meta=_meta(**meta_changes), **graph_kw)
    out = tmp_path / "out"
    rc = _infer(model, assets["video"], out)
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and needle in lines[0], err
    assert not (out / "results.json").exists()


def test_export_json_errors_in_every_entry_point(tmp_path):
    """build_engines.py --print-only and benchmarks/fps.py use the same validation (one line, exit 2)."""
    model = make_model_dir(str(tmp_path / "m"), meta=_meta(encoder=[]))
    for args in (["export/build_engines.py", "--model", model, "--print-only"],
                 ["-m", "benchmarks.fps", "--model", model, "--output", str(tmp_path / "fps")]):
        assert_clean_error(run_cli(args), 2, "encoder must be a JSON object")


# --output validated before any work
def test_output_is_a_file(assets, tmp_path, capsys):
    f = tmp_path / "taken"
    f.write_text("mine")
    assert _infer(assets["model"], assets["video"], f) == 2
    assert "is an existing file, not a folder" in capsys.readouterr().err
    assert f.read_text() == "mine"


def test_output_under_a_file(assets, tmp_path, capsys):
    f = tmp_path / "taken"
    f.write_text("mine")
    assert _infer(assets["model"], assets["video"], f / "sub") == 2
    assert "cannot create the output folder" in capsys.readouterr().err


def test_output_file_is_a_folder(assets, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "results.json").mkdir(parents=True)
    assert _infer(assets["model"], assets["video"], out) == 2
    assert "results.json is a folder" in capsys.readouterr().err


def test_immutable_results_refused_before_work(assets, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    res = out / "results.json"
    res.write_text("[]")
    if subprocess.run(["chattr", "+i", str(res)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i not available here (needs root and ext4/xfs/btrfs)")
    try:
        t0 = time.perf_counter()
        assert _infer(assets["model"], assets["video"], out) == 2
        assert "immutable" in capsys.readouterr().err
        assert time.perf_counter() - t0 < 5 and res.read_text() == "[]"
    finally:
        subprocess.run(["chattr", "-i", str(res)])


def test_read_only_output_refused_before_work(assets, tmp_path, capsys):
    """A read-only mount (a tmpfs mounted ro; needs root, skipped elsewhere) and, for other users, a
    folder without write permission."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
                          capture_output=True).returncode != 0:
            pytest.skip("cannot mount a read-only tmpfs here")
    else:
        os.chmod(ro, 0o555)
    try:
        assert _infer(assets["model"], assets["video"], ro) == 2
        assert "cannot write to the output folder" in capsys.readouterr().err
        assert _infer(assets["model"], assets["video"], ro / "sub") == 2
        assert "cannot create the output folder" in capsys.readouterr().err
    finally:
        if os.geteuid() == 0:
            subprocess.run(["umount", str(ro)])
        else:
            os.chmod(ro, 0o755)


def test_second_run_into_the_same_folder_is_refused(assets, tmp_path, capsys):
    from runtime.output_dir import OutputLock
    out = tmp_path / "out"
    out.mkdir()
    with OutputLock(str(out)):
        assert _infer(assets["model"], assets["video"], out) == 2
    assert "another run is writing to" in capsys.readouterr().err
    assert _infer(assets["model"], assets["video"], out) == 0


# signals, leftovers, early stops
def _popen_infer(video, out, *extra):
    env = dict(os.environ, OPENCV_FFMPEG_LOGLEVEL="-8")
    return subprocess.Popen([sys.executable, "-m", "runtime.infer", "--backend", "fake", "--video", video, "--output",
                             str(out), "--no-progress", *extra], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _wait_for_spool(out, proc, timeout=60):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if out.is_dir() and any(n.startswith(".spool-") for n in os.listdir(out)):
            time.sleep(0.3)          # let it process some frames
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("the run did not start")


@pytest.fixture(scope="module")
def long_video(tmp_path_factory):
    return make_video(str(tmp_path_factory.mktemp("long") / "long.avi"), 3000, size=(48, 64))


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly_with_outputs_and_nonzero_exit(sig, code, long_video, tmp_path):
    out = tmp_path / "out"
    p = _popen_infer(long_video, out)
    _wait_for_spool(out, p)
    p.send_signal(sig)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == code, stderr[-2000:]
    assert "Traceback" not in stderr and "stopped early: stopped by " + sig.name in stderr
    t = json.load(open(out / "timing.json"))
    assert t["stopped_early"] and t["stop_reason"].startswith(f"stopped by {sig.name}") and 0 < t["frames"] < 3000
    assert json.loads(stdout.strip().splitlines()[-1])["stopped_early"] is True
    res = json.load(open(out / "results.json"))
    assert all(len(r["segmentations"]) == t["frames"] for r in res)
    assert sorted(os.listdir(out)) == ["overlay.mp4", "results.json", "timing.json"]   # no spool, no temp files


def test_killed_run_leftovers_removed_by_next_run(long_video, assets, tmp_path):
    out = tmp_path / "out"
    p = _popen_infer(long_video, out)
    _wait_for_spool(out, p)
    p.kill()
    p.communicate(timeout=30)
    left = [n for n in os.listdir(out) if n.startswith(".spool-") or n.startswith(".overlay.mp4.")]
    assert any(n.startswith(".spool-") for n in left) and any(n.startswith(".overlay.mp4.") for n in left), left
    assert main(["--backend", "fake", "--video", assets["video"], "--output", str(out), "--no-progress"]) == 0
    assert sorted(os.listdir(out)) == ["overlay.mp4", "results.json", "timing.json"]


def test_truncated_video_says_so_and_exits_4(tmp_path, capsys):
    full = make_video(str(tmp_path / "full.avi"), 40)
    data = open(full, "rb").read()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[: len(data) // 2])                     # the AVI header still announces 40 frames
    out = tmp_path / "out"
    rc = main(["--backend", "fake", "--video", str(cut), "--output", str(out), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 4, err
    t = json.load(open(out / "timing.json"))
    assert t["stopped_early"] and 0 < t["frames"] < 40 and "of the 40 frames" in t["stop_reason"]
    assert "warning: stopped early" in err


def test_unreadable_frame_in_folder_stops_early(tmp_path, capsys):
    import cv2
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(8):
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((32, 32, 3), 20 * i, np.uint8))
    (folder / "003.png").write_bytes(b"not a png")
    out = tmp_path / "out"
    rc = main(["--backend", "fake", "--video", str(folder), "--output", str(out), "--no-progress"])
    assert rc == 4, capsys.readouterr().err
    t = json.load(open(out / "timing.json"))
    assert t["frames"] == 3 and "003.png" in t["stop_reason"]


def test_no_overlay_rerun_removes_older_overlay(assets, tmp_path):
    out = tmp_path / "out"
    args = ["--backend", "fake", "--video", assets["video"], "--output", str(out), "--no-progress"]
    assert main(args + ["--save-pngs"]) == 0
    assert (out / "overlay.mp4").exists() and (out / "masks").is_dir()
    assert main(args + ["--no-overlay"]) == 0
    assert sorted(os.listdir(out)) == ["results.json", "timing.json"]


def test_failed_rerun_keeps_the_older_outputs(assets, tmp_path):
    out = tmp_path / "out"
    args = ["--backend", "fake", "--video", assets["video"], "--output", str(out), "--no-progress"]
    assert main(args) == 0
    before = snapshot(str(out))
    broken = make_model_dir(str(tmp_path / "nan"), nan_in="pred_masks")
    assert main(["--model", broken, "--video", assets["video"], "--output", str(out), "--no-progress"]) == 3
    assert snapshot(str(out)) == before


# NaN model outputs
@pytest.mark.parametrize("name,stage", [("pred_masks", "decoder"), ("memory", "encoder")])
def test_non_finite_outputs_exit_3_naming_the_stage(name, stage, assets, tmp_path, capsys):
    model = make_model_dir(str(tmp_path / "m"), nan_in=name)
    rc = _infer(model, assets["video"], tmp_path / "out")
    err = capsys.readouterr().err
    assert rc == 3, err
    assert f"the {stage} produced non-finite values: {name}" in err
    assert not (tmp_path / "out" / "results.json").exists()


# a 1x1 video and the overlay writer
def test_1x1_video_hints_no_overlay(tmp_path, capsys):
    import cv2
    folder = tmp_path / "tiny"
    folder.mkdir()
    for i in range(5):
        cv2.imwrite(str(folder / f"{i}.png"), np.full((1, 1, 3), 40 * i, np.uint8))
    args = ["--backend", "fake", "--video", str(folder), "--output", str(tmp_path / "out"), "--no-progress"]
    assert main(args) == 2
    assert "--no-overlay" in capsys.readouterr().err
    assert main(args + ["--no-overlay"]) == 0
