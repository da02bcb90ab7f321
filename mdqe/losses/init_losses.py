"""Losses of the query initialisation (paper Sec. 3.2).

* init-sem: sigmoid focal loss on the class-aware activation map S against
  per-pixel class maps built from the GT masks at the map's resolution.
* init-reid: contrastive loss on the embeddings of the selected frame-level
  queries; a query's identity is the GT instance under its peak point.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .focal import sigmoid_focal_loss
from .mask import downsample_masks


def semantic_targets(masks: torch.Tensor, labels: torch.Tensor, num_classes: int, size) -> torch.Tensor:
    """Per-pixel, per-class targets for the activation map.

    masks [K,T,H,W] bool, labels [K] (0-based) -> float {0,1} [T,C,h,w]: pixel
    (t, c, y, x) is 1 when an instance of class c covers at least half of that
    low-resolution pixel in frame t.
    """
    K, T = masks.shape[:2]
    h, w = int(size[0]), int(size[1])
    out = masks.new_zeros(T, num_classes, h, w, dtype=torch.float32)
    if K == 0:
        return out
    down = downsample_masks(masks, (h, w))  # [K,T,h,w]
    for k in range(K):
        c = int(labels[k])
        if not 0 <= c < num_classes:
            raise ValueError(f"label {c} outside [0, {num_classes})")
        out[:, c] = torch.maximum(out[:, c], down[k])
    return out


def init_sem_loss(sem_logits: torch.Tensor, sem_targets: torch.Tensor, alpha: float = 0.25,
                  gamma: float = 2.0) -> torch.Tensor:
    """Focal loss summed over all map entries / max(1, number of positive entries).

    sem_logits, sem_targets: [..., C, h, w] (e.g. [B,T,C,h,w]) -> scalar.
    """
    loss = sigmoid_focal_loss(sem_logits, sem_targets, alpha, gamma)
    return loss.sum() / sem_targets.sum().clamp(min=1.0)


def point_owners(points: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Which GT instance lies under each query point.

    points [T,Q,2] (x, y) normalised to the padded image, masks [K,T,H,W]
    bool -> [T,Q] int64 instance index, -1 on background. Where masks
    overlap the highest index wins (deterministic).
    """
    T, Q = points.shape[:2]
    K, _, H, W = masks.shape
    if K == 0:
        return torch.full((T, Q), -1, dtype=torch.long, device=points.device)
    px = (points[..., 0].detach() * W).long().clamp(0, W - 1)  # [T,Q]
    py = (points[..., 1].detach() * H).long().clamp(0, H - 1)
    t_idx = torch.arange(T, device=points.device)[:, None].expand(T, Q)
    hit = masks[:, t_idx, py, px]  # [K,T,Q]
    rank = hit.long() * torch.arange(1, K + 1, device=points.device)[:, None, None]
    return rank.max(0).values - 1


def init_reid_loss(embeds: torch.Tensor, owners: torch.Tensor):
    """Contrastive loss of the paper's Sec. 3.2 for one clip.

    embeds [T,Q,E], owners [T,Q] (instance index or -1). Each query lying on
    an instance is an anchor; every query of another frame on the same
    instance is a positive, every query of another frame not on it
    (other instances and background) is a negative. Per (anchor, positive)
    pair: ``-log(exp(s+) / (exp(s+) + sum exp(s-)))`` with dot-product
    similarities. Returns ``(sum over pairs, number of pairs)`` so callers can
    average over a batch.
    """
    T, Q, E = embeds.shape
    e = embeds.reshape(T * Q, E)
    own = owners.reshape(T * Q)
    frame = torch.arange(T, device=e.device).repeat_interleave(Q)
    other_frame = frame[:, None] != frame[None, :]
    anchor = own >= 0
    pos = other_frame & (own[:, None] == own[None, :]) & anchor[:, None]
    if not bool(pos.any()):
        return e.sum() * 0.0, 0
    neg = other_frame & (own[:, None] != own[None, :]) & anchor[:, None]
    sim = e @ e.t()  # [TQ,TQ]
    # A large finite fill (not -inf) keeps the gradient finite for anchors
    # without negatives; their pair loss is then softplus(-1e9 - s) = 0.
    neg_lse = torch.logsumexp(sim.masked_fill(~neg, -1e9), dim=1)
    a_idx, p_idx = pos.nonzero(as_tuple=True)
    pair = F.softplus(neg_lse[a_idx] - sim[a_idx, p_idx])
    return pair.sum(), int(a_idx.numel())
