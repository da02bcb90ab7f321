"""Parity stage `model`: our MDQE vs the authors' code, same random R50 weights, stage by stage.

The authors' model (their code, random weights, tools/parity/common.py) is saved the way
detectron2 saves a checkpoint, converted with OUR converter (`mdqe.convert.convert_state`),
and both models run the same normalised frames: unpadded, and padded to a multiple of 32 (e.g.
360 valid rows of 384) through their ImageList/mask path and our valid_hw path.

Stages compared (relative error = max |ours - theirs| / max |theirs|):
  encoder        memory [T, S, C]                  vs their encoded_srcs
  mask_features  [T, Dm, h, w]                     vs their mask head (inference)
  sem_map        level-0 semantic logits           vs their rpn_cls_embed
  query_select   grid points [T, Q, 2]             vs their grid_guided_query_selection
  association    aligned points / features         vs their inter_frame_query_association
  cls            class probabilities [Q, K]        vs their output "cls"
  masks          mask logits [Q, T, h, w]          vs einsum(their mask_coeff, their mask feats)
  queries        pred_queries [Q, C]               vs their "query_embed" (tracking embedding)
"""
from __future__ import annotations

import os
import tempfile
import time
from typing import Dict, List

import torch

from .common import build_authors_model, rel_err, save_d2_checkpoint

DEFAULT_SIZES = ("192x320", "360x640")


def parse_size(spec: str):
    """'HxW' -> ((h, w), (Hp, Wp)): the frames are padded to the next multiple of 32, as the authors'
    ImageList.from_tensors(size_divisibility=32) does (360x640 -> 384x640)."""
    h, w = (int(v) for v in spec.split("@")[0].split("x"))
    return (h, w), ((h + 31) // 32 * 32, (w + 31) // 32 * 32)


def _authors_outputs(A, model, frames: List[torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Run their inference path on one clip (their MDQE.inference_vis steps, one window)."""
    detr = model.detr
    dec = detr.transformer_dec
    images = A.ImageList.from_tensors(frames, model.size_divisibility)
    feats, pos = detr.forward_pre_backbone(images)
    enc, enc_masks, shapes = detr.forward_deformable_enc(feats, pos, is_training=False)
    mask_feats = detr.forward_mask_head_inference(enc, shapes)[0]                       # [M, T, h, w]
    lvl_start = torch.cat([shapes.new_zeros(1), shapes.prod(-1).cumsum(0)]).long()
    H, W = shapes[0].tolist()
    conf = dec.rpn_cls_embed(enc[:, lvl_start[0]:lvl_start[1]]).reshape(enc.shape[0], H, W, -1)
    points = dec.grid_guided_query_selection(conf)
    q_init, q_coords, _, _ = dec.query_initialization(enc, None, shapes, lvl_start, False)
    out = dec(enc, enc_masks, shapes)
    masks = torch.einsum("qm,mthw->qthw", out["mask_coeff"][0], mask_feats)
    return {"encoder": enc, "mask_features": mask_feats.transpose(0, 1), "sem_map": conf,
            "query_select": points, "association_points": q_coords, "association_features": q_init,
            "cls": out["cls"][0], "masks": masks, "queries": out["query_embed"][0],
            "_padded_hw": tuple(images.tensor.shape[-2:])}


def _our_outputs(model, frames: List[torch.Tensor], padded_hw, points=None) -> Dict[str, torch.Tensor]:
    """Our path; `points` [T, Q, 2] replaces our grid selection (then the query features and
    embeddings are re-sampled at those points exactly as encode_frames does)."""
    from mdqe.model.query_init import sample_levels
    from runtime.contract import LEVEL_TENSORS, level_sizes_from_mask

    T = len(frames)
    H, W = padded_hw
    images = frames[0].new_zeros(T, 3, H, W)
    for t, f in enumerate(frames):
        images[t, :, :f.shape[-2], :f.shape[-1]] = f
    valid_hw = torch.tensor([tuple(f.shape[-2:]) for f in frames], dtype=torch.int64)
    feats = model.encode_frames(images, valid_hw)
    if points is not None:
        sizes = level_sizes_from_mask(*feats["mask_features"].shape[-2:], model.cfg.num_feature_levels)
        feats["query_points"] = points
        feats["query_feat"] = sample_levels(feats["memory"], sizes, points)
        feats["query_embed"] = model.track_embed(feats["query_feat"])
    out = model.decode_clip({k: (v.unsqueeze(0) if k not in LEVEL_TENSORS else v)
                             for k, v in feats.items()}, with_aux=False)
    out = {k: (v[0] if isinstance(v, torch.Tensor) else v) for k, v in out.items()}
    C = feats["memory"].shape[-1]
    idx = out["assoc_index"]                                                            # [T, Q]
    aligned_pts = feats["query_points"].gather(1, idx.unsqueeze(-1).expand(-1, -1, 2))
    aligned_feat = feats["query_feat"].gather(1, idx.unsqueeze(-1).expand(-1, -1, C))
    return {"encoder": feats["memory"], "mask_features": feats["mask_features"],
            "sem_map": feats["sem_logits"].permute(0, 2, 3, 1), "query_select": feats["query_points"],
            "association_points": aligned_pts, "association_features": aligned_feat,
            "cls": out["pred_logits"].sigmoid(), "masks": out["pred_masks"], "queries": out["pred_queries"]}


def _tie_gaps(conf, p_theirs, p_ours, flips) -> List[float]:
    """For each flipped point: |their upsampled score at their pick - at our pick| / score, i.e. how
    close to a tie the two candidates were (the bottom/right border band of the bilinear upsampling
    holds mathematically equal values that differ only by rounding)."""
    import torch.nn.functional as F
    from mdqe.model.query_init import upsampled_size

    score = conf.sigmoid().max(-1)[0]
    N, H, W = score.shape
    H_up, W_up = upsampled_size(H, W, 14)
    up = F.interpolate(score[:, None], size=(H_up, W_up), mode="bilinear", align_corners=False)[:, 0]
    gaps = []
    for t, q in torch.nonzero(flips).tolist():
        vals = []
        for p in (p_theirs[t, q], p_ours[t, q]):
            col = int(round(float(p[0]) * W_up))
            row = int(float(p[1]) * H_up - col / W_up + 0.5)
            vals.append(float(up[t, row, col]))
        gaps.append(abs(vals[0] - vals[1]) / max(abs(vals[0]), 1e-30))
    return gaps


STAGE_KEYS = ("encoder", "mask_features", "sem_map", "query_select", "association_points",
              "association_features", "cls", "masks", "queries")


def compare_case(A, preset: str, size: str, frames: int = 4, seed: int = 0, workdir: str | None = None) -> dict:
    """One (preset, size) case -> {"preset", "size", "stages": {key: rel_err}, "max_rel_err", ...}."""
    from mdqe import build_model
    from mdqe.config import get_config
    from mdqe.convert import convert_state, _extract_model_state
    from mdqe.checkpoint import safe_torch_load

    (h, w), padded = parse_size(size)
    t0 = time.time()
    authors, _ = build_authors_model(A, preset, seed)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        ckpt = os.path.join(tmp, "authors_random.pth")
        save_d2_checkpoint(authors, ckpt)
        src = _extract_model_state(safe_torch_load(ckpt, allow_numpy=True))
    ours = build_model(get_config(preset)).eval()
    full, report = convert_state(src, ours.state_dict())
    ours.load_state_dict(full)
    g = torch.Generator().manual_seed(seed + 7)
    clip = [torch.randn(3, h, w, generator=g) for _ in range(frames)]
    with torch.no_grad():
        theirs = _authors_outputs(A, authors, clip)
        if theirs["_padded_hw"] != padded:
            raise ValueError(f"size {size!r}: the authors pad {h}x{w} to {theirs['_padded_hw']}, not {padded}")
        mine = _our_outputs(ours, clip, padded)
        # the selection rule itself, on THEIR score map (sigmoid, max over classes): must be exact
        from mdqe.model.query_init import grid_select_authors
        _, rule_points = grid_select_authors(theirs["sem_map"].sigmoid().max(-1)[0], ours.grid)
        # downstream stages given the same selection (their points injected into our path)
        injected = _our_outputs(ours, clip, padded, points=theirs["query_select"])
    flips = (mine["query_select"] != theirs["query_select"]).any(-1)                 # [T, Q]
    stages = {k: rel_err(injected[k], theirs[k]) for k in STAGE_KEYS}
    stages["query_select"] = rel_err(rule_points, theirs["query_select"])
    e2e = {k: rel_err(mine[k], theirs[k]) for k in STAGE_KEYS}
    size = f"{h}x{w}" + (f"@{padded[0]}x{padded[1]}" if padded != (h, w) else "")
    return {"preset": preset, "size": size, "frames": frames, "stages": stages,
            "max_rel_err": max(stages.values()),
            "end_to_end": e2e, "end_to_end_max_rel_err": max(e2e.values()),
            "selection_flips": int(flips.sum()), "selection_points": int(flips.numel()),
            "flip_tie_gaps": _tie_gaps(theirs["sem_map"], theirs["query_select"], mine["query_select"], flips),
            "converter_unmatched": len(report["unmatched_source"]) + len(report["unmatched_target"]),
            "seconds": round(time.time() - t0, 1)}


def run(A, args) -> dict:
    """Stage entry point. args: presets (list), sizes (list of 'HxW[@HpxWp]'), frames, tol."""
    presets = getattr(args, "presets", None) or ["r50_ytvis21", "r50_ovis"]
    # the end-to-end numbers include query-selection flips at exact ties (see docs/fidelity.md);
    # the tolerance applies to the stages with the selection shared
    sizes = getattr(args, "sizes", None) or list(DEFAULT_SIZES)
    tol = getattr(args, "model_tol", 1e-4)
    cases = []
    for preset in presets:
        for size in sizes:
            case = compare_case(A, preset, size, frames=getattr(args, "frames", 4))
            cases.append(case)
            print(f"model {preset} {size}: max rel err {case['max_rel_err']:.2e} ({case['seconds']} s)", flush=True)
    worst = max(c["max_rel_err"] for c in cases)
    return {"ok": worst <= tol, "tolerance": tol, "max_rel_err": worst, "cases": cases}


def table(result: dict) -> str:
    """Markdown table of a `run` result: per case the stages with the selection shared, then the
    end-to-end row with the number of selection flips and the largest tie gap among them."""
    head = "| preset | size (valid@padded) | run | " + " | ".join(STAGE_KEYS) + " | flips (max tie gap) |"
    sep = "|" + "---|" * (len(STAGE_KEYS) + 4)
    rows = []
    for c in result["cases"]:
        rows.append(f"| {c['preset']} | {c['size']} | shared selection | "
                    + " | ".join(f"{c['stages'][k]:.1e}" for k in STAGE_KEYS) + " | |")
        gap = max(c["flip_tie_gaps"]) if c["flip_tie_gaps"] else 0.0
        rows.append(f"| {c['preset']} | {c['size']} | end to end | "
                    + " | ".join(f"{c['end_to_end'][k]:.1e}" for k in STAGE_KEYS)
                    + f" | {c['selection_flips']}/{c['selection_points']} ({gap:.1e}) |")
    return "\n".join([head, sep] + rows)
