"""Parity stage `converter`: a checkpoint with the authors' exact layout converts strictly.

The layout is made by instantiating the authors' MDQE (their code, random weights) for each of
our presets and saving its state dict the way detectron2 does ({"model": ..., "iteration": ...});
`mdqe.convert.convert_file(..., strict=True)` must map every tensor (0 unexplained keys on either
side), report only the weight-free buffers as derived, and copy every tensor bit-exactly.
"""
from __future__ import annotations

import os
import tempfile

import torch

from .common import build_authors_model, save_d2_checkpoint


def check_preset(A, preset: str, workdir: str | None = None) -> dict:
    from mdqe.checkpoint import load_checkpoint
    from mdqe.convert import DERIVED, convert_file, map_key
    import re

    authors, _ = build_authors_model(A, preset)
    src_state = authors.state_dict()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        src = os.path.join(tmp, f"authors_{preset}.pth")
        dst = os.path.join(tmp, f"{preset}.safetensors")
        save_d2_checkpoint(authors, src)
        report = convert_file(src, dst, preset, strict=True)
        ours, _, _ = load_checkpoint(dst)
    mismatched = []
    for key, value in src_state.items():
        if any(re.search(p, key) for p in DERIVED):
            continue
        if not torch.equal(ours[map_key(key)], value.to(ours[map_key(key)].dtype)):
            mismatched.append(key)
    derived_kinds = sorted({re.sub(r"\.layers\.\d+\.", ".layers.N.", k) for k in report["derived_skipped"]})
    return {"preset": preset, "source_keys": len(src_state), "mapped": report["mapped"],
            "unmatched_source": len(report["unmatched_source"]), "unmatched_target": len(report["unmatched_target"]),
            "derived": len(report["derived_skipped"]), "derived_kinds": derived_kinds,
            "not_bit_exact": mismatched}


def run(A, args) -> dict:
    presets = getattr(args, "presets", None) or ["r50_ytvis21", "r50_ovis"]
    cases = [check_preset(A, p) for p in presets]
    for c in cases:
        print(f"converter {c['preset']}: {c['mapped']} mapped, {c['unmatched_source']}+{c['unmatched_target']} "
              f"unmatched, {c['derived']} derived, {len(c['not_bit_exact'])} not bit-exact", flush=True)
    ok = all(c["unmatched_source"] == 0 and c["unmatched_target"] == 0 and not c["not_bit_exact"] for c in cases)
    return {"ok": ok, "cases": cases}
