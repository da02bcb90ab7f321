"""Per-video, per-category greedy matching and precision/recall accumulation.

These follow the COCO / YouTube-VIS evaluation semantics:

* detections are visited in decreasing score order (stable for ties); each
  takes the not-yet-matched ground truth with the highest IoU >= threshold;
  non-ignored ground truths are preferred over ignored ones (the ground
  truths are ordered ignore-last and the search stops at the first ignored
  one once a regular match exists); crowd ground truths can absorb several
  detections;
* a detection matched to an ignored ground truth is ignored; an unmatched
  detection whose mean area is outside the area range is ignored;
* precision is made monotone (running maximum from the right) and read at
  the 101 recall thresholds (0 beyond the highest recall reached).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np


@dataclass
class VideoMatch:
    """Matching of one (video, category) group under one ignore setting.

    scores [D] (sorted, decreasing), matched [T, D] bool, ignored [T, D] bool,
    num_positive: number of non-ignored ground truths.
    """
    scores: np.ndarray
    matched: np.ndarray
    ignored: np.ndarray
    num_positive: int


def greedy_match(ious: np.ndarray, gt_ignore: np.ndarray, gt_crowd: np.ndarray,
                 iou_thrs: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """Match detections (rows, sorted by decreasing score) to ground truths.

    ious [D, G]; gt_ignore [G] bool; gt_crowd [G] bool; iou_thrs [T].
    Returns (dt_matched [T, D] bool, dt_ignored [T, D] bool) where dt_ignored
    is True for detections matched to an ignored ground truth.
    """
    D, G = ious.shape
    T = len(iou_thrs)
    matched = np.zeros((T, D), bool)
    ignored = np.zeros((T, D), bool)
    if D == 0 or G == 0:
        return matched, ignored
    order = np.argsort(gt_ignore.astype(np.int8), kind="mergesort")  # regular first, stable
    ious_o, ign_o, crowd_o = ious[:, order], gt_ignore[order], gt_crowd[order]
    for ti, thr in enumerate(iou_thrs):
        taken = np.zeros(G, bool)
        for d in range(D):
            best, m = min(float(thr), 1 - 1e-10), -1
            for g in range(G):
                if taken[g] and not crowd_o[g]:
                    continue
                if m > -1 and not ign_o[m] and ign_o[g]:
                    break
                if ious_o[d, g] < best:
                    continue
                best, m = ious_o[d, g], g
            if m == -1:
                continue
            matched[ti, d] = True
            ignored[ti, d] = bool(ign_o[m])
            taken[m] = True
    return matched, ignored


def accumulate(matches: Sequence[VideoMatch], max_det: int, rec_thrs: np.ndarray,
               num_thrs: int) -> Tuple[np.ndarray, np.ndarray]:
    """Precision [T, R] and recall [T] over all videos of one category.

    Only the first ``max_det`` detections of each video count. Both are -1
    when there is no non-ignored ground truth (category absent in this setting).
    """
    R = len(rec_thrs)
    npos = sum(m.num_positive for m in matches)
    if npos == 0:
        return -np.ones((num_thrs, R)), -np.ones(num_thrs)
    scores = np.concatenate([m.scores[:max_det] for m in matches]) if matches else np.zeros(0)
    order = np.argsort(-scores, kind="mergesort")
    dtm = np.concatenate([m.matched[:, :max_det] for m in matches], axis=1)[:, order]
    dti = np.concatenate([m.ignored[:, :max_det] for m in matches], axis=1)[:, order]
    tp = np.cumsum(dtm & ~dti, axis=1, dtype=np.float64)
    fp = np.cumsum(~dtm & ~dti, axis=1, dtype=np.float64)
    nd = tp.shape[1]
    precision = np.zeros((num_thrs, R))
    recall = np.zeros(num_thrs)
    for t in range(num_thrs):
        if nd == 0:
            continue
        rc = tp[t] / npos
        pr = tp[t] / (tp[t] + fp[t] + np.spacing(1))
        recall[t] = rc[-1]
        pr = np.maximum.accumulate(pr[::-1])[::-1]  # interpolated precision
        idx = np.searchsorted(rc, rec_thrs, side="left")
        ok = idx < nd
        precision[t, ok] = pr[idx[ok]]
    return precision, recall


__all__: List[str] = ["VideoMatch", "greedy_match", "accumulate"]
