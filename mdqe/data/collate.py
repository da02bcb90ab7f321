"""Training samples (docs/INTERFACES.md section 4, "Training samples") and their batching.

A sample is ``{"images": [T, 3, H, W] float32 (normalised, zero-padded to a multiple of 32),
"targets": {...}}`` with targets:

    labels [K] int64 (0-based class), ids [K] int64 (instance ids),
    boxes [K, T, 4] float32 (cx, cy, w, h) / padded (W, H), zeros where absent,
    masks [K, T, H, W] bool (padded size), valid [K, T] bool,
    video_id int, frame_indices [T] int64, orig_size (h, w) of the source frames,
    image_size (h, w) after resizing, before padding.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .transforms import masks_to_boxes, normalize_and_pad


def make_sample(frames: np.ndarray, masks: np.ndarray, labels: Sequence[int], ids: Sequence[int], cfg,
                video_id: int, frame_indices: Sequence[int], orig_size) -> dict:
    """Build a sample from augmented frames [T, H, W, 3] uint8 and masks [K, T, H, W] bool.

    Instances without a mask on any of the T frames are dropped.
    """
    frames = np.ascontiguousarray(frames)
    masks = np.ascontiguousarray(masks, dtype=bool)
    T, H, W = frames.shape[:3]
    if masks.shape[1:] != (T, H, W):
        raise ValueError(f"masks {masks.shape} do not match frames {frames.shape}")
    valid = masks.any(axis=(2, 3))
    keep = valid.any(axis=1)
    masks, valid = masks[keep], valid[keep]
    labels = np.asarray(labels, np.int64).reshape(-1)[keep]
    ids = np.asarray(ids, np.int64).reshape(-1)[keep]
    images = normalize_and_pad(frames, cfg)
    Hp, Wp = images.shape[-2:]
    padded = np.zeros((masks.shape[0], T, Hp, Wp), bool)
    padded[:, :, :H, :W] = masks
    return {"images": images, "targets": {
        "labels": torch.from_numpy(labels), "ids": torch.from_numpy(ids),
        "boxes": torch.from_numpy(masks_to_boxes(padded, Hp, Wp)),
        "masks": torch.from_numpy(padded), "valid": torch.from_numpy(valid),
        "video_id": int(video_id), "frame_indices": torch.as_tensor(list(frame_indices), dtype=torch.int64),
        "orig_size": (int(orig_size[0]), int(orig_size[1])), "image_size": (H, W),
    }}


def collate_clips(samples: List[dict]) -> dict:
    """List of samples -> ``{"images": [B, T, 3, H, W], "valid_hw": [B, T, 2] int64, "targets": [dict, ...]}``.

    Clips are zero-padded right/bottom to the largest H, W of the batch; masks are
    padded with False and boxes (normalised by the padded size) rescaled to the new size.
    ``valid_hw`` is each frame's image size before padding (targets' image_size, else the sample's
    own size): the model
    derives the authors' padding masks from it (``MDQE.forward(images, valid_hw=...)``).
    """
    if not samples:
        raise ValueError("collate_clips: empty batch")
    lengths = {s["images"].shape[0] for s in samples}
    if len(lengths) != 1:
        raise ValueError(f"collate_clips: clips of different lengths {sorted(lengths)}")
    H2 = max(s["images"].shape[-2] for s in samples)
    W2 = max(s["images"].shape[-1] for s in samples)
    images, targets = [], []
    for s in samples:
        H, W = s["images"].shape[-2:]
        images.append(F.pad(s["images"], (0, W2 - W, 0, H2 - H)))
        t = dict(s["targets"])
        if (H, W) != (H2, W2):
            scale = torch.tensor([W / W2, H / H2, W / W2, H / H2], dtype=t["boxes"].dtype)
            t["boxes"] = t["boxes"] * scale
            t["masks"] = F.pad(t["masks"], (0, W2 - W, 0, H2 - H), value=False)
        targets.append(t)
    T = samples[0]["images"].shape[0]
    # a sample without image_size is taken as unpadded at its own size
    valid_hw = torch.tensor([[list(s["targets"].get("image_size", s["images"].shape[-2:]))] * T for s in samples],
                            dtype=torch.int64)
    return {"images": torch.stack(images), "valid_hw": valid_hw, "targets": targets}
