"""Per-clip filtering of decoder outputs (paper Sec. 3.4; shared DESIGN.md section 4).

Steps, for one clip:
1. class scores = sigmoid(pred_logits) [Q,C]; a query's score is its best
   class score; keep queries with score >= min(score_thr, top score);
2. near-duplicate queries: walking by score, drop a query whose embedding
   cosine with an already kept one is >= dup_cos (0.99);
3. mask NMS by mask IoU over the clip's frames: walking by score, a query
   whose IoU with a kept higher-scoring one is >= nms_iou (0.5) is dropped,
   otherwise its scores are scaled by (1 - max IoU);
4. scores *= mean sigmoid of the mask logits inside the mask (mask quality);
   queries with empty masks are dropped (nothing to track).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ClipDetections:
    """Kept instances of one clip, K of them.

    scores [K,C] float32 (rescored class probabilities); masks [K,F,h,w]
    float32 mask logits at stride 4 over the F real frames of the clip,
    cropped to the valid (unpadded) area; embeds [K,E] float32;
    queries [K] int (decoder query index); start: index of the clip's first frame.
    """
    scores: np.ndarray
    masks: np.ndarray
    embeds: np.ndarray
    queries: np.ndarray
    start: int = 0

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.masks.shape[1])


@dataclass(frozen=True)
class FilterParams:
    score_thr: float = 0.1
    dup_cos: float = 0.99
    nms_iou: float = 0.5


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function (float32)."""
    x = np.asarray(x, np.float32)
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(np.float32)


def mask_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between binary masks a [K,...] and b [M,...] (same trailing shape),
    summed over all trailing dims (video-level IoU); returns [K,M] float32; 0 where both empty."""
    n = int(np.prod(a.shape[1:]))
    a2 = a.reshape(a.shape[0], n).astype(np.float32)
    b2 = b.reshape(b.shape[0], n).astype(np.float32)
    inter = a2 @ b2.T
    union = a2.sum(1)[:, None] + b2.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-6), 0.0).astype(np.float32)


def filter_clip(outputs: dict, num_real_frames: int, valid_hw, params: FilterParams = FilterParams(),
                start: int = 0) -> ClipDetections:
    """Filter one clip's decoder ``outputs`` (pred_logits [Q,C], pred_masks [Q,T,h,w], pred_embeds [Q,E]).

    ``num_real_frames``: the first F <= T frames are real (a padded clip of a
    short video repeats its last frame); ``valid_hw``: (h, w) of the unpadded
    area at mask resolution. Returns ClipDetections (possibly empty).
    """
    logits = np.asarray(outputs["pred_logits"], np.float32)
    masks_all = np.asarray(outputs["pred_masks"])
    embeds_all = np.asarray(outputs["pred_embeds"], np.float32)
    hv, wv = int(valid_hw[0]), int(valid_hw[1])
    probs = sigmoid(logits)
    qscore = probs.max(axis=1)
    thr = min(params.score_thr, float(qscore.max())) if qscore.size else params.score_thr
    order = np.argsort(-qscore, kind="stable")
    order = order[qscore[order] >= thr]

    # 2. near-duplicate queries by embedding cosine
    emb = embeds_all[order]
    unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    cos = unit @ unit.T
    keep = []
    for i in range(len(order)):
        if keep and float(cos[i, keep].max()) >= params.dup_cos:
            continue
        keep.append(i)
    order = order[keep]

    masks = np.ascontiguousarray(masks_all[order, :num_real_frames, :hv, :wv], dtype=np.float32)
    scores = probs[order].copy()
    binary = masks > 0

    # 3. mask NMS by mask IoU over the clip
    iou = mask_iou_matrix(binary, binary)
    keep = []
    for i in range(len(order)):
        m = float(iou[i, keep].max()) if keep else 0.0
        if m >= params.nms_iou:
            continue
        scores[i] *= (1.0 - m)
        keep.append(i)
    keep = np.asarray(keep, np.int64)
    order, masks, scores, binary = order[keep], masks[keep], scores[keep], binary[keep]

    # 4. mask quality: mean sigmoid inside the mask
    n = int(np.prod(binary.shape[1:]))
    area = binary.reshape(len(order), n).sum(1)
    inside = (sigmoid(masks) * binary).reshape(len(order), n).sum(1)
    quality = np.where(area > 0, inside / np.maximum(area, 1), 0.0).astype(np.float32)
    scores *= quality[:, None]
    nonempty = area > 0
    return ClipDetections(scores=scores[nonempty], masks=masks[nonempty],
                          embeds=embeds_all[order][nonempty].astype(np.float32),
                          queries=order[nonempty], start=start)
