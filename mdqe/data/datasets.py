"""Torch datasets of training clips: YouTube-VIS / OVIS videos and COCO images as pseudo-videos.

Both return samples as defined in ``mdqe.data.collate`` (docs/INTERFACES.md section 4).
Randomness: with ``deterministic=False`` (training) each call draws its seed from torch's
global generator (seeded per process / DataLoader worker, so runs are reproducible under
``torch.manual_seed``); with ``deterministic=True`` clip ``i`` is always the same
(seeded by ``(seed, i)``).
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional, Sequence

import cv2
import numpy as np
import torch

from mdqe.config import get_config
from mdqe.evaluation.rle import FormatError, decode_rles, to_rle

from .collate import collate_clips, make_sample  # noqa: F401  (collate_clips re-exported)
from .transforms import (ClipAugmentation, default_augmentation, pseudo_video, resize_clip, resize_shape,
                         sample_frame_indices)
from .vis_index import VISIndex, find_split, load_vis_index


def read_rgb(path: str) -> np.ndarray:
    """[H, W, 3] uint8 RGB image; FileNotFoundError naming the path if unreadable."""
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class _ClipBase(torch.utils.data.Dataset):
    def __init__(self, cfg, num_frames: Optional[int], augment: Optional[ClipAugmentation],
                 shorter_side: Optional[int], max_size: Optional[int], deterministic: bool, seed: int):
        self.cfg = get_config(cfg)
        self.num_frames = int(num_frames or self.cfg.num_frames)
        self.augment = augment
        self.shorter_side = int(shorter_side or self.cfg.test_shorter_side)
        self.max_size = int(max_size or self.cfg.test_max_size)
        self.deterministic = deterministic
        self.seed = seed

    def _rng(self, index: int) -> np.random.Generator:
        if self.deterministic:
            return np.random.default_rng([self.seed, index])
        return np.random.default_rng(int(torch.randint(0, 2 ** 62, ()).item()))

    def _transform(self, rng, frames: np.ndarray, masks: np.ndarray):
        if self.augment is not None:
            return self.augment(rng, frames, masks)
        return resize_clip(frames, masks, resize_shape(frames.shape[1], frames.shape[2],
                                                       self.shorter_side, self.max_size))


class VISClipDataset(_ClipBase):
    """Clips of ``num_frames`` frames (default cfg.num_frames) from a YouTube-VIS / OVIS index.

    Item ``i`` takes video ``i % len(videos)``; ``clips_per_video`` repeats the video list.
    Frames are sampled by ``sample_frame_indices`` (within ``sampling_range``); up to
    ``max_tries`` clips are drawn until one has at least ``min_instances`` instances.
    """

    def __init__(self, index: VISIndex, cfg="tiny", num_frames: Optional[int] = None, sampling_range: int = 10,
                 augment: Optional[ClipAugmentation] = None, shorter_side: Optional[int] = None,
                 max_size: Optional[int] = None, clips_per_video: int = 1, min_instances: int = 1,
                 max_tries: int = 10, deterministic: bool = False, seed: int = 0):
        super().__init__(cfg, num_frames, augment, shorter_side, max_size, deterministic, seed)
        if not index.videos:
            raise ValueError("the annotation file has no videos")
        self.index = index
        self.sampling_range = sampling_range
        self.clips_per_video = clips_per_video
        self.min_instances = min_instances
        self.max_tries = max_tries

    @property
    def category_ids(self) -> List[int]:
        return self.index.category_ids

    def __len__(self) -> int:
        return len(self.index.videos) * self.clips_per_video

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < len(self):
            raise IndexError(i)
        video = self.index.videos[i % len(self.index.videos)]
        rng = self._rng(i)
        for _ in range(self.max_tries):
            frames_idx = sample_frame_indices(rng, video.length, self.num_frames, self.sampling_range)
            present = [inst for inst in video.instances
                       if any(inst.segmentations[f] for f in frames_idx)]
            if len(present) >= self.min_instances:
                break
        frames = np.stack([read_rgb(video.frame_paths[f]) for f in frames_idx])
        if frames.shape[1:3] != (video.height, video.width):
            raise FormatError(f"video {video.id}: frames are {frames.shape[2]}x{frames.shape[1]}, "
                              f"the annotation says {video.width}x{video.height}")
        masks = (np.stack([self.index.decode(video, inst, frames_idx) for inst in present]) if present
                 else np.zeros((0, len(frames_idx), video.height, video.width), bool))
        frames, masks = self._transform(rng, frames, masks)
        return make_sample(frames, masks, [p.label for p in present], [p.id for p in present], self.cfg,
                           video.id, frames_idx, (video.height, video.width))


def load_coco_images(json_path: str, image_root: str, category_map: Optional[Dict[int, int]] = None) -> List[dict]:
    """COCO instances JSON -> list of {id, path, height, width, anns: [(label, ann_id, segmentation)]}.

    category_map: COCO category id -> 0-based label (ids not in it are dropped);
    default: the file's category ids sorted ascending -> 0..C-1. Crowd annotations are dropped.
    """
    import json
    if not os.path.isfile(json_path):
        raise FileNotFoundError(f"annotation file not found: {json_path}")
    with open(json_path, "r", encoding="utf-8") as f:
        data = json.load(f)
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise FormatError(f"{json_path}: missing top-level key {key!r}")
    if category_map is None:
        category_map = {c: i for i, c in enumerate(sorted(int(c["id"]) for c in data["categories"]))}
    images = {int(im["id"]): {"id": int(im["id"]), "path": os.path.join(image_root, im["file_name"]),
                              "height": int(im["height"]), "width": int(im["width"]), "anns": []}
              for im in data["images"]}
    for a in data["annotations"]:
        if a.get("iscrowd", 0) or int(a["category_id"]) not in category_map:
            continue
        if int(a["image_id"]) not in images:
            raise FormatError(f"{json_path}: annotation {a.get('id')} has unknown image_id {a['image_id']}")
        images[int(a["image_id"])]["anns"].append((category_map[int(a["category_id"])], int(a["id"]),
                                                   a["segmentation"]))
    return [images[k] for k in sorted(images) if images[k]["anns"]]


class COCOPseudoVideoDataset(_ClipBase):
    """COCO images as clips: the image plus ``num_frames - 1`` crops of relative size [0.6, 1]
    resized back (``pseudo_video``), then the clip augmentation. ``images`` from load_coco_images."""

    def __init__(self, images: List[dict], cfg="tiny", num_frames: Optional[int] = None,
                 augment: Optional[ClipAugmentation] = None, shorter_side: Optional[int] = None,
                 max_size: Optional[int] = None, min_scale: float = 0.6, deterministic: bool = False, seed: int = 0):
        super().__init__(cfg, num_frames, augment, shorter_side, max_size, deterministic, seed)
        if not images:
            raise ValueError("no COCO images with annotations")
        self.images = images
        self.min_scale = min_scale

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        rec = self.images[i]
        rng = self._rng(i)
        image = read_rgb(rec["path"])
        h, w = image.shape[:2]
        masks = np.zeros((len(rec["anns"]), h, w), bool)
        for k, (_, ann_id, seg) in enumerate(rec["anns"]):
            rle = to_rle(seg, h, w, f"image {rec['id']} annotation {ann_id}")
            if rle is not None:
                masks[k] = decode_rles([rle])[0]
        frames, clip_masks = pseudo_video(rng, image, masks, self.num_frames, self.min_scale)
        frames, clip_masks = self._transform(rng, frames, clip_masks)
        return make_sample(frames, clip_masks, [a[0] for a in rec["anns"]], [a[1] for a in rec["anns"]], self.cfg,
                           rec["id"], [0] * self.num_frames, (h, w))


def build_clip_dataset(root: str, cfg="tiny", split: Optional[str] = None, train: bool = True,
                       short_side: Optional[int] = None, max_size: Optional[int] = None,
                       num_frames: Optional[int] = None, seed: int = 0, ann_file: Optional[str] = None,
                       image_root: Optional[str] = None, **kw) -> VISClipDataset:
    """Clip dataset over a YouTube-VIS-layout root (``annotations/<split>.json``, ``JPEGImages/``).

    ``ann_file`` / ``image_root`` override those two paths (e.g. the official
    YouTube-VIS ``train/instances.json`` + ``train/JPEGImages`` or OVIS
    ``annotations_train.json`` + ``train/``); ``root`` is then unused for them.

    train=True: random clips with flip / scale jitter (0.8..1.2 x short_side) / colour jitter;
    train=False: deterministic clips, plain resize to short_side (max_size), no augmentation.
    short_side / max_size default to cfg.test_shorter_side / cfg.test_max_size.
    """
    cfg = get_config(cfg)
    index = load_vis_index(ann_file or find_split(root, split), image_root or os.path.join(root, "JPEGImages"))
    ss = int(short_side or cfg.test_shorter_side)
    ms = int(max_size or cfg.test_max_size)
    augment = default_augmentation(ss, ms) if train else None
    return VISClipDataset(index, cfg, num_frames=num_frames, augment=augment, shorter_side=ss, max_size=ms,
                          deterministic=not train, seed=seed, **kw)


__all__: Sequence[str] = ["VISClipDataset", "COCOPseudoVideoDataset", "build_clip_dataset", "load_coco_images",
                          "collate_clips", "read_rgb"]
