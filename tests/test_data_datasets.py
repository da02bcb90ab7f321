"""Clip datasets, clip transforms and batching on a small synthetic set."""
import json

import cv2
import numpy as np
import pytest
import torch

from mdqe.config import get_config
from mdqe.data import synthetic
from mdqe.data.collate import collate_clips, make_sample
from mdqe.data.datasets import COCOPseudoVideoDataset, VISClipDataset, build_clip_dataset, load_coco_images
from mdqe.data.transforms import ClipAugmentation, pseudo_video, sample_frame_indices
from mdqe.data.vis_index import load_vis_index

CFG = get_config("tiny")
MEAN = torch.tensor(CFG.pixel_mean).view(1, 3, 1, 1)
STD = torch.tensor(CFG.pixel_std).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("synclips")
    synthetic.generate_split(str(r), 3, num_frames=14, height=80, width=112, seed=2, split="train")
    return r


def check_sample(s, T=4):
    img, t = s["images"], s["targets"]
    assert img.dtype == torch.float32 and img.shape[0] == T and img.shape[1] == 3
    H, W = img.shape[-2:]
    assert H % 32 == 0 and W % 32 == 0
    K = t["labels"].shape[0]
    assert t["labels"].dtype == t["ids"].dtype == torch.int64 and t["ids"].shape == (K,)
    assert t["masks"].shape == (K, T, H, W) and t["masks"].dtype == torch.bool
    assert t["valid"].shape == (K, T) and torch.equal(t["valid"], t["masks"].flatten(2).any(2))
    assert t["valid"].any(1).all()  # every kept instance is present in a sampled frame
    assert t["boxes"].shape == (K, T, 4) and t["boxes"].dtype == torch.float32
    assert (t["boxes"][~t["valid"]] == 0).all()
    ih, iw = t["image_size"]
    assert not t["masks"][..., ih:, :].any() and not t["masks"][..., iw:].any()
    assert (img[..., ih:, :] == 0).all() and (img[..., iw:] == 0).all()
    for k, f in zip(*torch.nonzero(t["valid"], as_tuple=True)):  # boxes recomputed from masks
        ys, xs = torch.nonzero(t["masks"][k, f], as_tuple=True)
        x0, x1, y0, y1 = xs.min().item(), xs.max().item() + 1, ys.min().item(), ys.max().item() + 1
        want = [(x0 + x1) / 2 / W, (y0 + y1) / 2 / H, (x1 - x0) / W, (y1 - y0) / H]
        assert t["boxes"][k, f].tolist() == pytest.approx(want)
    fi = t["frame_indices"]
    assert fi.shape == (T,) and torch.all(fi[1:] >= fi[:-1])


def test_training_samples_are_well_formed(root):
    ds = build_clip_dataset(str(root), "tiny", train=True)
    assert len(ds) == 3
    torch.manual_seed(0)
    for i in range(3):
        s = ds[i]
        check_sample(s)
        assert (s["targets"]["labels"] >= 0).all() and (s["targets"]["labels"] < 5).all()
        assert s["targets"]["orig_size"] == (80, 112)
        fi = s["targets"]["frame_indices"]
        assert fi.max() - fi.min() < 10  # sampled within a range of 10 frames
    b = collate_clips([ds[0], ds[1]])
    assert b["images"].shape[:3] == (2, 4, 3) and len(b["targets"]) == 2


def test_unaugmented_sample_reproduces_frames_and_masks(root):
    index = load_vis_index(str(root / "annotations" / "train.json"), str(root / "JPEGImages"))
    ds = VISClipDataset(index, "tiny", shorter_side=80, max_size=1000, deterministic=True, seed=1)
    s = ds[1]
    assert torch.equal(s["images"], ds[1]["images"])  # deterministic mode
    check_sample(s)
    t = s["targets"]
    video = index.videos[1]
    for j, f in enumerate(t["frame_indices"].tolist()):
        rgb = cv2.cvtColor(cv2.imread(video.frame_paths[f]), cv2.COLOR_BGR2RGB)
        back = (s["images"][j:j + 1] * STD + MEAN)[0, :, :80, :112].permute(1, 2, 0)
        assert torch.allclose(back, torch.from_numpy(rgb).float(), atol=1e-3)
    by_id = {inst.id: inst for inst in video.instances}
    for k, iid in enumerate(t["ids"].tolist()):
        want = index.decode(video, by_id[iid], t["frame_indices"].tolist())
        assert np.array_equal(t["masks"][k, :, :80, :112].numpy(), want)


def test_flip_and_colour_apply_to_all_frames_alike():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 20, 30, 3), dtype=np.uint8)
    masks = rng.random((2, 3, 20, 30)) < 0.3
    aug = ClipAugmentation(shorter_sides=(20,), max_size=1000, flip_prob=1.0, brightness=0.0, contrast=0.0)
    f2, m2 = aug(np.random.default_rng(1), frames, masks)
    assert np.array_equal(f2, frames[:, :, ::-1]) and np.array_equal(m2, masks[..., ::-1])
    aug = ClipAugmentation(shorter_sides=(40,), max_size=1000, flip_prob=0.0, brightness=0.3, contrast=0.0)
    f3, m3 = aug(np.random.default_rng(2), frames, masks)
    assert f3.shape == (3, 40, 60, 3) and m3.shape == (2, 3, 40, 60)
    assert np.array_equal(m3, masks.repeat(2, axis=2).repeat(2, axis=3))  # nearest x2
    up = np.stack([cv2.resize(f, (60, 40), interpolation=cv2.INTER_LINEAR) for f in frames]).astype(float)
    ratio = f3.astype(float).sum(axis=(1, 2, 3)) / up.sum(axis=(1, 2, 3))
    assert np.ptp(ratio) < 0.02  # one brightness factor for the whole clip


def test_sample_frame_indices_window_and_short_videos():
    rng = np.random.default_rng(0)
    for _ in range(50):
        idx = sample_frame_indices(rng, 40, 4, 10)
        assert idx == sorted(idx) and len(set(idx)) == 4 and idx[-1] - idx[0] < 10
    idx = sample_frame_indices(rng, 2, 4, 10)
    assert len(idx) == 4 and set(idx) <= {0, 1}


def test_collate_pads_and_rescales_boxes():
    def sample(h, w):
        frames = np.full((2, h, w, 3), 128, np.uint8)
        masks = np.zeros((1, 2, h, w), bool)
        masks[0, :, :h // 2, :w // 2] = True
        return make_sample(frames, masks, [1], [7], "tiny", 0, [0, 1], (h, w))
    b = collate_clips([sample(32, 64), sample(64, 32)])
    assert b["images"].shape == (2, 2, 3, 64, 64)
    assert (b["images"][0, :, :, 32:] == 0).all()
    # each frame's size before padding, for the model's padding masks
    assert b["valid_hw"].tolist() == [[[32, 64]] * 2, [[64, 32]] * 2]
    t0 = b["targets"][0]
    assert t0["masks"].shape == (1, 2, 64, 64)
    assert t0["boxes"][0, 0].tolist() == pytest.approx([0.25, 0.125, 0.5, 0.25])  # x 0..32, y 0..16 of 64x64
    with pytest.raises(ValueError):
        collate_clips([])


def test_coco_pseudo_video(tmp_path):
    h, w = 100, 140
    img = np.random.default_rng(3).integers(0, 256, (h, w, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.jpg"), img)
    # an object inside the central [0.4, 0.6] region is inside every crop of relative size >= 0.6
    poly = [62.0, 45.0, 78.0, 45.0, 78.0, 55.0, 62.0, 55.0]
    coco = {"images": [{"id": 3, "file_name": "a.jpg", "height": h, "width": w}],
            "categories": [{"id": 18, "name": "dog"}, {"id": 1, "name": "person"}],
            "annotations": [{"id": 9, "image_id": 3, "category_id": 18, "iscrowd": 0, "segmentation": [poly]},
                            {"id": 10, "image_id": 3, "category_id": 1, "iscrowd": 1,
                             "segmentation": {"size": [h, w], "counts": [0, h * w]}}]}
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    images = load_coco_images(str(tmp_path / "coco.json"), str(tmp_path))
    assert len(images) == 1 and [a[:2] for a in images[0]["anns"]] == [(1, 9)]  # crowd dropped, dog -> label 1
    ds = COCOPseudoVideoDataset(images, "tiny", shorter_side=h, max_size=1000, deterministic=True)
    s = ds[0]
    check_sample(s)
    area = s["targets"]["masks"][0].flatten(1).sum(1).float()
    assert (area[1:] >= area[0] * 0.95).all() and (area[1:] <= area[0] / 0.36 * 1.1).all()
    frames, masks = pseudo_video(np.random.default_rng(0), img, np.zeros((0, h, w), bool), 3)
    assert frames.shape == (3, h, w, 3) and masks.shape == (0, 3, h, w) and np.array_equal(frames[0], img)
