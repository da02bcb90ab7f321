"""Sigmoid focal loss (Lin et al. 2017) and its matching-cost form."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """Element-wise sigmoid focal loss.

    logits, targets: same shape (targets in {0,1} or soft in [0,1]).
    Returns the un-reduced loss of the same shape:
    ``alpha_t * (1 - p_t)**gamma * BCE(logits, targets)`` with
    ``p_t = p*y + (1-p)*(1-y)``, ``alpha_t = alpha*y + (1-alpha)*(1-y)``;
    ``alpha < 0`` disables the alpha balancing.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"focal loss: logits {tuple(logits.shape)} vs targets {tuple(targets.shape)}")
    targets = targets.to(logits.dtype)
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * targets + (1 - alpha) * (1 - targets)) * loss
    return loss


def focal_class_cost(logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.25,
                     gamma: float = 2.0) -> torch.Tensor:
    """Matching cost of assigning each query to each target class.

    logits [Q, C], labels [K] (0-based) -> cost [Q, K]: the focal loss of
    predicting the positive minus the focal loss of predicting the negative,
    for the target's class (lower is better).
    """
    p = logits.sigmoid()
    neg = (1 - alpha) * p ** gamma * -torch.log((1 - p).clamp(min=1e-8))
    pos = alpha * (1 - p) ** gamma * -torch.log(p.clamp(min=1e-8))
    return pos[:, labels] - neg[:, labels]
