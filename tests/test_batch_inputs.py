"""runtime.batch inputs and output folder, without a model: datasets, folders, list files, keys,
frame lists, bad input (one-line errors, exit status 2), the output lock and partial folders."""
import json
import os

import cv2
import numpy as np
import pytest

from runtime.batch import BatchInputError, discover_videos
from runtime.batch.__main__ import main as batch_main
from runtime.batch.inputs import VideoItem
from runtime.batch.store import BatchStore
from runtime.batch.worker import parse_run_args
from runtime.errors import VideoError
from runtime.video import FrameListSource


def _frames(folder, n, h=24, w=32, start=0):
    os.makedirs(folder, exist_ok=True)
    names = []
    for t in range(n):
        name = f"{(start + t) * 5:05d}.jpg"
        img = np.full((h, w, 3), 10 * t, np.uint8)
        cv2.imwrite(os.path.join(folder, name), img)
        names.append(name)
    return names


def _dataset(root, videos, ann="val.json"):
    """videos: {folder name: (video id, frames)} -> YouTube-VIS layout under root."""
    entries = []
    for name, (vid, n) in videos.items():
        names = _frames(os.path.join(root, "JPEGImages", name), n)
        entries.append({"id": vid, "width": 32, "height": 24, "length": n,
                        "file_names": [f"{name}/{x}" for x in names]})
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    path = os.path.join(root, "annotations", ann)
    with open(path, "w") as f:
        json.dump({"videos": entries, "annotations": [], "categories": [{"id": 1, "name": "x"}]}, f)
    return path


def test_dataset_layout_ids_and_frame_lists(tmp_path):
    gt = _dataset(str(tmp_path / "ds"), {"b_vid": (17, 3), "a_vid": (4, 2)})
    for spec in (str(tmp_path / "ds"), gt):
        items, dataset = discover_videos(spec)
        assert dataset == gt
        assert [(i.key, i.video_id, len(i.frames)) for i in items] == [("b_vid", 17, 3), ("a_vid", 4, 2)]
    src = items[0].open()
    frames = list(src)
    assert len(frames) == 3 and [int(f[0, 0, 0]) for f in frames] == [0, 10, 20] and src.size == (24, 32)
    assert src.frame_count == 3 and src.name == "b_vid"
    assert len(list(items[0].open(max_frames=2))) == 2
    # frames listed in the JSON are used, not the folder listing (YouTube-VIS lists every 5th frame)
    os.remove(items[1].frames[1])
    with pytest.raises(VideoError, match="1 of 2 frames not found"):
        items[1].open()
    # a second annotation file makes the folder ambiguous
    _dataset(str(tmp_path / "ds"), {"c": (1, 1)}, ann="train.json")
    with pytest.raises(BatchInputError, match="holds 2 annotation files"):
        discover_videos(str(tmp_path / "ds"))
    # frames elsewhere: --frames-root
    gt2 = str(tmp_path / "elsewhere.json")
    with open(gt2, "w") as f:
        json.dump({"videos": [{"id": 1, "file_names": ["b_vid/00000.jpg"]}]}, f)
    with pytest.raises(BatchInputError, match="pass --frames-root"):
        discover_videos(gt2)
    items, _ = discover_videos(gt2, frames_root=str(tmp_path / "ds" / "JPEGImages"))
    assert items[0].frames[0].endswith(os.path.join("ds", "JPEGImages", "b_vid", "00000.jpg"))


def test_frame_list_source_errors(tmp_path):
    with pytest.raises(VideoError, match="lists no frames"):
        FrameListSource([], name="v")
    names = _frames(str(tmp_path / "v"), 3)
    bad = tmp_path / "v" / names[1]
    bad.write_bytes(b"not a jpeg")
    src = FrameListSource([str(tmp_path / "v" / n) for n in names], name="v")
    with pytest.raises(VideoError, match="cannot decode image"):
        list(src)


def test_folder_and_list_inputs_unique_keys(tmp_path):
    folder = tmp_path / "videos"
    _frames(str(folder / "frames_clip"), 2)
    (folder / "a.mp4").write_bytes(b"x")
    (folder / "notes.txt").write_text("not a video")
    os.makedirs(folder / "empty_dir")
    items, dataset = discover_videos(str(folder))
    assert dataset is None
    assert [(i.key, i.video_id, os.path.basename(i.source)) for i in items] == [
        ("a.mp4", 1, "a.mp4"), ("frames_clip", 2, "frames_clip")]
    lst = tmp_path / "list.txt"
    os.makedirs(tmp_path / "cam2")
    (tmp_path / "cam2" / "a.mp4").write_bytes(b"x")
    lst.write_text("# comment\nvideos/a.mp4\n\ncam2/a.mp4\n" + str(folder / "frames_clip") + "\n")
    items, _ = discover_videos(str(lst))
    assert [(i.key, i.video_id) for i in items] == [("a.mp4", 1), ("a.mp4__2", 2), ("frames_clip", 3)]
    assert items[1].source == str(tmp_path / "cam2" / "a.mp4")
    with pytest.raises(BatchInputError, match="no videos in"):
        discover_videos(str(folder / "empty_dir"))
    with pytest.raises(BatchInputError, match="--videos not found"):
        discover_videos(str(tmp_path / "nope"))


def test_run_args_are_runtime_infer_flags():
    ns = parse_run_args(["--model", "m", "--score-thr", "0.2", "--no-overlay"], threads=3)
    assert ns.score_thr == 0.2 and ns.no_overlay and ns.threads == 3 and ns.backend == "ort"
    assert parse_run_args(["--model", "m", "--threads", "2"], threads=3).threads == 2   # explicit wins
    with pytest.raises(BatchInputError, match="--video is set per video"):
        parse_run_args(["--model", "m", "--video", "x.mp4"])
    with pytest.raises(BatchInputError, match="unrecognized arguments: --bogus"):
        parse_run_args(["--model", "m", "--bogus"])
    with pytest.raises(BatchInputError, match="--model DIR is required"):
        parse_run_args([])


def test_cli_bad_input_exit_2(tmp_path, capsys):
    gt = _dataset(str(tmp_path / "ds"), {"v": (1, 2)})
    out = str(tmp_path / "out")
    assert batch_main(["--videos", str(tmp_path / "nope"), "--output", out, "--model", "m"]) == 2
    assert capsys.readouterr().err.strip() == f"error: --videos not found: {tmp_path / 'nope'}"
    assert batch_main(["--videos", gt, "--output", out, "--model", str(tmp_path / "no_model")]) == 2
    assert "model directory not found" in capsys.readouterr().err
    assert batch_main(["--videos", gt, "--output", out, "--model", "m", "--workers", "0"]) == 2
    assert "--workers must be >= 1" in capsys.readouterr().err
    assert batch_main(["--videos", gt, "--output", out, "--model", "m", "--executor", "local",
                       "--address", "auto"]) == 2
    assert "--address needs the Ray executor" in capsys.readouterr().err
    assert batch_main(["--videos", str(tmp_path / "ds" / "JPEGImages"), "--output", out, "--model", "m",
                       "--evaluate"]) == 2
    assert "--evaluate without a value needs a dataset" in capsys.readouterr().err


def test_store_lock_partials_and_foreign_folder(tmp_path):
    out = str(tmp_path / "out")
    a = BatchStore(out)
    a.open()
    try:
        os.makedirs(os.path.join(out, "videos", ".partial-v-abc"))
        b = BatchStore(out)
        with pytest.raises(BatchInputError, match="another batch job is writing to"):
            b.open()
        item = VideoItem(key="v", video_id=3, source="/x/v.mp4")
        a.save(item, {"results.json": b"[]\n", "masks/track_1/00000.png": b"png"}, {"worker": 0})
        assert a.is_done(item)
        assert open(os.path.join(out, "videos", "v", "masks", "track_1", "00000.png"), "rb").read() == b"png"
        with pytest.raises(BatchInputError, match="holds the results of another video"):
            a.is_done(VideoItem(key="v", video_id=4, source="/x/v.mp4"))
        assert a.merge_results([item, VideoItem(key="w", video_id=5, source="/x/w.mp4")]) == {
            "videos": 1, "entries": 0, "path": os.path.join(out, "results.json")}
    finally:
        a.close()
    c = BatchStore(out)
    c.open()          # the lock is free again; the partial folder of the "killed" job is removed
    c.close()
    assert sorted(os.listdir(os.path.join(out, "videos"))) == ["v"]
