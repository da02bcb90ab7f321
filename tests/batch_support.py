"""Shared pieces of the runtime.batch tests: the exported tiny model, synthetic videos, references.

The model is weights/tiny_synthetic.safetensors exported by export/to_onnx.py (onnx form, ~5 s);
the videos come from mdqe.data.synthetic (YouTube-VIS layout), small (96x160, 8 frames) so that
one video takes about a second on the 2-core machine. The reference for every comparison is
``python -m runtime.infer`` run on each video one by one, its results.json files concatenated.
"""
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_VIDEOS, FRAMES, HEIGHT, WIDTH = 4, 8, 96, 160


def export_tiny(out: str) -> str:
    r = subprocess.run([sys.executable, os.path.join(ROOT, "export", "to_onnx.py"), "--config", "checkpoint",
                        "--weights", os.path.join(ROOT, "weights", "tiny_synthetic.safetensors"), "--output", out,
                        "--msda", "onnx", "--height", "96", "--width", "160", "--no-verify", "--no-progress",
                        "--threads", "1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return out


def shared_tiny(tmp_path_factory) -> str:
    """The exported model, made once per test session (both batch test modules use it)."""
    out = tmp_path_factory.getbasetemp() / "batch_tiny_model"
    if not (out / "export.json").is_file():
        export_tiny(str(out))
    return str(out)


def make_dataset(root: str, num_videos: int = NUM_VIDEOS) -> str:
    """Synthetic YouTube-VIS layout under ``root``; returns the annotation JSON."""
    from mdqe.data.synthetic import generate_split
    return generate_split(root, num_videos=num_videos, num_frames=FRAMES, height=HEIGHT, width=WIDTH, seed=1000,
                          split="val")


def copy_dataset(src_root: str, dst_root: str) -> str:
    shutil.copytree(src_root, dst_root)
    return os.path.join(dst_root, "annotations", "val.json")


def run_args(model: str):
    """Per-video flags used everywhere (threads fixed: the reference and the workers compute the same)."""
    return ["--model", model, "--no-overlay", "--score-thr", "0.05", "--threads", "1"]


def infer_reference(model: str, videos, out_root: str):
    """``runtime.infer`` on each (video path, video id) in turn; returns {video id: its results entries}."""
    from runtime.infer import main as infer_main
    per_video = {}
    for k, (path, vid) in enumerate(videos):
        out = os.path.join(out_root, f"ref_{k}")
        rc = infer_main(run_args(model) + ["--video", path, "--output", out, "--video-id", str(vid), "--no-progress"])
        assert rc == 0
        with open(os.path.join(out, "results.json")) as f:
            per_video[vid] = json.load(f)
        assert per_video[vid], f"no results for video {vid}: the comparison would be empty"
    return per_video


def concat(per_video: dict, ids) -> list:
    """The reference merged file: the videos' entries one after the other, in ``ids`` order."""
    return [e for vid in ids for e in per_video[vid]]


def dataset_videos(gt_json: str):
    """[(frames folder, video id)] of a synthetic dataset, in file order."""
    with open(gt_json) as f:
        videos = json.load(f)["videos"]
    root = os.path.join(os.path.dirname(os.path.dirname(gt_json)), "JPEGImages")
    return [(os.path.join(root, os.path.dirname(v["file_names"][0])), v["id"]) for v in videos]


def load(path: str):
    with open(path) as f:
        return json.load(f)


def corrupt_frame(gt_json: str, video_index: int, frame: int) -> str:
    """Overwrite one JPEG of a dataset video with bytes no decoder accepts; returns the video's key."""
    v = load(gt_json)["videos"][video_index]
    root = os.path.join(os.path.dirname(os.path.dirname(gt_json)), "JPEGImages")
    with open(os.path.join(root, v["file_names"][frame]), "wb") as f:
        f.write(b"\xff\xd8 this is not a JPEG " * 8)
    return os.path.dirname(v["file_names"][0])
