"""YouTube-VIS / OVIS video instance segmentation evaluation (torch-free).

``evaluate(gt, results) -> dict`` returns (values in [0, 1], -1 when undefined):

    AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl
    and, when every ground-truth annotation has per-frame ``occlusion`` labels,
    AP_so, AP_mo, AP_ho, AR_so, AR_mo, AR_ho  (OVIS occlusion bins)

Semantics (official YouTube-VIS / OVIS evaluation, docs/data_eval.md):
video mask IoU; IoU thresholds .50:.05:.95; 101 recall points; at most
1/10/100 detections per video and category; area ranges on the mean area
over non-empty frames: all, small [0, 128^2], medium [128^2, 256^2], large
[256^2, inf]; crowd ground truths are ignored; per-category AP averaged over
categories that have ground truth. OVIS: an instance's occlusion score is
the mean of its top ceil(n/2) per-frame scores (none 0, slight 0.25, severe
0.75); bins slight [0, .25], moderate [.25, .5], heavy [.5, 1] (closed);
ground truth outside the bin is ignored (detections are not).
"""
from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from .io import Detection, GroundTruth, GTInstance, load_ground_truth, load_results
from .matching import VideoMatch, accumulate, greedy_match
from .video_iou import video_iou

AREA_RANGES: Dict[str, Tuple[float, float]] = {
    "all": (0.0, 1e5 ** 2), "small": (0.0, 128.0 ** 2),
    "medium": (128.0 ** 2, 256.0 ** 2), "large": (256.0 ** 2, 1e5 ** 2),
}
OCCLUSION_RANGES: Dict[str, Tuple[float, float]] = {
    "all": (0.0, 1.0), "slight": (0.0, 0.25), "moderate": (0.25, 0.5), "heavy": (0.5, 1.0),
}


@dataclass(frozen=True)
class EvalParams:
    iou_thrs: Tuple[float, ...] = tuple(np.linspace(0.5, 0.95, 10).tolist())
    rec_thrs: Tuple[float, ...] = tuple(np.linspace(0.0, 1.0, 101).tolist())
    max_dets: Tuple[int, ...] = (1, 10, 100)


@dataclass
class EvalResult:
    """Full evaluation state.

    precision[(area, occ)]: [T, R, K, M]; recall[(area, occ)]: [T, K, M]
    (K = categories sorted by id, M = max_dets); -1 where undefined.
    """
    params: EvalParams
    category_ids: List[int]
    category_names: List[str]
    has_occlusion: bool
    precision: Dict[Tuple[str, str], np.ndarray] = field(default_factory=dict)
    recall: Dict[Tuple[str, str], np.ndarray] = field(default_factory=dict)

    def _mean(self, arr: np.ndarray) -> float:
        valid = arr[arr > -1]
        return float(valid.mean()) if valid.size else -1.0

    def ap(self, iou: Optional[float] = None, area: str = "all", occ: str = "all", max_det: int = 100) -> float:
        p = self.precision[(area, occ)][..., self.params.max_dets.index(max_det)]
        if iou is not None:
            p = p[[self._iou_index(iou)]]
        return self._mean(p)

    def ar(self, max_det: int = 100, area: str = "all", occ: str = "all") -> float:
        return self._mean(self.recall[(area, occ)][..., self.params.max_dets.index(max_det)])

    def per_category_ap(self) -> Dict[str, float]:
        p = self.precision[("all", "all")][..., self.params.max_dets.index(max(self.params.max_dets))]
        return {name: self._mean(p[:, :, k]) for k, name in enumerate(self.category_names)}

    def _iou_index(self, iou: float) -> int:
        d = np.abs(np.asarray(self.params.iou_thrs) - iou)
        if d.min() > 1e-9:
            raise ValueError(f"IoU threshold {iou} is not one of {self.params.iou_thrs}")
        return int(d.argmin())

    def summary(self) -> Dict[str, float]:
        big = max(self.params.max_dets)
        out = {
            "AP": self.ap(), "AP50": self.ap(iou=0.5), "AP75": self.ap(iou=0.75),
            "APs": self.ap(area="small"), "APm": self.ap(area="medium"), "APl": self.ap(area="large"),
        }
        for m in self.params.max_dets:
            out[f"AR{m}"] = self.ar(max_det=m)
        out.update({"ARs": self.ar(big, area="small"), "ARm": self.ar(big, area="medium"),
                    "ARl": self.ar(big, area="large")})
        if self.has_occlusion:
            for key, occ in (("so", "slight"), ("mo", "moderate"), ("ho", "heavy")):
                out[f"AP_{key}"] = self.ap(occ=occ)
            for key, occ in (("so", "slight"), ("mo", "moderate"), ("ho", "heavy")):
                out[f"AR_{key}"] = self.ar(big, occ=occ)
        return out


def _settings(has_occlusion: bool) -> List[Tuple[str, str]]:
    """(area, occlusion) range pairs the summary needs."""
    out = [(a, "all") for a in AREA_RANGES]
    if has_occlusion:
        out += [("all", o) for o in OCCLUSION_RANGES if o != "all"]
    return out


def _in(value: float, rng: Tuple[float, float]) -> bool:
    return rng[0] <= value <= rng[1]


def _match_group(gts: List[GTInstance], dets: List[Detection],
                 settings: List[Tuple[str, str]], params: EvalParams) -> Dict[Tuple[str, str], VideoMatch]:
    """Match one (video, category) group under every (area, occlusion) setting."""
    dets = sorted(dets, key=lambda d: -d.score)  # stable: ties keep file order
    dets = dets[: max(params.max_dets)]
    ious = video_iou([d.masks for d in dets], [g.masks for g in gts])
    crowd = np.array([g.iscrowd for g in gts], bool)
    scores = np.array([d.score for d in dets], np.float64)
    det_area = np.array([d.avg_area for d in dets], np.float64)
    out = {}
    for area, occ in settings:
        a_rng, o_rng = AREA_RANGES[area], OCCLUSION_RANGES[occ]
        ignore = np.array([g.iscrowd or not _in(g.avg_area, a_rng)
                           or (occ != "all" and not _in(g.occlusion_score, o_rng)) for g in gts], bool)
        matched, ignored = greedy_match(ious, ignore, crowd, params.iou_thrs)
        outside = ~np.array([_in(a, a_rng) for a in det_area], bool)
        ignored = ignored | (~matched & outside[None, :])
        out[(area, occ)] = VideoMatch(scores, matched, ignored, int((~ignore).sum()))
    return out


def evaluate_detailed(gt: Union[str, os.PathLike, dict, GroundTruth],
                      results: Union[str, os.PathLike, list],
                      params: EvalParams = EvalParams()) -> EvalResult:
    """Evaluate ``results`` against ``gt`` and keep the full precision/recall arrays."""
    gt = gt if isinstance(gt, GroundTruth) else load_ground_truth(gt)
    dets = load_results(results, gt)
    cat_ids = sorted(gt.categories)
    settings = _settings(gt.has_occlusion)

    gt_groups: Dict[Tuple[int, int], List[GTInstance]] = defaultdict(list)
    for g in gt.instances:
        gt_groups[(g.video_id, g.category_id)].append(g)
    dt_groups: Dict[Tuple[int, int], List[Detection]] = defaultdict(list)
    for d in dets:
        dt_groups[(d.video_id, d.category_id)].append(d)

    per_cat: Dict[int, List[Dict[Tuple[str, str], VideoMatch]]] = defaultdict(list)
    for key in sorted(set(gt_groups) | set(dt_groups)):
        per_cat[key[1]].append(_match_group(gt_groups.get(key, []), dt_groups.get(key, []),
                                            settings, params))

    T, R, K, M = len(params.iou_thrs), len(params.rec_thrs), len(cat_ids), len(params.max_dets)
    res = EvalResult(params, cat_ids, [gt.categories[c] for c in cat_ids], gt.has_occlusion)
    rec_thrs = np.asarray(params.rec_thrs)
    for s in settings:
        prec = -np.ones((T, R, K, M))
        rec = -np.ones((T, K, M))
        for k, cid in enumerate(cat_ids):
            groups = [g[s] for g in per_cat.get(cid, [])]
            for m, md in enumerate(params.max_dets):
                prec[:, :, k, m], rec[:, k, m] = accumulate(groups, md, rec_thrs, T)
        res.precision[s], res.recall[s] = prec, rec
    return res


def evaluate(gt: Union[str, os.PathLike, dict, GroundTruth], results: Union[str, os.PathLike, list]) -> Dict[str, float]:
    """Evaluate results (list or JSON path) against ground truth (dict or JSON path); see module doc."""
    return evaluate_detailed(gt, results).summary()
