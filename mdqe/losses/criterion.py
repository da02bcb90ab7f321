"""The total MDQE training loss.

Two styles, chosen with ``SetCriterion(cfg, style=...)`` (CLI: ``--criterion``):

``style="authors"`` (default): the loss values of the authors' criterion
(``mdqe/models/criterion.py`` + ``matcher.py`` of MinghanLi/MDQE_CVPR2023;
docs/fidelity.md; measured equal by ``tools/parity/criterion.py``)::

    L = 2 L_cls + 2 L_L1 + 2 L_GIoU + 4 L_BCE + 4 L_Dice     (last layer and every aux layer)
      + 2 L_init-sem + 0.5 L_init-reid + 0.5 L_init-reid-aux

* matching: :class:`mdqe.matcher.DynamicKMatcher` (one-to-many), run anew
  for every decoder layer; ``n`` = number of matched queries (averaged over
  processes, at least 1);
* L_cls: sigmoid focal (0.25, 2) over all queries and classes, matched
  queries one-hot; per query the class sum, weighted 1 (matched) or
  ``no_object_weight`` (1 in the authors' configs), divided by the sum of
  the weights, i.e. by B*Q;
* L_L1, L_GIoU: on xyxy boxes, over the (pair, frame) entries whose GT box
  is non-empty, summed and divided by ``T * n``; a non-intersecting pair
  has GIoU 0 (:func:`mdqe.losses.box_ops.matched_giou`);
* L_BCE, L_Dice: soft GT masks (bilinear resize to the mask logits);
  repulsion (Eqs. 3-6) in the authors' form
  (:func:`mdqe.losses.mask.neighbour_union_masks`, ``union_bce_loss``,
  ``union_dice_loss``), summed over pairs / n; ``repulsion=False``: plain
  pixel-mean BCE + Dice on the soft targets;
* L_init-sem: :func:`mdqe.losses.init_losses.init_sem_peak_loss` with the
  peak targets of :func:`mdqe.losses.targets.peak_targets`;
* L_init-reid and its auxiliary term:
  :func:`mdqe.losses.init_losses.init_reid_sampled_loss` (random sampling
  from ``self.generator``: None = torch's default generator, as the
  authors' code does, so ``torch.manual_seed`` makes it reproducible).

``style="paper"``: the earlier paper-style criterion (kept as an option; the
shipped tiny checkpoint was trained with it): Hungarian one-to-one matching
(:class:`mdqe.matcher.HungarianMatcher`), focal loss / number of GT
instances, box terms averaged over valid (instance, frame) pairs, masks
binarised by area averaging, Eqs. 3-6 as the paper writes them, init-sem
against class maps of the masks and init-reid as an all-pairs contrast::

    L = 2 L_cls + 2 (L_l1 + L_giou) + 4 (L_bce_inter + L_dice_inter) + 2 L_init_sem + 0.5 L_init_reid

Box regression uses the L1 loss in both styles (the paper's text says
smooth L1).
"""
from __future__ import annotations

import math
from typing import Dict, List

import torch
import torch.distributed as dist

from ..config import LossWeights, ModelConfig, get_config
import torch.nn.functional as F

from .box_ops import cxcywh_to_xyxy, generalized_box_iou_elementwise, matched_giou
from .focal import sigmoid_focal_loss
from .init_losses import (SEM_NUM_POINTS, init_reid_loss, init_reid_sampled_loss, init_sem_loss, init_sem_peak_loss,
                          point_owners, query_instance_ids, semantic_targets)
from .mask import (bce_loss, clip_mask_losses, dice_loss, downsample_masks, inter_instance_masks, neighbour_matrix,
                   neighbour_union_masks, union_bce_loss, union_dice_loss)
from .targets import peak_targets, prepare_target

MATCH_KEYS = ("cls", "box_l1", "giou", "mask_bce", "mask_dice")
STYLES = ("authors", "paper")
REID_AUX_WEIGHT = 0.5  # the authors' weight of the auxiliary cosine-MSE term of init-reid


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
    dim B): ``pred_logits``, ``pred_boxes``, ``pred_masks``,
    ``aux_outputs``, ``init_sem_logits``, ``init_points``, ``init_embeds``.
    targets: list of B dicts with ``labels [K]`` int64 (0-based), ``boxes
    [K,T,4]`` (cx,cy,w,h normalised by the padded size, zeros where absent),
    ``masks [K,T,H,W]`` bool at the padded image size, ``valid [K,T]`` bool
    and ``ids [K]`` (instance ids; only their order and equality matter).

    Returns unweighted losses under ``loss_<name>`` (``loss_<name>_aux<i>``
    for ``aux_outputs[i]``; ``loss_init_reid_aux`` in the authors' style)
    and their weighted sum under ``loss``.

    style: ``"authors"`` (default) or ``"paper"`` (module docstring).
    repulsion: Eqs. 3-6 (True) or plain BCE + Dice (False, paper Table 1c).
    one_to_many (authors' style): False matches one query per instance
    (Hungarian on the authors' cost). no_object_weight (authors' style):
    the focal-loss weight of unmatched queries (1 in the authors' configs).
    generator (authors' style): the torch.Generator of init-reid's sampling
    (None: torch's default generator).

    ``sync_counts`` (default True): under torch.distributed, the normalising
    counts are averaged over all processes (a collective call: every process
    must call the criterion). Set it False for single-process use inside a
    distributed job (e.g. validation on rank 0).
    """

    def __init__(self, cfg: ModelConfig | str, repulsion: bool = True, style: str = "authors",
                 one_to_many: bool = True, no_object_weight: float = 1.0,
                 generator: torch.Generator | None = None):
        super().__init__()
        if style not in STYLES:
            raise ValueError(f"criterion style must be one of {STYLES}, got {style!r}")
        self.cfg = get_config(cfg)
        self.w: LossWeights = self.cfg.loss
        self.repulsion = bool(repulsion)
        self.style = style
        self.no_object_weight = float(no_object_weight)
        self.generator = generator
        self.sem_num_points = SEM_NUM_POINTS  # the authors' criterion.num_points
        self.sync_counts = True
        from ..matcher import DynamicKMatcher, HungarianMatcher  # late: mdqe.matcher imports this package
        self.matcher = DynamicKMatcher(self.w, one_to_many) if style == "authors" else HungarianMatcher(self.w)

    def _num_matched(self, n: int, device) -> float:
        return max(_global_mean_count(float(n), device, self.sync_counts), 1.0)

    # ---- the authors' style ---------------------------------------------------
    def _matching_losses_authors(self, out: Dict[str, torch.Tensor], prep: List[dict]) -> Dict[str, torch.Tensor]:
        w = self.w
        logits, masks = out["pred_logits"], out["pred_masks"]
        boxes = cxcywh_to_xyxy(out["pred_boxes"])
        indices = self.matcher(out, prep)
        num = self._num_matched(sum(len(q) for q, _ in indices), logits.device)
        B, Q, C = logits.shape
        onehot = torch.zeros_like(logits)
        clip, pb, gb, pm, gm = [], [], [], [], []
        for b, (qi, ki) in enumerate(indices):
            qi, ki = qi.to(logits.device), ki.to(logits.device)
            onehot[b, qi] = F.one_hot(prep[b]["labels"][ki], num_classes=C).to(logits)
            clip.append(torch.full_like(qi, b))
            pb.append(boxes[b, qi]); gb.append(prep[b]["boxes_xyxy"][ki])
            pm.append(masks[b, qi].flatten(1)); gm.append(prep[b]["match_masks"][ki].flatten(1))
        # classification: per-query class sums, weight 1 (matched) / no_object_weight, / sum of weights
        focal = sigmoid_focal_loss(logits.float().flatten(0, 1), onehot.flatten(0, 1), w.focal_alpha, w.focal_gamma)
        flat = onehot.flatten(0, 1)
        qw = (flat > 0).any(dim=-1).float() + self.no_object_weight * (flat == 0).all(dim=-1).float()
        loss_cls = (focal.sum(dim=-1) * qw).sum() / qw.sum().clamp(min=1)
        clip, pb, gb = torch.cat(clip), torch.cat(pb), torch.cat(gb).to(boxes)
        pm, gm = torch.cat(pm), torch.cat(gm).to(masks)
        T = gb.shape[1]
        valid = ((gb[..., 2:] - gb[..., :2]) > 0).all(dim=-1).flatten(0, 1)
        sb, tb = pb.flatten(0, 1)[valid], gb.flatten(0, 1)[valid]
        l1 = F.l1_loss(sb, tb, reduction="sum") / (T * num)
        lgiou = (1 - matched_giou(sb, tb)).sum() / (T * num)
        if pm.shape[0] == 0 or not self.repulsion:
            bce, dice = bce_loss(pm, gm), dice_loss(pm, gm)
        else:
            union = neighbour_union_masks(gm, gb, clip, w.repulsion_iou)
            bce, dice = union_bce_loss(pm, gm, union), union_dice_loss(pm, gm, union)
        return {"cls": loss_cls, "box_l1": l1, "giou": lgiou,
                "mask_bce": bce.sum() / num, "mask_dice": dice.sum() / num}

    def _init_losses_authors(self, outputs, prep) -> Dict[str, torch.Tensor]:
        sem = outputs["init_sem_logits"]  # [B,T,C,H0,W0]
        B, T, C, H, W = sem.shape
        labels, dists, id_maps = [], [], []
        for p in prep:
            lab, dst, ids = peak_targets(p, (H, W), C)
            labels.append(lab); dists.append(dst); id_maps.append(ids)
        loss_sem = init_sem_peak_loss(sem, torch.stack(labels), torch.stack(dists), self.sem_num_points)
        points = outputs["init_points"]  # [B,T,Q,2]
        inst = torch.stack([query_instance_ids(id_maps[b], points[b], (H, W)) for b in range(B)])
        Q = points.shape[2]
        grid = math.isqrt(Q)
        if grid * grid != Q:
            raise ValueError(f"init-reid needs a square query grid; got {Q} queries")
        ctt, aux = init_reid_sampled_loss(outputs["init_embeds"], inst, self.cfg.assoc_window_train, grid,
                                          self.generator)
        return {"init_sem": loss_sem, "init_reid": ctt, "init_reid_aux": aux}

    # ---- the paper style --------------------------------------------------------
    def _prepare_paper(self, targets: List[dict], mask_size) -> List[dict]:
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
    def _matching_losses_paper(self, out: Dict[str, torch.Tensor], prep: List[dict], num_inst: float) -> Dict[str, torch.Tensor]:
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
    def _init_losses_paper(self, outputs, prep) -> Dict[str, torch.Tensor]:
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
        weights = {"cls": self.w.cls, "box_l1": self.w.box_l1, "giou": self.w.giou,
                   "mask_bce": self.w.mask_bce, "mask_dice": self.w.mask_dice,
                   "init_sem": self.w.init_sem, "init_reid": self.w.init_reid, "init_reid_aux": REID_AUX_WEIGHT}
        mask_size = outputs["pred_masks"].shape[-2:]
        if self.style == "authors":
            prep = [prepare_target(t, mask_size) for t in targets]

            def match(o):
                return self._matching_losses_authors(o, prep)
            init = self._init_losses_authors
        else:
            prep = self._prepare_paper(targets, mask_size)
            num_inst = max(_global_mean_count(sum(p["labels"].numel() for p in prep), outputs["pred_logits"].device,
                                              self.sync_counts), 1.0)

            def match(o):
                return self._matching_losses_paper(o, prep, num_inst)
            init = self._init_losses_paper
        losses: Dict[str, torch.Tensor] = {}
        for k, v in match(outputs).items():
            losses[f"loss_{k}"] = v
        total = sum(weights[k] * losses[f"loss_{k}"] for k in MATCH_KEYS)
        if self.w.deep_supervision:
            for i, aux in enumerate(outputs.get("aux_outputs", [])):
                for k, v in match(aux).items():
                    losses[f"loss_{k}_aux{i}"] = v
                    total = total + weights[k] * v
        for k, v in init(outputs, prep).items():
            losses[f"loss_{k}"] = v
            total = total + weights[k] * v
        losses["loss"] = total
        return losses
