"""Synthetic occluded-video generator: determinism, format validity, occlusion labels."""
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from mdqe.config import SYNTHETIC_CLASSES
from mdqe.data import synthetic
from mdqe.data.vis_index import load_vis_index
from mdqe.evaluation import OCCLUSION_SCORES, evaluate
from mdqe.evaluation.rle import decode_rles

KW = dict(num_frames=6, height=96, width=128)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("syn")
    path = synthetic.generate_split(str(root), 4, seed=5, split="train", **KW)
    return root, path


def test_same_seed_gives_identical_bytes(dataset, tmp_path):
    root, path = dataset
    path2 = synthetic.generate_split(str(tmp_path), 4, seed=5, split="train", **KW)
    assert open(path, "rb").read() == open(path2, "rb").read()
    frame = "JPEGImages/train_0002/00003.jpg"
    assert (root / frame).read_bytes() == (tmp_path / frame).read_bytes()
    path3 = synthetic.generate_split(str(tmp_path / "other"), 4, seed=6, split="train", **KW)
    assert open(path, "rb").read() != open(path3, "rb").read()


def test_format_loads_and_gt_as_results_scores_ap_one(dataset):
    root, path = dataset
    data = json.load(open(path))
    assert [c["id"] for c in data["categories"]] == [1, 2, 3, 4, 5]
    assert tuple(c["name"] for c in data["categories"]) == SYNTHETIC_CLASSES
    for v in data["videos"]:
        assert v["length"] == len(v["file_names"]) == 6
        for fn in v["file_names"]:
            assert (root / "JPEGImages" / fn).is_file()
    for a in data["annotations"]:
        for key in ("segmentations", "bboxes", "areas", "occlusion"):
            assert len(a[key]) == 6
        for seg, box, area, occ in zip(a["segmentations"], a["bboxes"], a["areas"], a["occlusion"]):
            assert (seg is None) == (box is None) == (area is None) == (occ is None)
            if seg is not None:
                assert isinstance(seg["counts"], str) and seg["size"] == [96, 128]
                rle = {"size": seg["size"], "counts": seg["counts"].encode()}
                assert area == mask_utils.area(rle)
                assert box == pytest.approx(mask_utils.toBbox(rle).tolist())
                assert occ in OCCLUSION_SCORES
    index = load_vis_index(path, str(root / "JPEGImages"))
    assert len(index.videos) == 4 and index.category_ids == [1, 2, 3, 4, 5]
    assert sum(len(v.instances) for v in index.videos) == len(data["annotations"]) > 0
    results = [{"video_id": a["video_id"], "category_id": a["category_id"], "score": 1.0,
                "segmentations": a["segmentations"]} for a in data["annotations"]]
    m = evaluate(path, results)
    assert m["AP"] == pytest.approx(1.0) and m["AR10"] == pytest.approx(1.0)
    assert "AP_so" in m and all(m[k] in (-1.0, pytest.approx(1.0)) for k in ("AP_so", "AP_mo", "AP_ho"))


def test_occlusion_labels_follow_visible_fraction():
    rng = np.random.default_rng([11, 0])
    video = synthetic.render_video(rng, 96, 128, 8)
    anns = synthetic.video_annotations(video)
    K, F = video.full_area.shape
    assert video.frames.shape == (F, 96, 128, 3) and video.frames.dtype == np.uint8
    # visible masks of different objects never overlap
    assert video.visible.sum(axis=0).max() <= 1
    kept = [k for k in range(K) if (video.visible[k].sum(axis=(1, 2)) >= synthetic.MIN_VISIBLE_PIXELS).any()]
    assert len(anns) == len(kept)
    seen = set()
    for ann, k in zip(anns, kept):
        assert ann["category_id"] == video.category_ids[k]
        for f in range(F):
            vis = video.visible[k, f].sum()
            if ann["segmentations"][f] is None:
                assert vis < synthetic.MIN_VISIBLE_PIXELS or video.full_area[k, f] == 0
                continue
            dec = decode_rles([{"size": [96, 128], "counts": ann["segmentations"][f]["counts"].encode()}])[0]
            assert np.array_equal(dec, video.visible[k, f])
            frac = 1 - vis / video.full_area[k, f]
            assert ann["occlusion"][f] == synthetic.occlusion_label(frac)
            seen.add(ann["occlusion"][f])
    assert "no_occlusion" in seen


def test_occlusion_label_thresholds():
    assert synthetic.occlusion_label(0.0) == "no_occlusion"
    assert synthetic.occlusion_label(0.02) == "no_occlusion"
    assert synthetic.occlusion_label(0.3) == "slight_occlusion"
    assert synthetic.occlusion_label(0.5) == "slight_occlusion"
    assert synthetic.occlusion_label(0.51) == "severe_occlusion"


def test_occlusion_happens_across_a_small_set():
    # Over a handful of videos the generator produces all three labels (objects cross).
    labels = set()
    for i in range(4):
        video = synthetic.render_video(np.random.default_rng([0, i]), 96, 128, 12)
        for a in synthetic.video_annotations(video):
            labels.update(x for x in a["occlusion"] if x)
    assert labels == set(OCCLUSION_SCORES)


def test_cli_writes_train_and_val_splits(tmp_path, capsys):
    assert synthetic.main(["--output", str(tmp_path), "--videos", "2", "--frames", "3", "--height", "64",
                           "--width", "96", "--seed", "1", "--val-videos", "1"]) == 0
    train = json.load(open(tmp_path / "annotations" / "train.json"))
    val = json.load(open(tmp_path / "annotations" / "val.json"))
    assert len(train["videos"]) == 2 and len(val["videos"]) == 1
    assert val["info"]["seed"] == 2 and train["info"]["seed"] == 1
    assert val["videos"][0]["file_names"][0].startswith("val_0000/")
    assert not list(tmp_path.rglob(".tmp_*"))
    with pytest.raises(ValueError):
        synthetic.generate_split(str(tmp_path), 0)
    paths = synthetic.make_splits(str(tmp_path / "ms"), 1, 1, seed=4, num_frames=2, height=48, width=64)
    assert json.load(open(paths["val"]))["info"]["seed"] == 5
