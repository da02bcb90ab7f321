"""Parity stage `criterion`: our training criterion vs the authors' SetCriterion, same inputs.

The same predictions and targets go to both, each in its own format:

* ours: the batched model output dict (INTERFACES.md section 3: ``pred_logits``,
  ``pred_boxes`` (cx,cy,w,h), ``pred_masks``, ``aux_outputs``, ``init_sem_logits``,
  ``init_points``, ``init_embeds``) and the data-format targets (``labels``, ``ids``,
  ``boxes`` (cx,cy,w,h), ``masks`` bool at the padded size, ``valid``);
* theirs: ``({'query': {cls [L,B,Q,K], boxes [L,B,Q,T,4] xyxy, mask_coeff [L,B,Q,M],
  proto [B,M,T,h,w]}, 'query_init': {rpn_sem_cls [B,T,H,W,K], query_init_embed,
  query_init_inst_id}}, tgt_matched)`` and the targets of their ``MDQE.prepare_targets``
  (``labels``, ``ids [N,T]``, ``masks``, ``match_masks`` = their ``util.misc.interpolate``
  (bilinear) of the masks to the stride-4 size, ``boxes`` xyxy).

Their criterion, matcher and ClipPeakMatcher are the objects their ``MDQE(cfg)`` builds
for the preset's config file. Two model-side steps of theirs are done here the way their
``Transformer_Dec.query_initialization`` does them, because their criterion receives
their results rather than computing them: the ClipPeakMatcher call on the level-0
reference points of their ``make_reference_points``, and the nearest ``grid_sample`` of
its id map at the selected query points (``query_init_inst_id``). Our mask logits are
``einsum('bqm,bmthw->bqthw', mask_coeff, proto)`` of the same tensors, as theirs are.
Both sides draw init-reid's random samples from torch's default generator, seeded
identically before each call.

Reported per case: every loss term (their weighted values against ours times the same
weights), the total, the matched (query, instance) pairs of every decoder layer, the
init-sem targets, and the gradients of the total with respect to every input.
Pass: every term within ``tol`` (default 1e-5) in ``|ours - theirs| / max(1, |theirs|)``
and identical matches (the default one-to-many matching of every layer, and their one-to-one
options: `return_hungarian_matcher=True` and predictions without box information).

    python -m tools.parity.criterion --authors-repo /path/to/MDQE_CVPR2023
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch

from mdqe.config import get_config
from mdqe.losses import SetCriterion
from mdqe.losses.targets import peak_targets, prepare_target
from mdqe.matcher import DynamicKMatcher

PRESET_YAML = {"r50_ytvis21": "R50_ytvis21.yaml", "r50_ovis": "R50_ovis_360.yaml"}
# (their key, our key, their weight) for the matching terms; aux layer l adds "_l" / "_aux{l}"
MATCH_TERMS = (("loss_cls", "loss_cls"), ("loss_bbox", "loss_box_l1"), ("loss_giou", "loss_giou"),
               ("loss_mask", "loss_mask_bce"), ("loss_dice", "loss_mask_dice"))
INIT_TERMS = (("loss_sem_cls_query_init", "loss_init_sem"), ("loss_reid_query_init", "loss_init_reid"),
              ("loss_reid_query_init_aux", "loss_init_reid_aux"))


@dataclass
class Case:
    name: str
    preset: str = "r50_ytvis21"
    seed: int = 0
    clips: int = 2
    frames: int = 4
    padded: Tuple[int, int] = (192, 320)
    valid_rows: int = 180           # rows of real image content (the rest is padding)
    layers: int = 7                 # warm-up stage + 6 decoder layers
    mask_dim: int = 24
    embed_dim: int = 64
    repulsion: bool = True
    empty_clip: bool = False        # the last clip has no instance
    full_frame_instance: bool = False  # clip 0 is one instance covering every valid row of every frame
    # (with valid_rows = the padded height every query of clip 0 is on it: init-reid's quirk path)
    sem_points: int = 12544         # their criterion.num_points (fewer than H*W exercises the top-k)


DEFAULT_CASES = (
    Case("ytvis21"),
    Case("ovis", preset="r50_ovis", seed=1),
    Case("ytvis21_no_repulsion", seed=2, repulsion=False),
    Case("ytvis21_empty_clip", seed=3, empty_clip=True),
    Case("ovis_sem_topk_500", preset="r50_ovis", seed=4, sem_points=500),
    Case("ytvis21_full_frame_instance", seed=5, full_frame_instance=True, valid_rows=192),
)


# ----------------------------------------------------------------------------- inputs
def _instances(case: Case, clip: int, g: torch.Generator):
    """Data-format targets of one clip: moving rectangles/ellipses, overlaps, absences, a near duplicate."""
    T, (Hp, Wp), C = case.frames, case.padded, get_config(case.preset).num_classes
    h_valid = case.valid_rows
    if case.empty_clip and clip == case.clips - 1:
        K = 0
    elif case.full_frame_instance and clip == 0:
        K = 1
    else:
        K = 5
    masks = torch.zeros(K, T, Hp, Wp, dtype=torch.bool)
    yy, xx = torch.meshgrid(torch.arange(Hp), torch.arange(Wp), indexing="ij")
    for k in range(K):
        if case.full_frame_instance and clip == 0:
            masks[k, :, :h_valid, :] = True
            continue
        w = int(torch.randint(24, 120, (1,), generator=g))
        h = int(torch.randint(20, 100, (1,), generator=g))
        x0 = int(torch.randint(0, Wp - w, (1,), generator=g))
        y0 = int(torch.randint(0, max(1, h_valid - h), (1,), generator=g))
        if k == 1:   # overlaps instance 0
            x0 = min(Wp - w, int(masks[0].nonzero()[:, 2].float().mean()) + 5)
        dx, dy = (int(v) for v in torch.randint(-6, 7, (2,), generator=g))
        ellipse = bool(torch.rand(1, generator=g) < 0.5)
        for t in range(T):
            if k == 2 and t == 1:  # absent in one frame
                continue
            ox, oy = max(0, min(Wp - w, x0 + dx * t)), max(0, min(h_valid - h, y0 + dy * t))
            if ellipse:
                cy, cx = oy + h / 2, ox + w / 2
                masks[k, t] = ((yy - cy) / (h / 2)) ** 2 + ((xx - cx) / (w / 2)) ** 2 <= 1
            else:
                masks[k, t, oy:oy + h, ox:ox + w] = True
    if K == 5:   # instance 4: a near duplicate of instance 3 (one pixel to the right, other class)
        masks[4] = torch.roll(masks[3], shifts=1, dims=-1)
    masks[..., h_valid:, :] = False
    valid = masks.flatten(2).any(-1)
    boxes = torch.zeros(K, T, 4)
    for k in range(K):
        for t in range(T):
            if not valid[k, t]:
                continue
            ys, xs = masks[k, t].nonzero(as_tuple=True)
            x0, x1, y0, y1 = float(xs.min()), float(xs.max()) + 1, float(ys.min()), float(ys.max()) + 1
            boxes[k, t] = torch.tensor([(x0 + x1) / 2 / Wp, (y0 + y1) / 2 / Hp, (x1 - x0) / Wp, (y1 - y0) / Hp])
    ids = torch.randperm(1000, generator=g)[:K] + 1      # annotation ids, not in instance order
    labels = torch.randint(0, C, (K,), generator=g)
    return {"labels": labels, "ids": ids, "boxes": boxes, "masks": masks, "valid": valid}


def make_inputs(case: Case):
    """Leaf tensors of the predictions and the data-format targets of one case."""
    cfg = get_config(case.preset)
    g = torch.Generator().manual_seed(1000 + case.seed)
    B, T, L = case.clips, case.frames, case.layers
    Q, C, E, M = cfg.num_grid_queries, cfg.num_classes, case.embed_dim, case.mask_dim
    Hp, Wp = case.padded
    h, w, H0, W0 = Hp // 4, Wp // 4, Hp // 8, Wp // 8
    targets = [_instances(case, b, g) for b in range(B)]
    logits = torch.randn(L, B, Q, C, generator=g) * 1.5 - 3.0
    cxcy = torch.rand(L, B, Q, T, 2, generator=g) * 0.9 + 0.05
    wh = torch.rand(L, B, Q, T, 2, generator=g) * 0.5 + 0.02
    boxes = torch.cat([cxcy, wh], -1)
    proto = torch.randn(B, M, T, h, w, generator=g)
    coeff = torch.randn(L, B, Q, M, generator=g) * 0.3
    for b, tgt in enumerate(targets):
        K = tgt["labels"].numel()
        soft = torch.nn.functional.interpolate(tgt["masks"].float(), size=(h, w), mode="bilinear",
                                               align_corners=False) if K else None
        for k in range(K):
            proto[b, k] = soft[k] * 4 - 2             # a prototype per instance (as a mask head learns)
            for _ in range(int(torch.randint(2, 9, (1,), generator=g))):   # queries near instance k
                q = int(torch.randint(0, Q, (1,), generator=g))
                noise = torch.randn(L, T, 4, generator=g) * 0.02
                boxes[:, b, q] = torch.where(tgt["valid"][k][None, :, None], tgt["boxes"][k][None] + noise,
                                             boxes[:, b, q])
                coeff[:, b, q, k] += 1.5
                logits[:, b, q, tgt["labels"][k]] += 4.0
    boxes[..., 2:] = boxes[..., 2:].clamp(min=0.01)
    boxes = boxes.clamp(0, 1)
    sem = torch.randn(B, T, C, H0, W0, generator=g) - 2.0
    # query points as the grid selection makes them (x = col / W_up, y = (row + col / W_up) / H_up)
    Hu, Wu = (2 * H0 // 14 + 1) * 14, (2 * W0 // 14 + 1) * 14
    col = torch.randint(0, Wu, (B, T, Q), generator=g).float()
    row = torch.randint(0, Hu, (B, T, Q), generator=g).float()
    points = torch.stack([col / Wu, (row + col / Wu) / Hu], -1)
    embeds = torch.randn(B, T, Q, E, generator=g) * 0.3
    leaves = {"logits": logits, "boxes": boxes, "coeff": coeff, "proto": proto, "sem": sem, "embeds": embeds}
    return leaves, points, targets


def our_outputs(lv: Dict[str, torch.Tensor], points: torch.Tensor) -> dict:
    L = lv["logits"].shape[0]
    layers = [{"pred_logits": lv["logits"][l], "pred_boxes": lv["boxes"][l],
               "pred_masks": torch.einsum("bqm,bmthw->bqthw", lv["coeff"][l], lv["proto"])} for l in range(L)]
    out = dict(layers[-1])
    out.update(aux_outputs=layers[:-1], init_sem_logits=lv["sem"], init_points=points, init_embeds=lv["embeds"])
    return out


def authors_targets(A, targets: List[dict], mask_size) -> List[dict]:
    """Their MDQE.prepare_targets output for our data-format targets."""
    box_ops = sys.modules[A.package.__name__ + ".util.box_ops"]
    out = []
    for t in targets:
        K, T = t["masks"].shape[:2]
        masks = t["masks"].float()
        xyxy = box_ops.box_cxcywh_to_xyxy(t["boxes"])
        xyxy = torch.where(t["valid"][..., None], xyxy, torch.zeros_like(xyxy)).clamp(min=0, max=1)
        ids = torch.where(t["valid"], t["ids"][:, None].expand(K, T), torch.full((K, T), -1, dtype=torch.long))
        match = A.misc.interpolate(masks, size=tuple(mask_size), mode="bilinear", align_corners=False)
        out.append({"labels": t["labels"].long(), "ids": ids, "masks": masks, "match_masks": match, "boxes": xyxy})
    return out


def authors_outputs(A, model, lv: Dict[str, torch.Tensor], points: torch.Tensor, targets_a: List[dict]):
    """Their criterion's input ``(outputs, tgt_matched)``, built the way their Transformer_Dec builds it."""
    box_ops = sys.modules[A.package.__name__ + ".util.box_ops"]
    misc_models = sys.modules[A.package.__name__ + ".models.misc"]
    B, T, C, H0, W0 = lv["sem"].shape
    Q = points.shape[2]
    dec = model.detr.transformer_dec
    ref = misc_models.make_reference_points((H0, W0))
    tgt_matched = dec.clip_peak_matcher(targets_a, ref, (H0, W0))
    grid = (2 * points - 1).reshape(B * T, Q, 1, 2)
    inst = torch.nn.functional.grid_sample(tgt_matched[2].reshape(B * T, 1, H0, W0).float(), grid, mode="nearest",
                                           padding_mode="border", align_corners=False)
    query = {"cls": lv["logits"], "boxes": box_ops.box_cxcywh_to_xyxy(lv["boxes"]), "mask_coeff": lv["coeff"],
             "proto": lv["proto"]}
    init = {"rpn_sem_cls": lv["sem"].permute(0, 1, 3, 4, 2), "query_init_embed": lv["embeds"],
            "query_init_inst_id": inst.reshape(-1, T, Q).long()}
    return {"query_init": init, "query": query}, tgt_matched


# ----------------------------------------------------------------------------- comparison
def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(1.0, abs(b))


def _grad_err(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    if ours is None or theirs is None:
        return 0.0 if ours is None and theirs is None else float("inf")
    den = theirs.abs().max().item()
    num = (ours - theirs).abs().max().item()
    return num / den if den > 0 else num


def build_authors_criterion(A, preset: str):
    """Their MDQE(cfg) for the preset's config (random weights; only its criterion is used)."""
    from .authors_env import d2_resnet_backbone
    cfg = A.make_cfg(PRESET_YAML[preset], **{"MODEL.DEVICE": "cpu"})
    torch.manual_seed(0)
    return A.build_mdqe(cfg, lambda c: d2_resnet_backbone(18, 16)), cfg


def compare_case(A, case: Case, models: dict) -> dict:
    t0 = time.time()
    if case.preset not in models:
        models[case.preset] = build_authors_criterion(A, case.preset)
    model, acfg = models[case.preset]
    crit_a = model.criterion
    crit_a.interinst_mask_loss_enabled = case.repulsion
    crit_a.num_points = case.sem_points
    cfg = get_config(case.preset)
    assert acfg.MODEL.MDQE.WINDOW_INTER_FRAME_ASSOCIATION == cfg.assoc_window_train
    leaves, points, targets = make_inputs(case)
    mask_size = leaves["proto"].shape[-2:]

    lv_a = {k: v.clone().requires_grad_() for k, v in leaves.items()}
    targets_a = authors_targets(A, targets, mask_size)
    outs_a, matched_a = authors_outputs(A, model, lv_a, points, targets_a)
    seed = 7919 + case.seed
    torch.manual_seed(seed)
    theirs = crit_a((outs_a, matched_a), targets_a)
    total_a = sum(theirs.values())
    total_a.backward()

    lv_o = {k: v.clone().requires_grad_() for k, v in leaves.items()}
    crit_o = SetCriterion(cfg, repulsion=case.repulsion)
    crit_o.sem_num_points = case.sem_points
    outs_o = our_outputs(lv_o, points)
    torch.manual_seed(seed)
    ours = crit_o(outs_o, targets)
    ours["loss"].backward()

    w = cfg.loss
    weight = {"loss_cls": w.cls, "loss_box_l1": w.box_l1, "loss_giou": w.giou, "loss_mask_bce": w.mask_bce,
              "loss_mask_dice": w.mask_dice, "loss_init_sem": w.init_sem, "loss_init_reid": w.init_reid,
              "loss_init_reid_aux": 0.5}
    terms = {}
    pairs = [(a, o) for a, o in INIT_TERMS] + list(MATCH_TERMS)
    pairs += [(f"{a}_{l}", f"{o}_aux{l}") for l in range(case.layers - 1) for a, o in MATCH_TERMS]
    for a_key, o_key in pairs:
        base = o_key.split("_aux")[0] if "_aux" in o_key and not o_key.endswith("reid_aux") else o_key
        mine = weight[base] * float(ours[o_key])
        terms[a_key] = {"theirs": float(theirs[a_key]), "ours": mine, "err": _rel(mine, float(theirs[a_key]))}
    unmatched = sorted(set(theirs) - {a for a, _ in pairs})
    terms["total"] = {"theirs": float(total_a), "ours": float(ours["loss"]),
                      "err": _rel(float(ours["loss"]), float(total_a))}

    # matching of every layer, and the init-sem targets
    match_ok = True
    matcher_o = DynamicKMatcher(w)
    prep = [prepare_target(t, mask_size) for t in targets]
    n_pairs = 0
    with torch.no_grad():
        for l in range(case.layers):
            o_a = {k: (v[l] if k != "proto" else v) for k, v in outs_a["query"].items()}
            ia = crit_a.matcher(o_a, targets_a)
            io = matcher_o({"pred_logits": leaves["logits"][l], "pred_boxes": leaves["boxes"][l],
                            "pred_masks": torch.einsum("bqm,bmthw->bqthw", leaves["coeff"][l], leaves["proto"])},
                           prep)
            for (qa, ka), (qo, ko) in zip(ia, io):
                n_pairs += len(qa)
                match_ok &= qa.tolist() == qo.tolist() and ka.tolist() == ko.tolist()
        # their one-to-one options: return_hungarian_matcher=True, and predictions without box information
        last = {k: (v[-1] if k != "proto" else v) for k, v in outs_a["query"].items()}
        ours_last = {"pred_logits": leaves["logits"][-1], "pred_boxes": leaves["boxes"][-1],
                     "pred_masks": torch.einsum("bqm,bmthw->bqthw", leaves["coeff"][-1], leaves["proto"])}
        nan_a = dict(last, boxes=torch.full_like(last["boxes"], float("nan")))
        nan_o = dict(ours_last, pred_boxes=torch.full_like(ours_last["pred_boxes"], float("nan")))
        hung = [(crit_a.matcher(last, targets_a, return_hungarian_matcher=True),
                 DynamicKMatcher(w, one_to_many=False)(ours_last, prep)),
                (crit_a.matcher(nan_a, targets_a), matcher_o(nan_o, prep))]
        hung_ok = all(qa.tolist() == qo.tolist() and ka.tolist() == ko.tolist()
                      for ia, io in hung for (qa, ka), (qo, ko) in zip(ia, io))
    H0, W0 = leaves["sem"].shape[-2:]
    C = cfg.num_classes
    peak_ok = True
    for b, p in enumerate(prep):
        lab, dst, ids = peak_targets(p, (H0, W0), C)
        peak_ok &= torch.equal(lab, matched_a[0][b]) and torch.equal(dst, matched_a[1][b])
        # their ids are annotation ids, ours ranks: same partition of the pixels
        ta = matched_a[2][b]
        peak_ok &= torch.equal(ta >= 0, ids >= 0)
        if bool((ta >= 0).any()):
            pairs_a = torch.stack([ta[ta >= 0], ids[ta >= 0]], 1).unique(dim=0)
            peak_ok &= pairs_a.shape[0] == ta[ta >= 0].unique().numel() == ids[ids >= 0].unique().numel()
    grads = {k: _grad_err(lv_o[k].grad, lv_a[k].grad) for k in leaves}
    worst = max(v["err"] for v in terms.values())
    return {"case": case.name, "preset": case.preset, "repulsion": case.repulsion,
            "terms": terms, "max_err": worst, "matches_identical": bool(match_ok), "matched_pairs": n_pairs,
            "one_to_one_matches_identical": bool(hung_ok),
            "peak_targets_identical": bool(peak_ok), "grad_rel_err": grads,
            "their_terms_not_compared": unmatched, "seconds": round(time.time() - t0, 1)}


def run(A, args) -> dict:
    """Stage entry point. args (attributes, all optional): criterion_tol (1e-5), criterion_cases (names),
    presets (keep the cases of these presets)."""
    tol = getattr(args, "criterion_tol", None) or 1e-5
    names = getattr(args, "criterion_cases", None)
    presets = getattr(args, "presets", None)
    cases = [c for c in DEFAULT_CASES if (not names or c.name in names) and (not presets or c.preset in presets)]
    if not cases:
        raise ValueError(f"no criterion case selected (cases {names}, presets {presets})")
    models: dict = {}
    results = []
    for case in cases:
        r = compare_case(A, case, models)
        results.append(r)
        print(f"criterion {r['case']}: max term err {r['max_err']:.1e}, matches identical "
              f"{r['matches_identical']} ({r['matched_pairs']} pairs; one-to-one options "
              f"{r['one_to_one_matches_identical']}), peak targets identical "
              f"{r['peak_targets_identical']}, max grad rel err {max(r['grad_rel_err'].values()):.1e} "
              f"({r['seconds']} s)", flush=True)
    worst = max(r["max_err"] for r in results)
    ok = worst <= tol and all(r["matches_identical"] and r["peak_targets_identical"]
                              and r["one_to_one_matches_identical"] and not r["their_terms_not_compared"]
                              for r in results)
    return {"ok": bool(ok), "tolerance": tol, "max_err": worst, "cases": results}


TABLE_TERMS = ("loss_cls", "loss_bbox", "loss_giou", "loss_mask", "loss_dice", "loss_sem_cls_query_init",
               "loss_reid_query_init", "loss_reid_query_init_aux", "total")


def table(result: dict) -> str:
    """Markdown table of a `run` result: per case the error of each last-layer / init term, the worst
    over all terms (aux layers included), matches, gradients."""
    head = ("| case | " + " | ".join(TABLE_TERMS) + " | worst term (all layers) | matches identical "
            "| peak targets identical | grad rel err |")
    sep = "|" + "---|" * (len(TABLE_TERMS) + 5)
    rows = []
    for r in result["cases"]:
        rows.append(f"| {r['case']} | " + " | ".join(f"{r['terms'][k]['err']:.1e}" for k in TABLE_TERMS)
                    + f" | {r['max_err']:.1e} | {'yes' if r['matches_identical'] else 'NO'}"
                    + f" ({r['matched_pairs']} pairs)"
                    + f"; one-to-one: {'yes' if r['one_to_one_matches_identical'] else 'NO'}"
                    + f" | {'yes' if r['peak_targets_identical'] else 'NO'} | {max(r['grad_rel_err'].values()):.1e} |")
    return "\n".join([head, sep] + rows)


def main(argv=None) -> int:
    """``python -m tools.parity.criterion ...`` = ``python -m tools.authors_parity --stages criterion ...``."""
    from tools.authors_parity import main as harness
    return harness(["--stages", "criterion", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
