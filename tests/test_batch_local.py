"""runtime.batch without Ray: the same command runs the videos in local worker processes.

- with Ray made unimportable, `python -m runtime.batch` on a folder of video files falls back to
  local processes; the merged results.json equals runtime.infer on each file one by one; a corrupt
  file is reported (exit status 2) and the rest finish;
- a worker process killed while it holds a video is replaced and the video retried; a video whose
  worker dies every time fails after --max-retries retries, without stopping the others;
- a list file as input; a rerun skips finished videos; a rerun with other options is refused.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap

import cv2
import pytest

from batch_support import (FRAMES, NUM_VIDEOS, ROOT, concat, dataset_videos, infer_reference, load, make_dataset,
                           run_args, shared_tiny)

pytest.importorskip("torch")   # the export of the tiny model

from runtime.batch import BatchSpec, run_batch  # noqa: E402
from runtime.batch.__main__ import main as batch_main  # noqa: E402

NO_RAY = textwrap.dedent(r"""
    import runpy, sys

    class NoRay:
        def find_spec(self, name, path=None, target=None):
            if name == "ray" or name.startswith("ray."):
                raise ImportError(f"ray is blocked in this test ({name})")
            return None

    sys.meta_path.insert(0, NoRay())
    sys.argv = ["python -m runtime.batch"] + sys.argv[1:]
    runpy.run_module("runtime.batch", run_name="__main__", alter_sys=True)
""")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("batch_local")
    model = shared_tiny(tmp_path_factory)
    gt = make_dataset(str(base / "clean"))
    # the same videos as MP4 files (plus one corrupt file) in a folder
    files = base / "files"
    files.mkdir()
    mp4s = []
    for k, (folder, _) in enumerate(dataset_videos(gt)):
        frames = [cv2.imread(os.path.join(folder, f)) for f in sorted(os.listdir(folder))]
        path = str(files / f"clip_{k}.mp4")
        w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (frames[0].shape[1], frames[0].shape[0]))
        for fr in frames:
            w.write(fr)
        w.release()
        mp4s.append(path)
    with open(files / "clip_2b_corrupt.mp4", "wb") as f:
        f.write(b"\x00\x00\x00\x18ftypmp42 truncated garbage" * 4)
    ref_files = infer_reference(model, [(p, k + 1) for k, p in enumerate(mp4s)], str(base / "ref_files"))
    return {"model": model, "files": str(files), "mp4s": mp4s, "ref_files": ref_files}


def test_without_ray_local_processes_folder_of_files_with_a_corrupt_one(setup, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", NO_RAY, "--videos", setup["files"], "--output", str(out), "--workers", "2",
           "--no-progress"] + run_args(setup["model"])
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "failed: clip_2b_corrupt.mp4: VideoError: cannot open video" in r.stderr
    assert "1 of 5 videos failed" in r.stderr.splitlines()[-1]
    short = json.loads(r.stdout.strip().splitlines()[-1])
    assert short["executor"] == "local" and short["failed"] == 1 and short["finished"] == NUM_VIDEOS
    summary = load(out / "summary.json")
    (fail,) = summary["failures"]
    ids = {name: i for i, name in enumerate(sorted(os.listdir(setup["files"])), start=1)}   # ids: sorted names
    assert fail["video"] == "clip_2b_corrupt.mp4" and fail["video_id"] == ids["clip_2b_corrupt.mp4"] == 4
    # the good files (video ids 1, 2, 3, 5): equal to runtime.infer on each file
    merged = load(out / "results.json")
    ref = [dict(e, video_id=ids[f"clip_{k}.mp4"]) for k in range(NUM_VIDEOS) for e in setup["ref_files"][k + 1]]
    assert merged == ref
    assert [len(w["pids"]) for w in summary["per_worker"]] == [1, 1]
    assert summary["frames"] == NUM_VIDEOS * FRAMES


def test_killed_worker_process_retried_and_bounded(setup, tmp_path):
    lst = tmp_path / "videos.txt"
    lst.write_text("\n".join(setup["mp4s"]) + "\n")             # video ids 1..4 = clip_0..clip_3
    once, always = "clip_0.mp4", "clip_2.mp4"
    kills = []

    def on_event(kind, slot=None, item=None, pid=None, attempt=None, **_):
        if kind == "start" and (item.key == always or (item.key == once and attempt == 1)):
            os.kill(pid, signal.SIGKILL)
            kills.append((item.key, slot, pid))

    out = tmp_path / "out"
    summary = run_batch(BatchSpec(videos=str(lst), output=str(out), run_args=run_args(setup["model"]), workers=2,
                                  executor="local", max_retries=1, progress=False), on_event=on_event)
    assert [k for k, _, _ in kills].count(once) == 1 and [k for k, _, _ in kills].count(always) == 2
    assert summary["executor"] == "local" and summary["failed"] == 1 and summary["finished"] == NUM_VIDEOS - 1
    (fail,) = summary["failures"]
    assert fail["video"] == always and fail["attempts"] == 2 and "worker died 2 times" in fail["error"]
    assert "killed by signal 9" in fail["error"]
    deaths = summary["worker_deaths"]
    assert [(d["video"], d["retried"]) for d in deaths].count((once, True)) == 1
    assert [(d["video"], d["retried"]) for d in deaths].count((always, False)) == 1
    assert sum(w["restarts"] for w in summary["per_worker"]) == 3
    assert load(out / "videos" / once / "video.json")["attempt"] == 2
    assert load(out / "results.json") == concat(setup["ref_files"], [1, 2, 4])


def test_list_file_resume_and_changed_options(setup, tmp_path, capsys):
    lst = tmp_path / "videos.txt"
    lst.write_text("# two clips\n" + setup["mp4s"][1] + "\n\n" + os.path.relpath(setup["mp4s"][0], tmp_path) + "\n")
    out = str(tmp_path / "out")
    argv = ["--videos", str(lst), "--output", out, "--workers", "1", "--executor", "local",
            "--no-progress"] + run_args(setup["model"])
    assert batch_main(argv) == 0
    first = capsys.readouterr()
    short = json.loads(first.out.strip().splitlines()[-1])
    assert short["processed"] == 2 and short["skipped_already_done"] == 0
    ref = [dict(e, video_id=1) for e in setup["ref_files"][2]] + [dict(e, video_id=2) for e in setup["ref_files"][1]]
    merged_bytes = open(os.path.join(out, "results.json"), "rb").read()
    assert json.loads(merged_bytes) == ref
    # rerun: nothing left to do, the same merged file
    assert batch_main(argv) == 0
    short = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert short["processed"] == 0 and short["skipped_already_done"] == 2 and short["frames"] == 0
    assert open(os.path.join(out, "results.json"), "rb").read() == merged_bytes
    # other options into the same folder: refused (exit 2), nothing lost
    argv2 = [a if a != "0.05" else "0.2" for a in argv]
    assert batch_main(argv2) == 2
    assert "holds results of another configuration (differs in options)" in capsys.readouterr().err
    assert open(os.path.join(out, "results.json"), "rb").read() == merged_bytes
