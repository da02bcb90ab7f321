"""The two exported graphs as nn.Modules with positional inputs/outputs in contract order
(docs/INTERFACES.md section 5)."""
from __future__ import annotations

import torch
import torch.nn as nn

# tensor names of the contract: one definition, in the runtime's torch-free model-directory reader
from runtime.contract import (DECODER_INPUTS, DECODER_OUTPUTS, ENCODER_INPUTS,  # noqa: F401
                              ENCODER_OUTPUTS, FEATURE_NAMES, VALID_HW, level_sizes,
                              level_sizes_from_mask)

# dynamic axes (names are those of export.json / the TensorRT profiles)
ENCODER_DYNAMIC = {
    "images": {0: "N", 2: "H", 3: "W"},
    VALID_HW: {0: "N"},
    "memory": {0: "N", 1: "S"},
    "mask_features": {0: "N", 2: "h", 3: "w"},
    "query_feat": {0: "N"}, "query_points": {0: "N"}, "query_embed": {0: "N"},
}
DECODER_DYNAMIC = {
    "memory": {1: "S"},
    "mask_features": {2: "h", 3: "w"},
    "pred_masks": {2: "h", 3: "w"},
}


class EncoderGraph(nn.Module):
    """images [N,3,H,W], valid_hw [N,2] int64 (valid size of each padded frame) -> the seven
    per-frame feature tensors."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images, valid_hw):
        from mdqe.ops.msda import level_sizes_hint

        sizes = level_sizes(images.shape[2], images.shape[3], self.model.cfg.num_feature_levels)
        with level_sizes_hint(sizes):
            f = self.model.encode_frames(images, valid_hw)
        return tuple(f[k] for k in ENCODER_OUTPUTS)


class DecoderGraph(nn.Module):
    """One clip of T cached frame features (+ valid_hw [T,2]) -> pred_logits, pred_boxes, pred_masks,
    pred_embeds, pred_queries."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, memory, spatial_shapes, level_start_index, mask_features, query_feat, query_points,
                query_embed, valid_hw):
        feats = dict(memory=memory, spatial_shapes=spatial_shapes, level_start_index=level_start_index,
                     mask_features=mask_features, query_feat=query_feat, query_points=query_points,
                     query_embed=query_embed, valid_hw=valid_hw)
        from mdqe.ops.msda import level_sizes_hint

        sizes = level_sizes_from_mask(mask_features.shape[2], mask_features.shape[3], self.model.cfg.num_feature_levels)
        with level_sizes_hint(sizes):
            out = self.model.decode_clip(feats, with_aux=False)
        return tuple(out[k] for k in DECODER_OUTPUTS)


def run_torch(module: nn.Module, inputs, names):
    """Run a graph module eagerly; returns {name: tensor}."""
    with torch.no_grad():
        outs = module(*inputs)
    return dict(zip(names, outs))
