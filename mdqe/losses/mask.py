"""Mask losses: plain BCE + Dice (paper Eqs. 1-2) and the inter-instance mask
repulsion loss (paper Sec. 3.3, Eqs. 3-6).

All per-instance functions take flattened masks: predictions ``[K, N]``
(logits) and ground truth ``[K, N]`` in {0, 1}, where N = T*h*w pixels of
one clip at the mask resolution, and return a loss per instance ``[K]``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .box_ops import box_iou_pairwise, cxcywh_to_xyxy, video_box_iou

DICE_SMOOTH = 1.0


def downsample_masks(masks: torch.Tensor, size) -> torch.Tensor:
    """Binary masks ``[..., H, W]`` -> float {0,1} masks ``[..., h, w]``.

    A low-resolution pixel is on when at least half of the high-resolution
    pixels it covers are on (area averaging, threshold 0.5).
    """
    h, w = int(size[0]), int(size[1])
    lead = masks.shape[:-2]
    H, W = masks.shape[-2:]
    x = masks.reshape(-1, 1, H, W).float()
    if x.shape[0] == 0:
        return x.new_zeros(*lead, h, w)
    if (H, W) != (h, w):
        if H % h == 0 and W % w == 0:
            x = F.avg_pool2d(x, kernel_size=(H // h, W // w))
        else:
            x = F.interpolate(x, size=(h, w), mode="area")
    return (x >= 0.5).float().reshape(*lead, h, w)


def neighbour_matrix(boxes: torch.Tensor, valid: torch.Tensor, eps: float = 0.1) -> torch.Tensor:
    """Eq. 3: ``o[i, j]`` is True when ``max_t IoU(B_ti, B_tj) > eps`` and ``j != i``.

    boxes [K,T,4] (cx,cy,w,h), valid [K,T] bool -> bool [K,K]. Frames where
    either instance is absent do not count.
    """
    K, T = boxes.shape[:2]
    if K == 0:
        return torch.zeros(0, 0, dtype=torch.bool, device=boxes.device)
    xyxy = cxcywh_to_xyxy(boxes.detach().float())
    best = boxes.new_zeros(K, K, dtype=torch.float32)
    for t in range(T):
        iou, _ = box_iou_pairwise(xyxy[:, t], xyxy[:, t])
        both = valid[:, t][:, None] & valid[:, t][None, :]
        best = torch.maximum(best, torch.where(both, iou, torch.zeros_like(iou)))
    out = best > eps
    out.fill_diagonal_(False)
    return out


def inter_instance_masks(gt: torch.Tensor, neighbours: torch.Tensor) -> torch.Tensor:
    """``M_o = (union of the neighbours' masks) minus the instance's own mask``.

    gt [K, N] in {0,1}, neighbours [K, K] bool -> M_o [K, N] in {0,1}.
    """
    union = (neighbours.to(gt.dtype) @ gt) > 0
    return (union & (gt <= 0)).to(gt.dtype)


def repulsion_weights(gt: torch.Tensor, gt_other: torch.Tensor, alpha: float = 2.0) -> torch.Tensor:
    """Eq. 4's weight map: ``alpha`` where ``M_i = 1`` or ``M_o = 1``, else 1. [K,N] -> [K,N]."""
    hit = (gt > 0) | (gt_other > 0)
    return torch.where(hit, torch.full_like(gt, float(alpha)), torch.ones_like(gt))


def inter_bce_loss(pred: torch.Tensor, gt: torch.Tensor, gt_other: torch.Tensor,
                   alpha: float = 2.0) -> torch.Tensor:
    """Eq. 4: ``sum_p W_p BCE(pred_p, M_p) / sum_p W_p`` per instance. -> [K]."""
    w = repulsion_weights(gt, gt_other, alpha)
    bce = F.binary_cross_entropy_with_logits(pred, gt, reduction="none")
    return (w * bce).sum(-1) / w.sum(-1).clamp(min=1e-6)


def inter_dice_loss(pred: torch.Tensor, gt: torch.Tensor, gt_other: torch.Tensor,
                    smooth: float = DICE_SMOOTH) -> torch.Tensor:
    """Eq. 5 on sigmoid probabilities, with additive smoothing ``smooth``. -> [K].

    ``1 - (2|P*M| + |(1-P)*M_o| + s) / (|P| + |M| + |M_o| + s)``; equals
    :func:`dice_loss` when ``M_o`` is empty.
    """
    p = pred.sigmoid()
    num = 2 * (p * gt).sum(-1) + ((1 - p) * gt_other).sum(-1) + smooth
    den = p.sum(-1) + gt.sum(-1) + gt_other.sum(-1) + smooth
    return 1 - num / den


def bce_loss(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Plain BCE (Eq. 1), mean over pixels per instance. [K,N] -> [K]."""
    return F.binary_cross_entropy_with_logits(pred, gt, reduction="none").mean(-1)


def dice_loss(pred: torch.Tensor, gt: torch.Tensor, smooth: float = DICE_SMOOTH) -> torch.Tensor:
    """Plain Dice (Eq. 2) on sigmoid probabilities with smoothing. [K,N] -> [K]."""
    p = pred.sigmoid()
    return 1 - (2 * (p * gt).sum(-1) + smooth) / (p.sum(-1) + gt.sum(-1) + smooth)


def dice_cost(pred: torch.Tensor, gt: torch.Tensor, smooth: float = DICE_SMOOTH) -> torch.Tensor:
    """Pairwise Dice cost for the matcher: pred logits [Q,N], gt [K,N] -> [Q,K]."""
    p = pred.sigmoid()
    num = 2 * p @ gt.t() + smooth
    den = p.sum(-1)[:, None] + gt.sum(-1)[None, :] + smooth
    return 1 - num / den


def clip_mask_losses(pred: torch.Tensor, gt: torch.Tensor, gt_other: torch.Tensor | None,
                     repulsion: bool = True, alpha: float = 2.0):
    """BCE and Dice terms for matched instances of one or more clips.

    pred [K,N] logits, gt [K,N] {0,1}, gt_other [K,N] (``M_o``; needed when
    ``repulsion``). Returns ``(bce [K], dice [K])``: Eqs. 4-5 when
    ``repulsion`` is True, else plain Eqs. 1-2 (the ablation).
    """
    if repulsion:
        if gt_other is None:
            raise ValueError("repulsion loss needs the inter-instance masks M_o")
        return inter_bce_loss(pred, gt, gt_other, alpha), inter_dice_loss(pred, gt, gt_other)
    return bce_loss(pred, gt), dice_loss(pred, gt)


# ---- the authors' form (default criterion): soft targets, unions that include the instance -------
def neighbour_union_masks(gt: torch.Tensor, boxes_xyxy: torch.Tensor, clip_idx: torch.Tensor,
                          eps: float = 0.1, min_wh: float = 0.05) -> torch.Tensor:
    """The union mask of Eqs. 3-6 as the authors compute it, for matched instances of one batch.

    gt [N,P] soft targets of the N matched (query, instance) pairs, boxes_xyxy
    [N,T,4] their GT boxes, clip_idx [N] the clip of each pair -> float {0,1}
    [N,P]: ``U_i = OR_j (gt_j > 0.5)`` over the pairs j of the same clip whose
    boxes, after widening every box to at least ``min_wh`` about its centre
    (absent frames' zero boxes included), reach a per-frame IoU > ``eps`` in
    some frame. j = i is always included (IoU 1), and so is every instance
    absent in the same frame as i (two widened zero boxes coincide).
    """
    with torch.no_grad():
        wh = (boxes_xyxy[..., 2:] - boxes_xyxy[..., :2]).clamp(min=min_wh)
        xy = 0.5 * (boxes_xyxy[..., 2:] + boxes_xyxy[..., :2])
        wide = torch.cat([xy - 0.5 * wh, xy + 0.5 * wh], dim=-1)
        iou = video_box_iou(wide, wide)[0].max(dim=-1)[0]  # [N,N]
        same = (clip_idx[:, None] == clip_idx[None]).to(iou)
        near = (iou * same) > eps
        return ((near.to(gt.dtype) @ gt.gt(0.5).to(gt.dtype)) > 0).to(gt.dtype)


def union_bce_loss(pred: torch.Tensor, gt: torch.Tensor, union: torch.Tensor) -> torch.Tensor:
    """Eq. 4 in the authors' form: ``sum_p (1 + U_p) BCE(pred_p, gt_p) / max(1, sum_p (1 + U_p))``.

    pred [N,P] logits, gt [N,P] soft targets, union [N,P] from
    :func:`neighbour_union_masks` (weight 2 on the instance's own and its
    neighbours' pixels, 1 elsewhere) -> [N].
    """
    wgt = union + 1
    bce = F.binary_cross_entropy_with_logits(pred, gt, reduction="none")
    return (bce * wgt).sum(1) / wgt.sum(1).clamp(min=1)


def union_dice_loss(pred: torch.Tensor, gt: torch.Tensor, union: torch.Tensor,
                    smooth: float = DICE_SMOOTH) -> torch.Tensor:
    """Eq. 5 in the authors' form, [N,P] -> [N]:
    ``1 - (2 sum p*gt + sum (1-p)*M_o + s) / (sum p + sum gt + sum M_o + s)``
    with ``M_o = (U > 0.5) and (1 - gt > 0.5)`` (neighbour pixels where the soft
    target is below 0.5) and ``1 - p`` computed as ``sigmoid(-logit)``.
    """
    other = (union.gt(0.5) & (1 - gt).gt(0.5)).to(gt.dtype)
    x = pred.float()
    fg, bg = x.sigmoid(), (-x).sigmoid()
    num = 2 * (fg * gt).sum(1) + (bg * other).sum(1)
    den = fg.sum(1) + gt.sum(1) + other.sum(1)
    return 1 - (num + smooth) / (den + smooth)
