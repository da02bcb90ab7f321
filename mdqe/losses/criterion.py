"""The total MDQE training loss (paper Sec. 3.4):

    L = 2 L_cls + 2 (L_l1 + L_giou) + 4 (L_bce_inter + L_dice_inter) + 2 L_init_sem + 0.5 L_init_reid

(weights from ``cfg.loss``), with deep supervision: the matching losses are
repeated, each with its own Hungarian matching, for every decoder layer's
``aux_outputs``. ``repulsion=False`` swaps Eqs. 4-5 for plain BCE + Dice
(Eqs. 1-2), the ablation of paper Table 1c.

Box regression uses the L1 loss as DESIGN.md states (the paper's text says
smooth L1).
"""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.distributed as dist

from ..config import LossWeights, ModelConfig, get_config
from .box_ops import cxcywh_to_xyxy, generalized_box_iou_elementwise
from .focal import sigmoid_focal_loss
from .init_losses import init_reid_loss, init_sem_loss, point_owners, semantic_targets
from .mask import clip_mask_losses, downsample_masks, inter_instance_masks, neighbour_matrix

MATCH_KEYS = ("cls", "box_l1", "giou", "mask_bce", "mask_dice")


def _global_mean_count(n: float, device, sync: bool = True) -> float:
    """Average a count over data-parallel processes (so every rank normalises alike)."""
    if sync and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        t = torch.tensor([float(n)], device=device)
        dist.all_reduce(t)
        return float(t.item()) / dist.get_world_size()
    return float(n)


class SetCriterion(torch.nn.Module):
    """``criterion(outputs, targets) -> dict``.

    outputs: the batched model output dict (INTERFACES.md section 3, leading
    dim B). targets: list of B dicts with ``labels [K]`` int64 (0-based),
    ``boxes [K,T,4]`` (cx,cy,w,h normalised by the padded size), ``masks
    [K,T,H,W]`` bool at the padded image size and ``valid [K,T]`` bool.

    Returns unweighted losses under ``loss_<name>`` (``loss_<name>_aux<i>``
    for decoder layer i) and their weighted sum under ``loss``.

    ``sync_counts`` (default True): under torch.distributed, the normalising
    counts are averaged over all processes (a collective call: every process
    must call the criterion). Set it False for single-process use inside a
    distributed job (e.g. validation on rank 0).
    """

    def __init__(self, cfg: ModelConfig | str, repulsion: bool = True):
        super().__init__()
        self.cfg = get_config(cfg)
        self.w: LossWeights = self.cfg.loss
        self.repulsion = bool(repulsion)
        self.sync_counts = True
        from ..matcher import HungarianMatcher  # late: mdqe.matcher imports this package
        self.matcher = HungarianMatcher(self.w)

    # ---- target preparation -------------------------------------------------
    def _prepare(self, targets: List[dict], mask_size) -> List[dict]:
        prepared = []
        for tgt in targets:
            masks = tgt["masks"].bool()
            K = masks.shape[0]
            lr = downsample_masks(masks, mask_size)  # [K,T,h,w]
            flat = lr.flatten(1)
            nb = neighbour_matrix(tgt["boxes"], tgt["valid"].bool(), self.w.repulsion_iou)
            other = inter_instance_masks(flat, nb) if K else flat
            prepared.append({"labels": tgt["labels"].long(), "boxes": tgt["boxes"].float(),
                             "valid": tgt["valid"].bool(), "masks": lr, "masks_flat": flat,
                             "other_flat": other, "full_masks": masks})
        return prepared

    # ---- matching losses ----------------------------------------------------
    def _matching_losses(self, out: Dict[str, torch.Tensor], prep: List[dict], num_inst: float) -> Dict[str, torch.Tensor]:
        w = self.w
        logits, boxes, masks = out["pred_logits"], out["pred_boxes"], out["pred_masks"]
        indices = self.matcher(out, prep)
        B, Q, C = logits.shape
        onehot = torch.zeros_like(logits)
        pb, gb, vb, pm, gm, om = [], [], [], [], [], []
        for b, (qi, ki) in enumerate(indices):
            qi, ki = qi.to(logits.device), ki.to(logits.device)
            onehot[b, qi, prep[b]["labels"][ki]] = 1.0
            pb.append(boxes[b, qi]); gb.append(prep[b]["boxes"][ki]); vb.append(prep[b]["valid"][ki])
            pm.append(masks[b, qi].flatten(1)); gm.append(prep[b]["masks_flat"][ki]); om.append(prep[b]["other_flat"][ki])
        loss_cls = sigmoid_focal_loss(logits, onehot, w.focal_alpha, w.focal_gamma).sum() / num_inst
        pb, gb, vb = torch.cat(pb), torch.cat(gb), torch.cat(vb)
        pm, gm, om = torch.cat(pm), torch.cat(gm), torch.cat(om)
        # every process must take part in the count reduction, even one without instances
        nframes = max(_global_mean_count(float(vb.sum()), logits.device, self.sync_counts), 1.0)
        zero = (boxes.sum() + masks.sum()) * 0.0
        if pb.shape[0] == 0:
            return {"cls": loss_cls, "box_l1": zero, "giou": zero, "mask_bce": zero, "mask_dice": zero}
        vf = vb.float()
        l1 = ((pb - gb).abs().sum(-1) * vf).sum() / nframes
        giou = generalized_box_iou_elementwise(cxcywh_to_xyxy(pb), cxcywh_to_xyxy(gb))
        lgiou = ((1 - giou) * vf).sum() / nframes
        bce, dice = clip_mask_losses(pm, gm, om, self.repulsion, w.repulsion_alpha)
        return {"cls": loss_cls, "box_l1": l1, "giou": lgiou,
                "mask_bce": bce.sum() / num_inst, "mask_dice": dice.sum() / num_inst}

    # ---- init losses --------------------------------------------------------
    def _init_losses(self, outputs, prep) -> Dict[str, torch.Tensor]:
        sem = outputs["init_sem_logits"]  # [B,T,C,h0,w0]
        tgt = torch.stack([semantic_targets(p["full_masks"], p["labels"], sem.shape[2], sem.shape[-2:])
                           for p in prep]).to(sem.device)
        loss_sem = init_sem_loss(sem, tgt, self.w.focal_alpha, self.w.focal_gamma)
        total, pairs = outputs["init_embeds"].sum() * 0.0, 0
        for b, p in enumerate(prep):
            owners = point_owners(outputs["init_points"][b], p["full_masks"])
            s, n = init_reid_loss(outputs["init_embeds"][b], owners)
            total, pairs = total + s, pairs + n
        return {"init_sem": loss_sem, "init_reid": total / max(pairs, 1)}

    def forward(self, outputs: Dict[str, torch.Tensor], targets: List[dict]) -> Dict[str, torch.Tensor]:
        if outputs["pred_logits"].dim() != 3:
            raise ValueError("SetCriterion expects batched outputs (leading batch dim); "
                             f"got pred_logits {tuple(outputs['pred_logits'].shape)}")
        prep = self._prepare(targets, outputs["pred_masks"].shape[-2:])
        num_inst = max(_global_mean_count(sum(p["labels"].numel() for p in prep), outputs["pred_logits"].device,
                                          self.sync_counts), 1.0)
        weights = {"cls": self.w.cls, "box_l1": self.w.box_l1, "giou": self.w.giou,
                   "mask_bce": self.w.mask_bce, "mask_dice": self.w.mask_dice,
                   "init_sem": self.w.init_sem, "init_reid": self.w.init_reid}
        losses: Dict[str, torch.Tensor] = {}
        for k, v in self._matching_losses(outputs, prep, num_inst).items():
            losses[f"loss_{k}"] = v
        total = sum(weights[k] * losses[f"loss_{k}"] for k in MATCH_KEYS)
        if self.w.deep_supervision:
            for i, aux in enumerate(outputs.get("aux_outputs", [])):
                for k, v in self._matching_losses(aux, prep, num_inst).items():
                    losses[f"loss_{k}_aux{i}"] = v
                    total = total + weights[k] * v
        for k, v in self._init_losses(outputs, prep).items():
            losses[f"loss_{k}"] = v
            total = total + weights[k] * v
        losses["loss"] = total
        return losses
