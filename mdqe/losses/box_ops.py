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
