"""Shared helpers of the parity stages: the authors' model with random weights, relative errors."""
from __future__ import annotations

import os
from typing import Dict

import torch

# our preset -> the authors' config file (configs/ of their repository)
PRESET_YAML = {"r50_ytvis21": "R50_ytvis21.yaml", "r50_ovis": "R50_ovis_360.yaml"}


def rel_err(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """max |ours - theirs| / max |theirs| (0 when both are all zero)."""
    ours, theirs = ours.detach().double(), theirs.detach().double()
    if ours.shape != theirs.shape:
        raise ValueError(f"shape mismatch: ours {tuple(ours.shape)} vs theirs {tuple(theirs.shape)}")
    den = theirs.abs().max().item()
    num = (ours - theirs).abs().max().item() if ours.numel() else 0.0
    return num / den if den > 0 else num


def build_authors_model(A, preset: str, seed: int = 0):
    """The authors' MDQE (eval mode, CPU, dropout 0) for our preset, with every parameter and
    backbone statistic randomised from `seed` (their init leaves many weights at zero, which would
    hide differences)."""
    from .authors_env import d2_resnet_backbone

    cfg = A.make_cfg(PRESET_YAML[preset], **{"MODEL.MDQE.DROPOUT": 0.0, "MODEL.DEVICE": "cpu"})
    torch.manual_seed(seed)
    model = A.build_mdqe(cfg, lambda c: d2_resnet_backbone(50))
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:   # weights: fan-in scaled normal
                p.copy_(torch.randn(p.shape, generator=g) / p[0].numel() ** 0.5)
            else:             # biases and norm affines: their init + 0.1 N(0, 1)
                p.add_(torch.randn(p.shape, generator=g) * 0.1)
        for name, b in model.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
            elif name.endswith("running_mean") or (name.endswith(".norm.bias") and "backbone" in name):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith(".norm.weight") and "backbone" in name:
                b.copy_(torch.rand(b.shape, generator=g) * 0.5 + 0.5)
    return model.eval(), cfg


def save_d2_checkpoint(model, path: str) -> None:
    """Save like detectron2's Checkpointer: torch.save({"model": state_dict, "iteration": i})."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    state: Dict[str, torch.Tensor] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"model": state, "iteration": 0}, path)
