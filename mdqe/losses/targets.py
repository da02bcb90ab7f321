"""Training targets as the authors' code prepares them (docs/fidelity.md, criterion).

* :func:`prepare_target` turns one clip's target dict of the project's data
  format (INTERFACES.md section 4: ``boxes`` (cx,cy,w,h), ``masks`` bool,
  ``valid``) into what the authors' criterion reads: xyxy boxes (zeros where
  the instance is absent), per-frame instance ids (-1 where absent) and the
  soft mask targets of the matching and mask losses.
* :func:`soft_mask_targets`: the ground-truth masks bilinearly resized to the
  mask-logit resolution (align_corners False), NOT binarised: values such as
  0.25 / 0.5 / 0.75 remain on object borders.
* :func:`peak_targets`: the per-pixel targets of the init-sem loss (the
  authors' ``ClipPeakMatcher``): every pixel of the stride-8 map inside an
  instance's (bilinearly resized, > 0.5) mask gets the instance's class, a
  distance weight ``1 - 2 * clamp(d, 0, 0.5)`` with ``d`` the squared
  distance to the box centre normalised by the box size (at least 0.05),
  and the instance id; instances are processed from the smallest mean box
  area to the largest, a larger one overwrites the class and id of pixels
  that a smaller one took and gives them distance weight 0; an instance
  whose mask misses the map entirely takes its nearest free pixel.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F

from .box_ops import cxcywh_to_xyxy, xyxy_to_cxcywh

PEAK_WH_MIN = 0.05      # box sizes are clamped here before normalising centre distances
PEAK_DIST_MAX = 0.5     # squared normalised distance where the distance weight reaches 0
PEAK_CLAIMED = 1e9      # distance given to pixels another instance already took


def soft_mask_targets(masks: torch.Tensor, size) -> torch.Tensor:
    """Masks ``[K,T,H,W]`` (bool or float) -> float ``[K,T,h,w]``: bilinear resize, align_corners False,
    no antialiasing, no threshold."""
    h, w = int(size[0]), int(size[1])
    K, T = masks.shape[:2]
    x = masks.float()
    if K == 0:
        return x.new_zeros(0, T, h, w)
    if tuple(x.shape[-2:]) == (h, w):
        return x
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


def box_valid(boxes_xyxy: torch.Tensor) -> torch.Tensor:
    """Frames where a target box is non-empty: ``x1 > x0 and y1 > y0``. [...,4] -> bool [...]."""
    return ((boxes_xyxy[..., 2:] - boxes_xyxy[..., :2]) > 0).all(dim=-1)


def instance_ids_per_frame(ids: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-frame instance ids: ``ids [K]`` where ``valid [K,T]``, else -1 -> int64 [K,T].

    The ids are replaced by their dense rank (0, 1, ... in ascending id order): the
    losses only compare ids for equality and visit instances in ascending id
    order, so ranks give the same values and stay exact when they pass
    through float sampling (ids above 2**24 would not).
    """
    K, T = valid.shape
    if K == 0:
        return torch.full((0, T), -1, dtype=torch.long, device=valid.device)
    ranks = torch.unique(ids.long(), sorted=True, return_inverse=True)[1]  # equal ids keep one rank
    ranks = ranks.to(valid.device)[:, None].expand(K, T)
    return torch.where(valid.bool(), ranks, torch.full_like(ranks, -1))


def prepare_target(tgt: Dict[str, torch.Tensor], mask_size) -> Dict[str, torch.Tensor]:
    """One clip's target in the authors' form.

    In: ``labels [K]``, ``boxes [K,T,4]`` (cx,cy,w,h normalised by the padded
    size, zeros where absent), ``masks [K,T,H,W]`` bool at the padded size,
    ``valid [K,T]``, optional ``ids [K]`` (default 0..K-1).
    Out: ``labels [K]`` int64, ``boxes_xyxy [K,T,4]`` (zeros where absent),
    ``box_valid [K,T]`` (non-empty box), ``ids_nt [K,T]`` (-1 where absent),
    ``masks [K,T,H,W]`` float, ``match_masks [K,T,h,w]`` soft targets at
    ``mask_size``.
    """
    masks = tgt["masks"]
    K, T = masks.shape[:2]
    valid = tgt["valid"].bool()
    xyxy = cxcywh_to_xyxy(tgt["boxes"].float())
    xyxy = torch.where(valid[..., None], xyxy, torch.zeros_like(xyxy))
    ids = tgt.get("ids")
    if ids is None or (torch.is_tensor(ids) and ids.numel() != K):
        ids = torch.arange(K, device=masks.device)
    full = masks.float()
    return {"labels": tgt["labels"].long(), "boxes_xyxy": xyxy, "box_valid": box_valid(xyxy),
            "ids_nt": instance_ids_per_frame(torch.as_tensor(ids, device=masks.device), valid),
            "masks": full, "match_masks": soft_mask_targets(full, mask_size)}


def reference_points(size, device=None) -> torch.Tensor:
    """Pixel centres of an ``[H, W]`` map, (x, y) normalised: ``[H*W, 2]`` row-major."""
    H, W = int(size[0]), int(size[1])
    ys = torch.linspace(0.5, H - 0.5, H, dtype=torch.float32, device=device)
    xs = torch.linspace(0.5, W - 0.5, W, dtype=torch.float32, device=device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx.reshape(-1) / max(W, 1), gy.reshape(-1) / max(H, 1)), -1)


@torch.no_grad()
def peak_targets(target: Dict[str, torch.Tensor], size, num_classes: int,
                 use_masks: bool = True) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Init-sem targets of one clip (the authors' ``ClipPeakMatcher``).

    target: a :func:`prepare_target` dict (``labels``, ``boxes_xyxy``,
    ``ids_nt``, ``masks [K,T,Hp,Wp]``); size: (H, W) of the semantic map.
    Returns ``labels [T,H*W]`` int64 (-1 = background), ``dist [T,H*W,C]``
    float (the distance weight at the pixel's class) and ``ids [T,H*W]``
    int64 (-1 = background). ``use_masks=False`` takes the pixels whose
    normalised squared distance is below 0.5 instead of the mask pixels.
    """
    H, W = int(size[0]), int(size[1])
    P = H * W
    boxes = target["boxes_xyxy"].float()
    device = boxes.device
    K, T = boxes.shape[:2]
    out_lab = torch.full((T, P), -1, dtype=torch.long, device=device)
    out_dist = torch.zeros(T, P, num_classes, device=device)
    out_ids = torch.full((T, P), -1, dtype=torch.long, device=device)
    if K == 0:
        return out_lab, out_dist, out_ids
    ref = reference_points((H, W), device)
    if use_masks:
        small = F.interpolate(target["masks"].float(), (H, W), mode="bilinear", align_corners=False).gt(0.5)
    # smallest mean box area (absent frames count as 0) first
    _, order = xyxy_to_cxcywh(boxes)[..., 2:].prod(-1).mean(-1).sort()
    c = xyxy_to_cxcywh(boxes[order])
    labels = target["labels"][order].reshape(-1).long()
    ids = target["ids_nt"][order]
    keep = c[..., 2:].gt(0.0).all(dim=-1).any(-1) & (labels >= 0)
    c, labels, ids = c[keep], labels[keep], ids[keep]
    if use_masks:
        small = small[order][keep].flatten(-2)
    n_inst = int(c.shape[0])
    if n_inst == 0:
        return out_lab, out_dist, out_ids
    rel = (c[..., None, :2] - ref[None, None]) / torch.clamp(c[..., None, 2:], min=PEAK_WH_MIN)
    dist = torch.sum(rel ** 2, dim=-1)  # [N,T,P]
    for t in range(T):
        for n in range(n_inst):
            if int(ids[n, t]) == -1:
                continue
            inner = small[n, t] if use_masks else dist[n, t] < PEAK_DIST_MAX
            if bool(inner.any()):
                pos = inner.nonzero().squeeze(1)
            else:
                pos = dist[n, t].sort(dim=0)[1][:1]
            out_lab[t, pos] = labels[n]
            out_dist[t, pos, labels[n]] = 1.0 - 2 * dist[n, t, pos].clamp(min=0, max=PEAK_DIST_MAX)
            out_ids[t, pos] = ids[n, t]
            dist[:, t, pos] = PEAK_CLAIMED
    return out_lab, out_dist, out_ids
