"""Box utilities for the losses and the matcher.

Boxes are (cx, cy, w, h) normalised to [0, 1] unless a name says xyxy.
"""
from __future__ import annotations

import torch


def cxcywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    """[..., 4] (cx, cy, w, h) -> [..., 4] (x0, y0, x1, y1)."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def xyxy_to_cxcywh(boxes: torch.Tensor) -> torch.Tensor:
    """[..., 4] (x0, y0, x1, y1) -> [..., 4] (cx, cy, w, h)."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) * 0.5, (y0 + y1) * 0.5, x1 - x0, y1 - y0], dim=-1)


def _area(b: torch.Tensor) -> torch.Tensor:
    return (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)


def box_iou_pairwise(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7):
    """IoU and union of two xyxy sets: a [N,4], b [M,4] -> (iou [N,M], union [N,M]).

    Degenerate boxes (zero area on both sides) give IoU 0, never NaN.
    """
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return inter / union.clamp(min=eps), union


def generalized_box_iou_pairwise(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Generalised IoU (Rezatofighi et al. 2019) of xyxy boxes a [N,4] and b [M,4] -> [N,M] in [-1, 1]."""
    iou, union = box_iou_pairwise(a, b, eps)
    lt = torch.min(a[:, None, :2], b[None, :, :2])
    rb = torch.max(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    hull = wh[..., 0] * wh[..., 1]
    return iou - (hull - union) / hull.clamp(min=eps)


def generalized_box_iou_elementwise(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """GIoU of matching rows of xyxy boxes a [...,4], b [...,4] -> [...]."""
    lt = torch.max(a[..., :2], b[..., :2])
    rb = torch.min(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = _area(a) + _area(b) - inter
    iou = inter / union.clamp(min=eps)
    lt_h = torch.min(a[..., :2], b[..., :2])
    rb_h = torch.max(a[..., 2:], b[..., 2:])
    wh_h = (rb_h - lt_h).clamp(min=0)
    hull = wh_h[..., 0] * wh_h[..., 1]
    return iou - (hull - union) / hull.clamp(min=eps)


# ---- the authors' variants (used by the default, authors-style criterion) ----------------------
# Their box utilities differ from the textbook GIoU above in three ways that change loss values:
# the union and the enclosing-box area are clamped at 1e-3 (not a tiny epsilon), the GIoU of
# a pair of boxes that do not intersect is 0 (not negative), and the clip-level GIoU of the
# matching cost is the mean over the frames where the ground-truth box is non-empty.
AUTHORS_AREA_EPS = 1e-3


def box_area_signed(b: torch.Tensor) -> torch.Tensor:
    """(x1 - x0) * (y1 - y0) of xyxy boxes [..., 4] -> [...], without clamping."""
    return (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])


def video_box_iou(a: torch.Tensor, b: torch.Tensor):
    """Per-frame IoU of two sets of clip boxes (xyxy): a [N,T,4], b [M,T,4] -> (iou, inter, union), each [N,M,T].

    The union is clamped at 1e-3 before dividing.
    """
    lt = torch.max(a[:, None, :, :2], b[None, :, :, :2])
    rb = torch.min(a[:, None, :, 2:], b[None, :, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = (box_area_signed(a)[:, None] + box_area_signed(b)[None] - inter).clamp(min=AUTHORS_AREA_EPS)
    return inter / union, inter, union


def video_giou_matrix(pred: torch.Tensor, gt: torch.Tensor, gt_valid: torch.Tensor) -> torch.Tensor:
    """Clip-level GIoU for the matching cost: pred [Q,T,4], gt [K,T,4] (xyxy), gt_valid [K,T] bool -> [Q,K].

    Per frame: IoU - (hull - union) / max(hull, 1e-3) where the boxes intersect, else 0;
    then the mean over the frames where ``gt_valid`` (at least 1 frame in the divisor).
    """
    iou, inter, union = video_box_iou(pred, gt)
    lt = torch.min(pred[:, None, :, :2], gt[None, :, :, :2])
    rb = torch.max(pred[:, None, :, 2:], gt[None, :, :, 2:])
    wh = (rb - lt).clamp(min=0)
    hull = wh[..., 0] * wh[..., 1]
    giou = torch.where(inter > 0, iou - (hull - union) / hull.clamp(min=AUTHORS_AREA_EPS),
                       torch.zeros((), dtype=inter.dtype, device=inter.device))
    giou = torch.where(gt_valid[None], giou, torch.zeros((), dtype=giou.dtype, device=giou.device))
    return giou.sum(-1) / gt_valid.to(giou.dtype).sum(-1).clamp(min=1)[None]


def matched_giou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """GIoU of matching rows of xyxy boxes a [N,4], b [N,4] -> [N]: 0 where the boxes do not intersect,
    union and hull clamped at 1e-3 (the authors' loss form)."""
    lt = torch.max(a[:, :2], b[:, :2])
    rb = torch.min(a[:, 2:], b[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    union = box_area_signed(a) + box_area_signed(b) - inter
    lt_h = torch.min(a[:, :2], b[:, :2])
    rb_h = torch.max(a[:, 2:], b[:, 2:])
    wh_h = (rb_h - lt_h).clamp(min=0)
    hull = wh_h[:, 0] * wh_h[:, 1]
    return torch.where(inter > 0,
                       inter / union.clamp(min=AUTHORS_AREA_EPS) - (hull - union) / hull.clamp(min=AUTHORS_AREA_EPS),
                       torch.zeros((), dtype=inter.dtype, device=inter.device))
