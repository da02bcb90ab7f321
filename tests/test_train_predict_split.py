"""mdqe.engine.predict_split: frame folders are checked against the annotation, and the PyTorch
path gets a runtime ModelSpec that matches the config."""
import os

import pytest

from mdqe.config import get_config
from mdqe.engine.predict_split import torch_spec_from_config, video_frame_dir


def test_video_frame_dir_checks_files(tmp_path):
    d = tmp_path / "JPEGImages" / "v1"
    d.mkdir(parents=True)
    for n in ("00000.jpg", "00001.jpg"):
        (d / n).write_bytes(b"x")
    v = {"id": 1, "file_names": ["v1/00000.jpg", "v1/00001.jpg"]}
    assert video_frame_dir(str(tmp_path / "JPEGImages"), v) == str(d)
    (d / "00002.jpg").write_bytes(b"x")  # an extra frame the annotation does not list
    with pytest.raises(ValueError, match="differ"):
        video_frame_dir(str(tmp_path / "JPEGImages"), v)
    with pytest.raises(ValueError, match="several folders"):
        video_frame_dir(str(tmp_path / "JPEGImages"), {"id": 2, "file_names": ["a/0.jpg", "b/1.jpg"]})


def test_torch_spec_from_config():
    pytest.importorskip("runtime.model_dir")
    cfg = get_config("tiny")
    spec = torch_spec_from_config(cfg, "/x/w.safetensors")
    assert spec.num_frames == cfg.num_frames and spec.num_queries == cfg.num_grid_queries
    assert spec.num_classes == len(spec.class_names) == cfg.num_classes
    assert spec.preprocess.shorter_side == cfg.test_shorter_side and spec.preprocess.max_size == cfg.test_max_size
    assert spec.weights["source"] == os.path.abspath("/x/w.safetensors")
