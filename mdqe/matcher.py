"""Hungarian matcher between clip-level queries and GT instances of a clip.

Cost per (query q, instance k), each averaged over the instance's valid
frames where it is per frame:

    C = w_cls * focal_class_cost
      + w_box * (L1(pred box, gt box) - GIoU(pred box, gt box))
      + w_dice * dice_cost(mask over all T frames)

with the weights ``matcher_cls``, ``matcher_box``, ``matcher_dice`` of
:class:`mdqe.config.LossWeights` (DESIGN.md: 1, 2, 4). The GIoU term uses
the box weight (the authors' config names no separate GIoU cost weight).
Assignment: ``scipy.optimize.linear_sum_assignment`` (minimise).
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .config import LossWeights
from .losses.box_ops import cxcywh_to_xyxy, generalized_box_iou_pairwise
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
