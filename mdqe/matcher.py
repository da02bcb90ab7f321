"""Matchers between clip-level queries and the GT instances of a clip.

Two matchers; :class:`DynamicKMatcher` is the default (it is what the
authors' code trains with), :class:`HungarianMatcher` the paper-style
one-to-one option (``SetCriterion(style="paper")``, ``--criterion paper``).

**DynamicKMatcher** (the authors' ``HungarianMatcher`` in its default,
one-to-many mode; docs/fidelity.md). Cost per (query q, instance k)::

    C = 1 * (-sigmoid(logit[q, class_k]))
      + 2 * (L1(q, k) + 1 - GIoU_video(q, k))
      + 4 * (BCE(q, k) + Dice(q, k))

* L1: sum of |pred - gt| over all T frames and the 4 xyxy coordinates,
  frames where the instance is absent included (its GT box is zeros there);
* GIoU_video: mean over the frames with a non-empty GT box of the per-frame
  GIoU, which is 0 for boxes that do not intersect (union and hull clamped
  at 1e-3, :func:`mdqe.losses.box_ops.video_giou_matrix`);
* BCE: pixel mean over the T frames; Dice with +1 smoothing; both against
  the soft (bilinearly resized) GT masks.

Non-finite entries become 1000. Then ``+100`` per frame in which the query's
predicted box centre lies strictly inside no GT box of that frame and not
within 2.5/32 (in x and y) of any GT box centre of that frame (absent
instances' all-zero boxes included, as the authors compute it).
Assignment (:func:`dynamic_k_assignment`): instance k takes its
``max(2, int(sum of the 10 largest clamped GIoU_video(., k)))`` cheapest
queries; a query taken by several instances keeps the instance with the
smallest cost over ALL instances; while an instance has no query and a query
is free, matched queries get +1e5 and each unmatched instance takes its
cheapest query (conflicts resolved as before). With ``one_to_many=False``, or
when a predicted box is NaN ("no box information": cost without box terms),
``scipy.optimize.linear_sum_assignment`` on the cost instead. Pairs come
back sorted by query index.

**HungarianMatcher** (paper-style):
Cost per (query q, instance k), each averaged over the instance's valid
frames where it is per frame:

    C = w_cls * focal_class_cost
      + w_box * (L1(pred box, gt box) - GIoU(pred box, gt box))
      + w_dice * dice_cost(mask over all T frames)

with the weights ``matcher_cls``, ``matcher_box``, ``matcher_dice`` of
:class:`mdqe.config.LossWeights` (the authors' config: 1, 2, 4). The GIoU term uses
the box weight (the authors' config names no separate GIoU cost weight).
Assignment: ``scipy.optimize.linear_sum_assignment`` (minimise).
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .config import LossWeights
from .losses.box_ops import cxcywh_to_xyxy, generalized_box_iou_pairwise, video_giou_matrix, xyxy_to_cxcywh
from .losses.focal import focal_class_cost
from .losses.mask import dice_cost, downsample_masks


class HungarianMatcher:
    """Callable: ``matcher(outputs, targets) -> [(query_idx [K] int64, gt_idx [K] int64), ...]`` per clip.

    outputs: batched model outputs (``pred_logits [B,Q,C]``, ``pred_boxes
    [B,Q,T,4]``, ``pred_masks [B,Q,T,h,w]``); targets: list of B dicts with
    ``labels [K]``, ``boxes [K,T,4]``, ``valid [K,T]`` and ``masks [K,T,h,w]``
    already at the prediction's mask resolution (float {0,1}), or at any
    resolution (they are downsampled here).
    """

    def __init__(self, weights: LossWeights | None = None):
        self.w = weights or LossWeights()

    @torch.no_grad()
    def cost_matrix(self, logits, boxes, masks, target) -> torch.Tensor:
        """One clip: logits [Q,C], boxes [Q,T,4], masks [Q,T,h,w] -> cost [Q,K] (float32)."""
        labels = target["labels"].long()
        K = labels.numel()
        Q, T = boxes.shape[:2]
        if K == 0:
            return boxes.new_zeros(Q, 0)
        w = self.w
        c_cls = focal_class_cost(logits.float(), labels, w.focal_alpha, w.focal_gamma)
        valid = target["valid"].bool()  # [K,T]
        nvalid = valid.sum(1).clamp(min=1).float()  # [K]
        gt_boxes = target["boxes"].float()
        # L1: [Q,K,T] summed over coordinates, averaged over valid frames.
        l1 = (boxes.float()[:, None] - gt_boxes[None]).abs().sum(-1)
        c_l1 = (l1 * valid[None]).sum(-1) / nvalid[None]
        giou = torch.stack([
            generalized_box_iou_pairwise(cxcywh_to_xyxy(boxes[:, t].float()), cxcywh_to_xyxy(gt_boxes[:, t]))
            for t in range(T)], dim=-1)  # [Q,K,T]
        c_giou = -(giou * valid[None]).sum(-1) / nvalid[None]
        gt_masks = target["masks"]
        if gt_masks.shape[-2:] != masks.shape[-2:]:
            gt_masks = downsample_masks(gt_masks, masks.shape[-2:])
        c_dice = dice_cost(masks.float().flatten(1), gt_masks.float().flatten(1))
        return w.matcher_cls * c_cls + w.matcher_box * (c_l1 + c_giou) + w.matcher_dice * c_dice

    @torch.no_grad()
    def __call__(self, outputs: Dict[str, torch.Tensor], targets: List[dict]) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        B = outputs["pred_logits"].shape[0]
        if len(targets) != B:
            raise ValueError(f"matcher: {B} clips of predictions but {len(targets)} targets")
        out = []
        for b in range(B):
            cost = self.cost_matrix(outputs["pred_logits"][b], outputs["pred_boxes"][b],
                                    outputs["pred_masks"][b], targets[b])
            if not torch.isfinite(cost).all():
                raise FloatingPointError("matcher: non-finite matching cost (diverged predictions?)")
            qi, ki = linear_sum_assignment(cost.cpu().numpy())
            order = np.argsort(ki)
            out.append((torch.as_tensor(qi[order], dtype=torch.long),
                        torch.as_tensor(ki[order], dtype=torch.long)))
        return out


# ---- the authors' default: one-to-many dynamic-k matching ----------------------------------------
NON_FINITE_COST = 1000.0
OUTSIDE_PENALTY = 100.0      # per frame whose predicted centre is in no GT box / centre region
CENTRE_RADIUS = 2.5          # in units of the stride below
CENTRE_STRIDE = 32.0
N_CANDIDATES = 10            # top GIoUs summed for the dynamic k
MIN_K = 2
REMATCH_PENALTY = 100000.0


def mask_bce_cost(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Pixel-mean BCE of every (query, instance) pair: pred logits [Q,N], gt (soft) [K,N] -> [Q,K]."""
    n = pred.shape[1]
    pos = torch.nn.functional.binary_cross_entropy_with_logits(pred, torch.ones_like(pred), reduction="none")
    neg = torch.nn.functional.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred), reduction="none")
    return (torch.einsum("nc,mc->nm", pos, gt) + torch.einsum("nc,mc->nm", neg, 1 - gt)) / n


def mask_dice_cost(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Dice (+1 smoothing) of every pair: pred logits [Q,N], gt (soft) [K,N] -> [Q,K]."""
    p = pred.float().sigmoid()
    num = 2 * torch.einsum("nc,mc->nm", p, gt)
    den = p.sum(-1)[:, None] + gt.sum(-1)[None, :]
    return 1 - (num + 1) / (den + 1)


def centre_prior(pred_xyxy: torch.Tensor, gt_xyxy: torch.Tensor, radius: float = CENTRE_RADIUS,
                 stride: float = CENTRE_STRIDE) -> torch.Tensor:
    """Frames where a predicted box centre is inside some GT box or near some GT centre.

    pred_xyxy [Q,T,4], gt_xyxy [K,T,4] -> bool [Q,T]: the centre (cx, cy) of
    query q in frame t lies strictly inside a GT box of frame t, or strictly
    within ``radius / stride`` in x and in y of a GT box centre of frame t
    (every GT row counts, also the all-zero boxes of absent frames).
    """
    pc = xyxy_to_cxcywh(pred_xyxy)
    gc = xyxy_to_cxcywh(gt_xyxy)
    ax = pc[..., 0].unsqueeze(1)  # [Q,1,T]
    ay = pc[..., 1].unsqueeze(1)
    in_box = ((ax > gt_xyxy[..., 0].unsqueeze(0)) & (ax < gt_xyxy[..., 2].unsqueeze(0))
              & (ay > gt_xyxy[..., 1].unsqueeze(0)) & (ay < gt_xyxy[..., 3].unsqueeze(0)))  # [Q,K,T]
    r = 1 * radius / stride
    in_centre = ((ax > (gc[..., 0] - r).unsqueeze(0)) & (ax < (gc[..., 0] + r).unsqueeze(0))
                 & (ay > (gc[..., 1] - r).unsqueeze(0)) & (ay < (gc[..., 1] + r).unsqueeze(0)))
    return in_box.any(dim=1) | in_centre.any(dim=1)


def with_centre_prior(cost: torch.Tensor, inside: torch.Tensor, penalty: float = OUTSIDE_PENALTY) -> torch.Tensor:
    """cost [Q,K] + penalty * (number of frames where :func:`centre_prior` is False for the query) -> [Q,K]."""
    return cost + penalty * (~inside).sum(dim=-1)[..., None]


def _keep_cheapest(assign: torch.Tensor, cost: torch.Tensor) -> None:
    """Rows of ``assign`` [Q,K] with several ones keep one 1, at the row's cheapest column (in place)."""
    multi = assign.sum(dim=1) > 1
    if bool(multi.any()):
        best = torch.min(cost[multi], dim=1)[1]
        assign[multi] *= 0
        assign[multi, best] = 1


def dynamic_k_assignment(cost: torch.Tensor, ious: torch.Tensor, n_candidates: int = N_CANDIDATES,
                         min_k: int = MIN_K) -> Tuple[torch.Tensor, torch.Tensor]:
    """One-to-many assignment of one clip: cost [Q,K] (lower is better), ious [Q,K] -> (query_idx, gt_idx).

    k_i = max(min_k, int(sum of the n_candidates largest max(iou, 0) of column i));
    instance i takes its k_i cheapest queries; a query taken several times
    keeps the instance of its cheapest cost; while an instance has none and
    a query is free: matched queries' costs += 1e5, every unmatched
    instance takes its cheapest query, conflicts resolved again. Returns
    int64 tensors sorted by query index.
    """
    Q, K = cost.shape
    empty = torch.zeros(0, dtype=torch.long, device=cost.device)
    if K == 0 or Q == 0:
        return empty, empty.clone()
    cost = cost.clone()
    top = torch.topk(ious.clamp(min=0), min(n_candidates, Q), dim=0)[0]
    ks = torch.clamp(top.sum(dim=0).int(), min=min_k)
    assign = torch.zeros_like(cost)
    for i in range(K):
        _, q = torch.topk(cost[:, i], k=min(int(ks[i]), Q), largest=False)
        assign[q, i] = 1.0
    _keep_cheapest(assign, cost)
    while bool((assign.sum(0) == 0).any()) and bool((assign.sum(1) == 0).any()):
        cost[assign.sum(1) > 0] += REMATCH_PENALTY
        for i in torch.nonzero(assign.sum(0) == 0, as_tuple=False).squeeze(1):
            assign[torch.argmin(cost[:, i]), i] = 1.0
        _keep_cheapest(assign, cost)
    qi = torch.nonzero(assign.sum(dim=1) > 0).reshape(-1)
    ki = assign[qi].max(dim=1)[1]
    return qi, ki


class DynamicKMatcher:
    """Callable: ``matcher(outputs, targets) -> [(query_idx, gt_idx), ...]`` per clip (the default matcher).

    outputs: ``pred_logits [B,Q,C]``, ``pred_boxes [B,Q,T,4]`` (cx,cy,w,h),
    ``pred_masks [B,Q,T,h,w]`` logits. targets: B dicts of
    :func:`mdqe.losses.targets.prepare_target` (``labels``, ``boxes_xyxy``,
    ``box_valid``, ``match_masks [K,T,h,w]``); raw data-format targets are
    prepared here. ``one_to_many=False`` assigns one query per instance
    (Hungarian on the same cost, without the +100 centre prior).
    """

    def __init__(self, weights: LossWeights | None = None, one_to_many: bool = True):
        self.w = weights or LossWeights()
        self.one_to_many = bool(one_to_many)

    @torch.no_grad()
    def costs(self, logits, boxes, masks, target):
        """One clip -> (cost [Q,K], video GIoU [Q,K] or None, in-box-or-centre [Q,T] or None)."""
        w = self.w
        prob = logits.float().sigmoid()
        c_cls = -prob[:, target["labels"]]
        gt_masks = target["match_masks"].to(masks)
        c_mask = (mask_bce_cost(masks.flatten(1), gt_masks.flatten(1)).to(c_cls)
                  + mask_dice_cost(masks.flatten(1), gt_masks.flatten(1)).to(c_cls))
        pred_xyxy = cxcywh_to_xyxy(boxes)
        giou = inside = None
        if bool((~torch.isnan(pred_xyxy)).all()):
            gt = target["boxes_xyxy"].to(pred_xyxy)
            c_l1 = torch.cdist(pred_xyxy.flatten(1), gt.flatten(1), p=1).to(c_cls)
            giou = video_giou_matrix(pred_xyxy, gt, target["box_valid"])
            c = w.matcher_cls * c_cls + w.matcher_box * (c_l1 + (1 - giou)) + w.matcher_dice * c_mask
            inside = centre_prior(pred_xyxy, gt)
        else:
            c = w.matcher_cls * c_cls + w.matcher_dice * c_mask
        bad = torch.isnan(c) | torch.isinf(c)
        if bool(bad.any()):
            c[bad] = NON_FINITE_COST
        return c, giou, inside

    @torch.no_grad()
    def __call__(self, outputs: Dict[str, torch.Tensor],
                 targets: List[dict]) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        from .losses.targets import prepare_target
        logits, boxes, masks = outputs["pred_logits"], outputs["pred_boxes"], outputs["pred_masks"]
        B = logits.shape[0]
        if len(targets) != B:
            raise ValueError(f"matcher: {B} clips of predictions but {len(targets)} targets")
        out = []
        for b in range(B):
            tgt = targets[b]
            if "boxes_xyxy" not in tgt:
                tgt = prepare_target(tgt, masks.shape[-2:])
            if tgt["labels"].numel() == 0:
                e = torch.zeros(0, dtype=torch.long, device=logits.device)
                out.append((e, e.clone()))
                continue
            c, giou, inside = self.costs(logits[b], boxes[b], masks[b], tgt)
            if not self.one_to_many or giou is None:
                qi, ki = linear_sum_assignment(c.cpu())
                out.append((torch.as_tensor(qi, dtype=torch.long, device=logits.device),
                            torch.as_tensor(ki, dtype=torch.long, device=logits.device)))
            else:
                out.append(dynamic_k_assignment(with_centre_prior(c, inside), giou))
        return out
