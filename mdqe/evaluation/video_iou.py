"""Video-level mask IoU (YouTube-VIS definition), torch-free.

For a detection track d and a ground-truth track g over the same n frames::

    IoU(d, g) = sum_t |d_t & g_t| / sum_t |d_t | g_t|

A frame where only one side has a mask adds that mask's area to the union;
a frame where neither has one adds nothing. IoU is 0 when the union is empty.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
from pycocotools import mask as mask_utils

Track = Sequence[Optional[dict]]  # per-frame RLE or None


def _areas(tracks: Sequence[Track], n: int) -> np.ndarray:
    """[len(tracks), n] int64 per-frame mask areas (0 where absent)."""
    out = np.zeros((len(tracks), n), dtype=np.int64)
    where = [(i, t) for i, tr in enumerate(tracks) for t, m in enumerate(tr) if m is not None]
    if where:
        rows, cols = zip(*where)
        out[list(rows), list(cols)] = mask_utils.area([tracks[i][t] for i, t in where])
    return out


def video_intersection_union(dets: Sequence[Track], gts: Sequence[Track]) -> Tuple[np.ndarray, np.ndarray]:
    """Summed intersections and unions between every detection and ground-truth track.

    dets: D tracks, gts: G tracks, each a list of n per-frame RLEs (or None),
    all of the same frame size. Returns (inter [D, G], union [D, G]) int64.
    """
    D, G = len(dets), len(gts)
    if D == 0 or G == 0:
        return np.zeros((D, G), np.int64), np.zeros((D, G), np.int64)
    n = len(gts[0])
    if any(len(t) != n for t in list(dets) + list(gts)):
        raise ValueError("all tracks of one video must have the same number of frames")
    area_d, area_g = _areas(dets, n), _areas(gts, n)
    inter = np.zeros((D, G), dtype=np.int64)
    for t in range(n):
        di = [i for i in range(D) if area_d[i, t] > 0]
        gi = [j for j in range(G) if area_g[j, t] > 0]
        if not di or not gi:
            continue
        # With iscrowd=1 pycocotools returns |d & g| / |d|; multiplying back by
        # the (integer) detection area and rounding gives the exact intersection.
        frac = np.asarray(mask_utils.iou([dets[i][t] for i in di], [gts[j][t] for j in gi], [1] * len(gi)),
                          dtype=np.float64).reshape(len(di), len(gi))
        inter[np.ix_(di, gi)] += np.rint(frac * area_d[di, t][:, None]).astype(np.int64)
    union = area_d.sum(1)[:, None] + area_g.sum(1)[None, :] - inter
    return inter, union


def video_iou(dets: Sequence[Track], gts: Sequence[Track]) -> np.ndarray:
    """[D, G] float64 video mask IoU (0 where the union is empty)."""
    inter, union = video_intersection_union(dets, gts)
    out = np.zeros(inter.shape, dtype=np.float64)
    nz = union > 0
    out[nz] = inter[nz] / union[nz]
    return out


def video_iou_dense(det_masks: np.ndarray, gt_masks: np.ndarray) -> float:
    """Reference implementation on dense masks [n, H, W] (bool); used by tests."""
    d, g = np.asarray(det_masks, bool), np.asarray(gt_masks, bool)
    union = np.logical_or(d, g).sum()
    return float(np.logical_and(d, g).sum() / union) if union > 0 else 0.0


__all__: List[str] = ["video_iou", "video_intersection_union", "video_iou_dense"]
