"""AdamW with a backbone learning-rate multiplier, and a warmup + step-decay schedule."""
from __future__ import annotations

from typing import Sequence

import torch


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float = 1e-4,
                    backbone_lr_mult: float = 0.1) -> torch.optim.AdamW:
    """Two parameter groups: names containing ``backbone`` get ``lr * backbone_lr_mult``."""
    backbone, rest = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (backbone if "backbone" in name.split(".") or name.startswith("backbone") else rest).append(p)
    groups = [{"params": rest, "lr": lr, "name": "default"}]
    if backbone:
        groups.append({"params": backbone, "lr": lr * backbone_lr_mult, "name": "backbone"})
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay)


def lr_factor(it: int, steps: Sequence[int], gamma: float = 0.1, warmup: int = 0) -> float:
    """Multiplier of the base LR at iteration ``it`` (0-based): linear warmup from
    0.001 over ``warmup`` iterations, times ``gamma`` per passed step."""
    f = gamma ** sum(1 for s in steps if it >= s)
    if warmup > 0 and it < warmup:
        f *= 0.001 + (1 - 0.001) * it / warmup
    return f


def build_scheduler(optimizer, steps: Sequence[int], gamma: float = 0.1, warmup: int = 0):
    """LambdaLR over iterations (call ``.step()`` once per iteration)."""
    steps = sorted(int(s) for s in steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, steps, gamma, warmup))
