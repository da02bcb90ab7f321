"""Convert the authors' detectron2 MDQE checkpoints (github.com/MinghanLi/MDQE_CVPR2023) to ours.

    python -m mdqe.convert SRC.pth DST.safetensors --config r50_ytvis21 [--strict] [--report R.json]

The pickle is read with torch.load(weights_only=True); numpy arrays (detectron2 may store them) are
allowed through the numpy reconstruct functions only; anything needing other code is refused.
Keys are renamed by prefix rules; the shared modules the authors register twice (decoder_norm,
bbox_embed, point2pos_proj) must agree. Every key left unmatched on either side is listed; keys of
our model with no source keep a fresh (seeded) initialisation, recorded in the file's metadata.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Dict, List, Tuple

import numpy as np
import torch

from runtime.cli import add_report_arg, add_seed_arg, cli_main, make_parser

from .checkpoint import CheckpointError, safe_torch_load, save_checkpoint
from .config import get_config

# (source regex, our key template); first match wins.
RULES: List[Tuple[str, str]] = [
    (r"^detr\.backbone\.0\.backbone\.(.+)$", r"backbone.\1"),
    (r"^detr\.input_proj\.(\d+)\.(\d+)\.(weight|bias)$", r"input_proj.layers.\1.\2.\3"),
    (r"^detr\.transformer_enc\.level_embed$", r"encoder.level_embed"),
    (r"^detr\.transformer_enc\.encoder\.(layers\..+|norm\..+)$", r"encoder.\1"),
    (r"^detr\.transformer_dec\.decoder\.(layers\..+)$", r"decoder.\1"),
    (r"^detr\.transformer_dec\.(?:decoder\.norm|decoder_norm)\.(.+)$", r"decoder.norm.\1"),
    (r"^detr\.transformer_dec\.(?:decoder\.)?bbox_embed\.(.+)$", r"decoder.bbox_embed.\1"),
    (r"^detr\.transformer_dec\.(?:decoder\.)?point2pos_proj\.(.+)$", r"decoder.point2pos_proj.\1"),
    (r"^detr\.transformer_dec\.(cls_embed|rpn_cls_embed|track_embed|mask_embed)\.(.+)$", r"\1.\2"),
    (r"^(?:detr\.transformer_dec\.)?mask_head\.(.+)$", r"mask_head.\1"),
]
# Source entries that carry no weights: buffers the authors derive from the config (their values
# are recomputed by our model, never loaded) - the query grid offsets of the decoder and of the
# criterion, and every MSDeformAttn's `lvl_spatial_scales` (only used by their initialisation) -
# and BatchNorm counters.
DERIVED = (r"^(?:detr\.transformer_dec\.|criterion\.)query_relpos_grid$", r"\.lvl_spatial_scales$",
           r"\.num_batches_tracked$")


def map_key(src: str):
    """Our key for an authors' key, or None."""
    for pat, rep in RULES:
        if re.match(pat, src):
            return re.sub(pat, rep, src)
    return None


def _to_tensor(v):
    if isinstance(v, torch.Tensor):
        return v
    if isinstance(v, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(v))
    return None


def convert_state(src_state: Dict[str, object], target: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], dict]:
    """Map an authors' state dict onto `target` (our model's state dict, used for shapes and defaults).

    Returns (full state dict, report) with report keys: mapped (count), unmatched_source
    [{key, reason}], unmatched_target [keys kept at their initial value], derived_skipped [keys]."""
    out = dict(target)
    filled: Dict[str, str] = {}
    unmatched_src, derived = [], []
    for key in sorted(src_state):
        if any(re.search(p, key) for p in DERIVED):
            derived.append(key)
            continue
        value = _to_tensor(src_state[key])
        if value is None:
            unmatched_src.append({"key": key, "reason": f"not a tensor ({type(src_state[key]).__name__})"})
            continue
        dst = map_key(key)
        if dst is None or dst not in target:
            unmatched_src.append({"key": key, "reason": "no counterpart" + (f" (would be {dst})" if dst else "")})
            continue
        if tuple(value.shape) != tuple(target[dst].shape):
            unmatched_src.append({"key": key, "reason": f"shape {tuple(value.shape)} != ours "
                                                        f"{tuple(target[dst].shape)} at {dst}"})
            continue
        value = value.to(target[dst].dtype)
        if dst in filled:
            if not torch.equal(out[dst], value):
                unmatched_src.append({"key": key, "reason": f"conflicts with {filled[dst]} (both map to {dst})"})
            continue
        out[dst] = value.clone()
        filled[dst] = key
    report = {
        "mapped": len(filled),
        "unmatched_source": unmatched_src,
        "unmatched_target": sorted(k for k in target if k not in filled),
        "derived_skipped": derived,
    }
    return out, report


def _extract_model_state(obj) -> Dict[str, object]:
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        return obj["model"]
    if isinstance(obj, dict) and all(isinstance(k, str) for k in obj):
        return obj
    raise CheckpointError("expected a detectron2 checkpoint {'model': state_dict, ...} or a state dict")


def convert_file(src: str, dst: str, config: str, seed: int = 0, strict: bool = False) -> dict:
    """Convert SRC (authors' .pth/.pkl) to our safetensors DST. Returns the report."""
    from . import build_model
    cfg = get_config(config)
    state = _extract_model_state(safe_torch_load(src, allow_numpy=True))
    torch.manual_seed(seed)
    target = build_model(cfg).state_dict()
    full, report = convert_state(state, target)
    if strict and (report["unmatched_source"] or report["unmatched_target"]):
        raise CheckpointError(f"--strict: {len(report['unmatched_source'])} source and "
                              f"{len(report['unmatched_target'])} target keys unmatched")
    extra = {"converted_from": os.path.basename(src), "init_seed": seed,
             "unmatched_target": report["unmatched_target"],
             "unmatched_source": [u["key"] for u in report["unmatched_source"]]}
    save_checkpoint(full, dst, cfg, extra=extra)
    return report


def _write_json_atomic(obj, path: str) -> None:
    from runtime.atomic import write_json
    write_json(path, obj, indent=1)


@cli_main
def main(argv=None) -> int:
    ap = make_parser("python -m mdqe.convert", __doc__.split("\n")[0], also=("mdqe-convert",))
    ap.add_argument("src", help="authors' checkpoint (.pth, detectron2 pickle)")
    ap.add_argument("dst", help="output .safetensors")
    ap.add_argument("--config", default="r50_ytvis21", help="preset of the target model")
    add_seed_arg(ap, help="seed for keys without a source")
    ap.add_argument("--strict", action="store_true", help="fail if any key is unmatched")
    add_report_arg(ap, help="also write the report as JSON to this file")
    args = ap.parse_args(argv)
    report = convert_file(args.src, args.dst, args.config, args.seed, args.strict)   # CheckpointError: exit 2
    print(f"mapped {report['mapped']} tensors -> {args.dst}")
    print(f"unmatched source keys ({len(report['unmatched_source'])}):")
    for u in report["unmatched_source"]:
        print(f"  {u['key']}: {u['reason']}")
    print(f"unmatched target keys, left at initialisation ({len(report['unmatched_target'])}):")
    for k in report["unmatched_target"]:
        print(f"  {k}")
    if report["derived_skipped"]:
        print(f"skipped (recomputed from the config): {', '.join(report['derived_skipped'])}")
    if args.report:
        _write_json_atomic(report, args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
