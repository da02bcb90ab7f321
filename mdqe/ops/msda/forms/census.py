"""How many MSDeformAttn nodes an exported MDQE graph holds, from the model config (the exporter's
check of every form, export/verify.py)."""
from __future__ import annotations


def expected_msda_calls(cfg) -> dict:
    """How many MSDeformAttn calls (= plugin nodes) each exported graph holds, from the config:
    encoder: one self-attention per encoder layer; decoder: per layer one frame-level
    cross-attention plus one temporal cross-attention (TCA) per feature level."""
    return {"encoder": int(cfg.enc_layers),
            "decoder": int(cfg.dec_layers) * (1 + int(cfg.num_feature_levels))}


def expected_gridsample_nodes(cfg) -> dict:
    """GridSample nodes of the gridsample form: one per level of every call (a TCA call attends the T
    frames of one feature level as its T levels)."""
    calls = expected_msda_calls(cfg)
    L, T = int(cfg.num_feature_levels), int(cfg.num_frames)
    return {"encoder": calls["encoder"] * L, "decoder": int(cfg.dec_layers) * (L + L * T)}
