"""Per-clip filtering of decoder outputs (what differs from the paper's text: docs/fidelity.md).

Default (``style="authors"``): what the authors' ``MDQE.inference_clip``
(mdqe/mdqe.py) computes, in numpy:

1. class probabilities = sigmoid(pred_logits) [Q,C]; queries sorted by their
   best class probability; keep those >= min(score_thr, top);
2. duplicate queries: drop a query whose tracking embedding (the raw clip
   query ``pred_queries``) has cosine >= dup_cos (0.99) with ANY
   higher-ranked kept-by-threshold query (not only the ones kept); at most
   ``max_queries`` (10 x detections per image: 100 YouTube-VIS, 150 OVIS)
   remain;
3. queries whose mask has no positive logit in any frame are dropped;
4. mask NMS with a soft IoU: masks of every second frame when the clip has
   >= 5 frames, downsampled by 2 (nearest), ``soft = sigmoid``,
   ``hard = soft > 0.5``, ``siou[i,j] = soft_i.hard_j / (|soft_i| + |hard_j|
   - soft_i.hard_j + 1)``; for query j, ``m = max over higher-ranked i``;
   scores *= (1 - m) and the query is dropped when m >= nms_iou (0.5);
5. mask quality: scores *= mean sigmoid over the mask's pixels (> 0.5);
6. keep the detections with best score > score_thr (at least one), sorted by
   score.

All of it on the whole (padded) stride-4 mask map, as the authors do; the
output crop to the image happens at the end (runtime.masks).

``style="paper"`` keeps this project's earlier reading of the paper
(greedy duplicate and NMS walks against kept queries, hard mask IoU, masks
cropped to the valid area, the tracking embedding ``pred_embeds``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .errors import RuntimeErrorBase
from .native import postprocess as native_pp


class ClipDetections:
    """Kept instances of one clip, K of them, sorted by score (descending).

    scores [K,C] float32 (rescored class probabilities); masks [K,F,h,w]
    float32 mask logits at stride 4 over the F real frames of the clip
    (authors' style: the whole padded map; paper style: cropped to the valid
    area); embeds [K,E] float32 tracking embeddings; queries [K] int
    (decoder query index); start: index of the clip's first frame.

    ``masks`` may be given lazily as ``source`` (the decoder's pred_masks [Q,T,h,w]) with
    ``num_frames`` F: then ``masks`` = source[queries, :F], built on first access, and
    ``mask_source()`` lets the tracker read the rows without that copy.
    """
    __slots__ = ("scores", "embeds", "queries", "start", "bits", "_masks", "_source", "_frames")

    def __init__(self, scores: np.ndarray, masks: Optional[np.ndarray] = None, embeds: np.ndarray = None,
                 queries: np.ndarray = None, start: int = 0, source: Optional[np.ndarray] = None,
                 num_frames: Optional[int] = None, bits: Optional[np.ndarray] = None):
        if (masks is None) == (source is None):
            raise ValueError("ClipDetections needs exactly one of masks [K,F,h,w] or source [Q,T,h,w]")
        self.scores, self.embeds, self.queries, self.start = scores, embeds, queries, start
        self._masks, self._source = masks, source
        self._frames = int(masks.shape[1]) if masks is not None else int(num_frames)
        self.bits = bits       # optional [K,F,wpf] uint64 bit sets of masks > 0 (native kernels)

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def __repr__(self) -> str:
        return f"ClipDetections(K={len(self)}, frames={self._frames}, start={self.start})"

    @property
    def masks(self) -> np.ndarray:
        """[K,F,h,w] float32 mask logits."""
        if self._masks is None:
            self._masks = self._source[np.asarray(self.queries, np.int64), :self._frames]
        return self._masks

    def mask_source(self) -> Tuple[np.ndarray, np.ndarray]:
        """(array X, rows r): masks[k, i] is X[r[k], i] for i < num_frames, without a copy."""
        if self._masks is None:
            return self._source, np.asarray(self.queries, np.int64)
        return self._masks, np.arange(len(self), dtype=np.int64)

    @property
    def mask_hw(self) -> Tuple[int, int]:
        """(h, w) of the mask maps."""
        src = self._masks if self._masks is not None else self._source
        return int(src.shape[-2]), int(src.shape[-1])

    @property
    def num_frames(self) -> int:
        return self._frames

    @property
    def best(self) -> np.ndarray:
        """[K] best class score of each detection."""
        return self.scores.max(axis=1) if len(self) else np.zeros(0, np.float32)


class ParamError(RuntimeErrorBase, ValueError):
    """An out-of-range post-processing / tracker option; the message names the CLI flag (exit 2)."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_number(name: str, value, lo=None, hi=None, lo_open=False, integer=False) -> None:
    """Raise ParamError naming ``--name`` unless ``value`` is a finite number in range."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParamError(f"{_flag(name)} must be a number, got {value!r}") from None
    if not np.isfinite(v):
        raise ParamError(f"{_flag(name)} must be a finite number, got {value!r}")
    if integer and (isinstance(value, bool) or int(v) != v):
        raise ParamError(f"{_flag(name)} must be an integer, got {value!r}")
    if lo is not None and (v <= lo if lo_open else v < lo):
        raise ParamError(f"{_flag(name)} must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and v > hi:
        raise ParamError(f"{_flag(name)} must be <= {hi}, got {value!r}")


@dataclass(frozen=True)
class FilterParams:
    """Per-clip filtering. Defaults = the authors' YouTube-VIS inference (OVIS: max_queries 150)."""
    style: str = "authors"       # "authors" | "paper"
    score_thr: float = 0.1       # APPLY_CLS_THRES
    dup_cos: float = 0.99        # duplicate queries: cosine >= this
    max_queries: int = 100       # 10 * DETECTIONS_PER_IMAGE kept after the duplicate test (authors)
    nms_iou: float = 0.5         # mask NMS: drop when (soft) IoU >= this

    def __post_init__(self):
        if self.style not in ("authors", "paper"):
            raise ParamError(f"filter style must be 'authors' or 'paper', got {self.style!r}")
        check_number("score_thr", self.score_thr, 0.0, 1.0)
        check_number("dup_cos", self.dup_cos, -1.0, 1.0)
        check_number("nms_iou", self.nms_iou, 0.0, 1.0)
        check_number("max_queries", self.max_queries, 1, integer=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function 1 / (1 + exp(-x)) in float32 (the form torch.sigmoid computes)."""
    x = np.asarray(x, np.float32)
    with np.errstate(over="ignore"):
        return (np.float32(1.0) / (np.float32(1.0) + np.exp(-x))).astype(np.float32, copy=False)


def _unit(e: np.ndarray) -> np.ndarray:
    """F.normalize: e / max(||e||, 1e-12) per row."""
    n = np.sqrt((e.astype(np.float32) ** 2).sum(axis=1, keepdims=True))
    return e / np.maximum(n, np.float32(1e-12))


def mask_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU between binary masks a [K,...] and b [M,...] (same trailing shape),
    summed over all trailing dims (video-level IoU); returns [K,M] float32; 0 where both empty."""
    n = int(np.prod(a.shape[1:]))
    a2 = a.reshape(a.shape[0], n).astype(np.float32)
    b2 = b.reshape(b.shape[0], n).astype(np.float32)
    inter = a2 @ b2.T
    union = a2.sum(1)[:, None] + b2.sum(1)[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-6), 0.0).astype(np.float32)


def soft_iou_max(masks: np.ndarray, predownsampled: bool = False) -> np.ndarray:
    """The authors' NMS overlap: for each of K masks (logits [K,F,h,w], sorted by score), the
    max soft IoU with any higher-ranked mask (0 for the first). Every second frame when F >= 5,
    nearest downsampling by 2 (``F.interpolate(scale_factor=0.5)``); ``predownsampled``: the
    caller already took rows/cols 0, 2, 4, ... (F < 5)."""
    K = masks.shape[0]
    if K <= 1:
        return np.zeros(K, np.float32)
    if predownsampled:
        m = masks.reshape(K, -1)
    else:
        m = masks[:, ::2] if masks.shape[1] >= 5 else masks
        h, w = m.shape[-2:]
        m = m[:, :, 0:(h // 2) * 2:2, 0:(w // 2) * 2:2].reshape(K, -1)
    soft = np.negative(m, dtype=np.float32)          # sigmoid in place: 1 / (1 + exp(-m))
    with np.errstate(over="ignore"):
        np.exp(soft, out=soft)
    soft += np.float32(1.0)
    np.reciprocal(soft, out=soft)
    hard = soft > 0.5
    cols = np.flatnonzero(hard.any(axis=0))          # only pixels some hard mask covers add to soft.hard
    num = soft[:, cols] @ hard[:, cols].T.astype(np.float32) if cols.size else np.zeros((K, K), np.float32)
    den = soft.sum(axis=1, dtype=np.float32)[:, None] + hard.sum(axis=1).astype(np.float32)[None, :] - num
    siou = num / (den + np.float32(1.0))
    return np.triu(siou, 1).max(axis=0)


def _quality(positives) -> np.ndarray:
    """Mask quality from each mask's positive logits (a list of 1-D arrays): mean sigmoid over the
    pixels with sigmoid > 0.5."""
    K = len(positives)
    if K == 0:
        return np.zeros(0, np.float32)
    counts = np.array([p.size for p in positives], np.int64)
    soft = sigmoid(np.concatenate(positives))
    hard = soft > 0.5
    own = np.repeat(np.arange(K), counts)[hard]
    s = np.bincount(own, weights=soft[hard], minlength=K).astype(np.float32)
    n = np.bincount(own, minlength=K).astype(np.float32)
    return s / (n + np.float32(1e-6))



def _mask_terms(masks_all: np.ndarray, valid: np.ndarray, F: int):
    """Steps 3-5 on the candidates ``valid`` (rank order) of masks_all [Q,T,h,w]: (kept [n] indices
    into valid of the non-blank ones, quality [n], NMS overlap [n] = max soft IoU with a
    higher-ranked kept one, bits: [len(valid),F,wpf] bit sets of the masks > 0 for the tracker, or
    None). The native kernels when loaded, else numpy (same results)."""
    step = 2 if F >= 5 else 1
    if native_pp.available():
        terms = native_pp.filter_masks(masks_all, valid, F, step)
        kept = np.flatnonzero(terms.nonblank)
        quality = (terms.quality_sum[kept].astype(np.float32)
                   / (terms.quality_count[kept].astype(np.float32) + np.float32(1e-6)))
        return kept, quality, terms.overlap[kept], terms.bits
    K = len(valid)
    h, w = masks_all.shape[-2:]
    # one visit per candidate, on its own (contiguous) logits while they are in cache: max of every
    # row (blank test; the rows mask quality reads), the NMS sample (every second row / column,
    # every second frame from 5 frames on) and the positive logits (mask quality)
    fs = slice(0, F, step)
    h2, w2 = h // 2, w // 2
    sample = np.empty((K, len(range(F)[fs]), h2, w2), np.float32)
    positives, kept = [], []
    for i, q in enumerate(valid):
        v = masks_all[q, :F]
        rows = v.reshape(F * h, w).max(axis=1)
        if not rows.max() > 0:
            continue                                   # blank: dropped before the NMS
        j = len(kept)
        kept.append(i)
        sample[j] = v[fs, 0:h2 * 2:2, 0:w2 * 2:2]
        sub = v.reshape(F * h, w)[rows > 0]
        positives.append(sub[sub > 0])
    kept = np.asarray(kept, np.int64)
    overlap = soft_iou_max(sample[:len(kept)], predownsampled=True) if len(kept) else np.zeros(0, np.float32)
    return kept, _quality(positives), overlap, None

def candidates(outputs: dict, params: FilterParams = FilterParams(), embedding: str = "pred_queries"):
    """Steps 1-2 of the authors' filter: (class probabilities [Q,C] float32, the candidate queries [K]
    in rank order: above the score threshold (at least the best one), no duplicate embedding, at most
    ``max_queries``). Their masks are what the rest of the filter reads."""
    logits = np.asarray(outputs["pred_logits"], np.float32)
    emb_all = np.asarray(outputs[embedding], np.float32)
    probs = sigmoid(logits)
    qscore = probs.max(axis=1)
    order = np.argsort(-qscore, kind="stable")
    srt = qscore[order]
    valid = order[srt >= min(np.float32(params.score_thr), srt[0])] if order.size else order
    if valid.size > 1:
        u = _unit(emb_all[valid])
        sim = np.triu(u @ u.T, 1).max(axis=0)
        valid = valid[sim < params.dup_cos][:params.max_queries]
    return probs, valid


def filter_clip(outputs: dict, num_real_frames: int, valid_hw, params: FilterParams = FilterParams(),
                start: int = 0, embedding: str = "pred_queries") -> ClipDetections:
    """Filter one clip's decoder ``outputs`` (pred_logits [Q,C], pred_masks [Q,T,h,w] and the
    tracking embedding ``outputs[embedding]`` [Q,E]).

    ``num_real_frames``: the first F <= T frames are real (a padded clip repeats its last frame);
    ``valid_hw``: (h, w) of the unpadded area at mask resolution (paper style crops to it).
    Returns ClipDetections (possibly empty) sorted by score.
    """
    if params.style == "paper":
        return filter_clip_paper(outputs, num_real_frames, valid_hw, params, start, embedding)
    masks_all = np.ascontiguousarray(outputs["pred_masks"], np.float32)
    emb_all = np.asarray(outputs[embedding], np.float32)
    probs, valid = candidates(outputs, params, embedding)
    F = int(num_real_frames)
    kept, quality, overlap, bits = _mask_terms(masks_all, valid, F)
    valid, cls = valid[kept], probs[valid][kept]
    if len(valid):
        cls = cls * (np.float32(1.0) - overlap)[:, None]
        keep = overlap < params.nms_iou
        valid, cls, quality, kept = valid[keep], cls[keep], quality[keep], kept[keep]
    cls = cls * quality[:, None]
    scores = cls.max(axis=1) if len(valid) else np.zeros(0, np.float32)
    srt = np.argsort(-scores, kind="stable")
    n = max(int((scores > params.score_thr).sum()), 1)
    top = srt[:n]
    return ClipDetections(scores=cls[top].astype(np.float32), source=masks_all, num_frames=F,
                          embeds=emb_all[valid[top]].astype(np.float32), queries=valid[top], start=start,
                          bits=bits[kept[top]] if bits is not None else None)


def filter_clip_paper(outputs: dict, num_real_frames: int, valid_hw, params: FilterParams = FilterParams(),
                      start: int = 0, embedding: str = "pred_embeds") -> ClipDetections:
    """This project's earlier, paper-style filter (option ``style="paper"``): greedy walks by score
    against kept queries (embedding cosine, hard mask IoU over the clip), masks cropped to the
    valid area, scores *= mean sigmoid inside the mask, empty masks dropped."""
    logits = np.asarray(outputs["pred_logits"], np.float32)
    masks_all = np.asarray(outputs["pred_masks"])
    embeds_all = np.asarray(outputs[embedding], np.float32)
    hv, wv = int(valid_hw[0]), int(valid_hw[1])
    probs = sigmoid(logits)
    qscore = probs.max(axis=1)
    thr = min(params.score_thr, float(qscore.max())) if qscore.size else params.score_thr
    order = np.argsort(-qscore, kind="stable")
    order = order[qscore[order] >= thr]
    unit = _unit(embeds_all[order])
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
    n = int(np.prod(binary.shape[1:]))
    area = binary.reshape(len(order), n).sum(1)
    inside = (sigmoid(masks) * binary).reshape(len(order), n).sum(1)
    quality = np.where(area > 0, inside / np.maximum(area, 1), 0.0).astype(np.float32)
    scores *= quality[:, None]
    nonempty = area > 0
    return ClipDetections(scores=scores[nonempty], masks=masks[nonempty],
                          embeds=embeds_all[order][nonempty].astype(np.float32),
                          queries=order[nonempty], start=start)


def require_embedding(outputs: dict, embedding: str, where: str = "decoder") -> Optional[str]:
    """Error text when the decoder ``outputs`` lack the tracking embedding, else None."""
    if embedding in outputs:
        return None
    if embedding == "pred_queries":
        return (f"the {where} outputs have no 'pred_queries' [Q, hidden_dim] (the raw clip query the "
                "authors track with); re-export the model with it, or run with --track-embedding "
                "pred_embeds (paper-style tracking embedding, not the authors' results)")
    return f"the {where} outputs have no {embedding!r} (have {sorted(outputs)})"
