"""Clip sampling and clip-level augmentation on numpy arrays (the same transform for all frames).

Conventions: frames [T, H, W, 3] uint8 RGB; masks [K, T, H, W] bool (K instances).
Normalisation and padding are the model's own (``mdqe.model.preprocess.normalize_and_pad``,
re-exported here) so training sees exactly what inference sees.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import cv2
import numpy as np

from mdqe.model.preprocess import normalize_and_pad, resize_shape  # noqa: F401  (re-exported)


def sample_frame_indices(rng: np.random.Generator, length: int, num_frames: int,
                         sampling_range: int = 10) -> List[int]:
    """T sorted frame indices: a random reference frame plus T-1 others from a window of
    ``sampling_range`` frames around it (distinct when the window allows, else repeated)."""
    if length < 1 or num_frames < 1:
        raise ValueError(f"need length >= 1 and num_frames >= 1, got {length}, {num_frames}")
    ref = int(rng.integers(0, length))
    lo = max(0, ref - sampling_range // 2)
    hi = min(length, lo + sampling_range)
    lo = max(0, hi - sampling_range)
    others = [i for i in range(lo, hi) if i != ref]
    k = num_frames - 1
    if len(others) >= k:
        picked = rng.choice(others, size=k, replace=False).tolist()
    else:
        picked = others + rng.choice(np.arange(lo, hi), size=k - len(others), replace=True).tolist()
    return sorted([ref] + [int(i) for i in picked])


def resize_clip(frames: np.ndarray, masks: np.ndarray, size_hw: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """Resize frames (bilinear) and masks (nearest) to ``size_hw`` = (h, w)."""
    h, w = size_hw
    T, H, W = frames.shape[:3]
    if (h, w) == (H, W):
        return frames, masks
    out_f = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_LINEAR) for f in frames])
    K = masks.shape[0]
    flat = masks.reshape(K * T, H, W).astype(np.uint8)
    chunks = []
    for s in range(0, K * T, 256):  # OpenCV resizes up to 512 channels at once
        c = flat[s:s + 256].transpose(1, 2, 0)
        r = cv2.resize(c, (w, h), interpolation=cv2.INTER_NEAREST)
        chunks.append(r.reshape(h, w, -1).transpose(2, 0, 1))
    out_m = (np.concatenate(chunks) if chunks else np.zeros((0, h, w), np.uint8)).reshape(K, T, h, w).astype(bool)
    return out_f, out_m


@dataclass
class ClipAugmentation:
    """Random horizontal flip, shorter-side resize (scale jitter) and brightness/contrast jitter.

    shorter_sides: choices for the shorter side; the longer side is limited to max_size
    (the resize rule of INTERFACES.md section 5). brightness / contrast: factors drawn
    from [1 - b, 1 + b] (contrast around the clip's mean grey level).
    """
    shorter_sides: Sequence[int]
    max_size: int
    flip_prob: float = 0.5
    brightness: float = 0.25
    contrast: float = 0.25

    def __call__(self, rng: np.random.Generator, frames: np.ndarray,
                 masks: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        if rng.random() < self.flip_prob:
            frames = frames[:, :, ::-1]
            masks = masks[..., ::-1]
        side = int(rng.choice(np.asarray(self.shorter_sides)))
        frames, masks = resize_clip(np.ascontiguousarray(frames), np.ascontiguousarray(masks),
                                    resize_shape(frames.shape[1], frames.shape[2], side, self.max_size))
        b = rng.uniform(1 - self.brightness, 1 + self.brightness)
        c = rng.uniform(1 - self.contrast, 1 + self.contrast)
        x = frames.astype(np.float32)
        grey = float(x.mean())
        x = ((x - grey) * c + grey) * b
        return np.clip(x + 0.5, 0, 255).astype(np.uint8), masks


def default_augmentation(shorter_side: int, max_size: int) -> ClipAugmentation:
    """Scale jitter of the shorter side over 0.8x..1.2x of ``shorter_side`` in steps of 0.1."""
    sides = sorted({max(32, int(round(shorter_side * f))) for f in (0.8, 0.9, 1.0, 1.1, 1.2)})
    return ClipAugmentation(tuple(sides), max_size=int(round(max_size * 1.2)))


def pseudo_video(rng: np.random.Generator, image: np.ndarray, masks: np.ndarray, num_frames: int,
                 min_scale: float = 0.6) -> Tuple[np.ndarray, np.ndarray]:
    """Image [H, W, 3] + masks [K, H, W] -> a clip of ``num_frames`` frames of the same size.

    Frame 0 is the image; every other frame is a random crop of relative size
    s in [min_scale, 1] (per side, same s for both) resized back to H x W, as in
    the paper's COCO pre-training. Returns frames [T, H, W, 3], masks [K, T, H, W].
    """
    H, W = image.shape[:2]
    K = masks.shape[0]
    frames = [image]
    mframes = [masks]
    for _ in range(num_frames - 1):
        s = rng.uniform(min_scale, 1.0)
        ch, cw = max(1, int(round(H * s))), max(1, int(round(W * s)))
        y0, x0 = int(rng.integers(0, H - ch + 1)), int(rng.integers(0, W - cw + 1))
        f, m = resize_clip(image[None, y0:y0 + ch, x0:x0 + cw], masks[:, None, y0:y0 + ch, x0:x0 + cw], (H, W))
        frames.append(f[0])
        mframes.append(m[:, 0])
    return np.stack(frames), (np.stack(mframes, axis=1) if K else np.zeros((0, num_frames, H, W), bool))


def masks_to_boxes(masks: np.ndarray, pad_h: int, pad_w: int) -> np.ndarray:
    """masks [K, T, H, W] bool -> boxes [K, T, 4] float32 (cx, cy, w, h) normalised by the
    padded size (pad_h, pad_w); a box spans whole pixels (x1 = last column + 1); zeros where empty."""
    K, T = masks.shape[:2]
    boxes = np.zeros((K, T, 4), np.float32)
    if K == 0:
        return boxes
    rows = masks.any(axis=3)  # [K, T, H]
    cols = masks.any(axis=2)  # [K, T, W]
    for k in range(K):
        for t in range(T):
            ys, xs = np.flatnonzero(rows[k, t]), np.flatnonzero(cols[k, t])
            if ys.size == 0:
                continue
            x0, x1, y0, y1 = xs[0], xs[-1] + 1, ys[0], ys[-1] + 1
            boxes[k, t] = ((x0 + x1) / 2 / pad_w, (y0 + y1) / 2 / pad_h, (x1 - x0) / pad_w, (y1 - y0) / pad_h)
    return boxes
