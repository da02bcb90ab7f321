"""The MDQE model: per-frame encoding (encode_frames) + per-clip decoding (decode_clip).

Shapes: N frames, B clips of T frames, Q = n*n grid queries, C hidden dim, K classes,
E query-embedding dim, Dm mask dim, (H0, W0) level-0 size (stride 8), (h, w) mask size (stride 4).
"""
from __future__ import annotations

from typing import Dict

import torch
import torch.nn as nn

from runtime.contract import LEVEL_TENSORS, PER_FRAME_FEATURES, VALID_HW, level_sizes_from_mask

from ..config import ModelConfig, get_config
from ..tracing import exporting
from .backbone import ResNet
from .decoder import O2IDecoder
from .encoder import DeformableEncoder, InputProjection
from .layers import MLP
from .mask_head import MaskHead
from .padding import flat_valid, full_valid_hw, level_valid
from .query_init import associate, grid_peak_select, grid_select_authors, sample_levels

# The per-frame features are the exported graphs' tensors (runtime.contract): FRAME_KEYS, plus the
# optional per-frame valid_hw [N, 2] int64 (valid height, width of each padded frame; absent = unpadded).
VALID_KEY = VALID_HW
FRAME_KEYS = tuple(k for k in PER_FRAME_FEATURES if k != VALID_KEY)


class MDQE(nn.Module):
    """MDQE (CVPR 2023) for video instance segmentation. See docs/INTERFACES.md section 3."""

    def __init__(self, cfg: ModelConfig | str):
        super().__init__()
        cfg = get_config(cfg)
        self.cfg = cfg
        C, K = cfg.hidden_dim, cfg.num_classes
        if cfg.num_feature_levels < 3:
            raise ValueError("MDQE needs at least 3 feature levels (the mask head uses strides 8/16/32)")
        self.grid = cfg.grid_size
        self.backbone = ResNet(cfg.backbone_depth, cfg.backbone_base_width)
        self.input_proj = InputProjection(self.backbone.out_channels, C, cfg.num_feature_levels)
        self.encoder = DeformableEncoder(C, cfg.num_heads, cfg.num_feature_levels, cfg.enc_points,
                                         cfg.dim_feedforward, cfg.enc_layers, cfg.offset_scale, cfg.dropout)
        self.mask_head = MaskHead(C, cfg.mask_dim)
        self.rpn_cls_embed = MLP(C, C, K, 3)          # semantic head phi_s
        self.track_embed = MLP(C, C, cfg.embed_dim, 3)  # embedding head phi_e
        self.decoder = O2IDecoder(C, cfg.num_heads, cfg.num_feature_levels, cfg.num_frames, cfg.dec_points,
                                  cfg.dim_feedforward, cfg.dec_layers, cfg.offset_scale, cfg.dropout)
        self.cls_embed = MLP(C, C, K, 3)
        self.mask_embed = MLP(C, C, cfg.mask_dim, 3)
        prior = -torch.log(torch.tensor((1 - 0.01) / 0.01)).item()
        nn.init.constant_(self.cls_embed.layers[-1].bias, prior)
        nn.init.constant_(self.rpn_cls_embed.layers[-1].bias, prior)

    # ------------------------------------------------------------------ per frame
    def encode_frames(self, images: torch.Tensor, valid_hw: torch.Tensor | None = None) -> Dict[str, torch.Tensor]:
        """images [N, 3, H, W] (normalised, padded bottom/right with zeros), valid_hw [N, 2] int64 the
        valid (unpadded) height and width of each frame (None = no padding) -> per-frame tensors
        (docs/INTERFACES.md section 3): memory [N, S, C], spatial_shapes [L, 2], level_start_index [L],
        mask_features [N, Dm, h, w], sem_logits [N, K, H0, W0], query_feat [N, Q, C],
        query_points [N, Q, 2], query_embed [N, Q, E], valid_hw [N, 2]."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"encode_frames expects images [N, 3, H, W], got {tuple(images.shape)}")
        valid_hw = self._check_valid_hw(images, valid_hw)
        srcs = self.input_proj(self.backbone(images))
        memory, spatial_shapes, level_start_index, sizes, _ = self.encoder(srcs, valid_hw)
        N, S, C = memory.shape
        maps = []
        start = 0
        for h, w in sizes[:3]:
            maps.append(memory[:, start:start + h * w].transpose(1, 2).reshape(N, C, h, w))
            start = start + h * w
        mask_features = self.mask_head(*maps)
        H0, W0 = sizes[0]
        sem = self.rpn_cls_embed(memory[:, :H0 * W0])                                 # [N, H0*W0, K]
        sem_logits = sem.transpose(1, 2).reshape(N, -1, H0, W0)
        score = sem.max(dim=-1)[0].sigmoid().view(N, H0, W0)   # = max over classes of the sigmoids
        if self.cfg.query_select == "authors":
            _, points = grid_select_authors(score, self.grid)
        else:
            _, points = grid_peak_select(score, self.grid)
        query_feat = sample_levels(memory, sizes, points)
        return {
            "memory": memory, "spatial_shapes": spatial_shapes, "level_start_index": level_start_index,
            "mask_features": mask_features, "sem_logits": sem_logits, "query_feat": query_feat,
            "query_points": points, "query_embed": self.track_embed(query_feat), VALID_KEY: valid_hw,
        }

    @staticmethod
    def _check_valid_hw(images: torch.Tensor, valid_hw):
        if valid_hw is None:
            return full_valid_hw(images)
        if not exporting():
            if tuple(valid_hw.shape) != (images.shape[0], 2):
                raise ValueError(f"valid_hw must be [N, 2] = {(images.shape[0], 2)}, got {tuple(valid_hw.shape)}")
            H, W = images.shape[-2:]
            # values are checked on CPU tensors only: on a GPU the check would be a host sync (and break
            # CUDA-graph capture); the runtime's backends check the numpy array before uploading it
            if valid_hw.device.type == "cpu" and (bool((valid_hw < 1).any()) or bool((valid_hw[:, 0] > H).any())
                                                  or bool((valid_hw[:, 1] > W).any())):
                raise ValueError(f"valid_hw {valid_hw.tolist()} must lie in [1, {H}] x [1, {W}]")
        return valid_hw.to(torch.int64)

    # ------------------------------------------------------------------ per clip
    def decode_clip(self, feats: Dict[str, torch.Tensor], with_aux: bool = True) -> Dict[str, object]:
        """feats: the per-frame tensors of one clip, stacked [T, ...] (or [B, T, ...]) ->
        output dict of docs/INTERFACES.md section 3 (unbatched, or with a leading B).
        with_aux=False skips the deep-supervision outputs (aux_outputs is then an empty list).
        `sem_logits` is optional: it is only passed through as `init_sem_logits` (absent if not given)."""
        missing = [k for k in FRAME_KEYS + LEVEL_TENSORS if k not in feats]
        if missing:
            raise KeyError(f"decode_clip: feats lacks {missing}")
        sem_logits = feats.get("sem_logits")
        memory = feats["memory"]
        batched = memory.dim() == 4
        if not batched:
            if memory.dim() != 3:
                raise ValueError(f"memory must be [T, S, C] or [B, T, S, C], got {tuple(memory.shape)}")
            feats = {k: (v.unsqueeze(0) if k in FRAME_KEYS + (VALID_KEY,) else v) for k, v in feats.items()}
            memory = feats["memory"]
        B, T, S, C = memory.shape
        for k in FRAME_KEYS if not exporting() else ():
            if tuple(feats[k].shape[:2]) != (B, T):
                raise ValueError(f"decode_clip: {k} has leading dims {tuple(feats[k].shape[:2])}, memory has {(B, T)}")
        if T != self.cfg.num_frames:
            raise ValueError(f"this model decodes clips of T={self.cfg.num_frames} frames, got T={T}")
        spatial_shapes, level_start_index = feats["spatial_shapes"], feats["level_start_index"]
        mask_features = feats["mask_features"]                                       # [B, T, Dm, h, w]
        sizes = level_sizes_from_mask(mask_features.shape[-2], mask_features.shape[-1], self.cfg.num_feature_levels)
        if not exporting():
            given = [tuple(s) for s in spatial_shapes.tolist()]
            if given != [tuple(int(v) for v in s) for s in sizes]:
                raise ValueError(f"spatial_shapes {given} do not match mask_features of size "
                                 f"{tuple(mask_features.shape[-2:])} (expected {sizes})")
        valid_hw = feats.get(VALID_KEY)
        tokens_valid = None
        if valid_hw is not None:
            if not exporting() and tuple(valid_hw.shape) != (B, T, 2):
                raise ValueError(f"decode_clip: valid_hw must be {(B, T, 2)}, got {tuple(valid_hw.shape)}")
            tokens_valid = flat_valid(level_valid(valid_hw.reshape(B * T, 2).to(torch.int64), sizes))  # [B*T, S]
        query_feat, points, embeds = feats["query_feat"], feats["query_points"], feats["query_embed"]
        Q = query_feat.shape[2]
        half_window = float(self.cfg.assoc_window_train) if self.training else float(self.cfg.assoc_window_test)
        assoc = associate(embeds, self.grid, half_window)                           # [B, T, Q]
        aligned_feat = query_feat.gather(2, assoc.unsqueeze(-1).expand(-1, -1, -1, C))
        aligned_pts = points.gather(2, assoc.unsqueeze(-1).expand(-1, -1, -1, 2))
        insts, boxes = self.decoder(aligned_feat.reshape(B * T, Q, C), aligned_pts.reshape(B * T, Q, 2),
                                    memory.reshape(B * T, S, C), spatial_shapes, level_start_index, sizes,
                                    tokens_valid)
        stages = range(len(insts)) if with_aux else [len(insts) - 1]
        outs = [self._heads(insts[i], boxes[i], mask_features) for i in stages]
        out = dict(outs[-1])
        out["aux_outputs"] = outs[:-1]
        out.update(init_points=points, init_embeds=embeds, assoc_index=assoc)
        if not batched:
            out = _drop_batch(out)
        if sem_logits is not None:
            out["init_sem_logits"] = sem_logits
        return out

    def _heads(self, inst: torch.Tensor, boxes: torch.Tensor, mask_features: torch.Tensor) -> Dict[str, torch.Tensor]:
        """inst [B, Q, C], boxes [B*T, Q, 4], mask_features [B, T, Dm, h, w] -> the four prediction keys."""
        B, Q, _ = inst.shape
        normed = self.decoder.norm(inst)
        coef = self.mask_embed(normed).tanh()                                       # [B, Q, Dm]
        masks = torch.einsum("bqm,btmhw->bqthw", coef, mask_features)
        return {
            "pred_logits": self.cls_embed(normed),
            "pred_boxes": boxes.view(B, -1, Q, 4).transpose(1, 2),
            "pred_masks": masks,
            "pred_embeds": self.track_embed(inst),
            # the raw clip query (decoder output before decoder_norm): the authors' tracking
            # embedding (`query_embed` = clip_query[-1] in their transformer_dec.py)
            "pred_queries": inst,
        }

    # ------------------------------------------------------------------ whole clip
    def forward(self, images: torch.Tensor, with_aux: bool = True,
                valid_hw: torch.Tensor | None = None) -> Dict[str, object]:
        """images [T, 3, H, W] (unbatched outputs) or [B, T, 3, H, W], valid_hw [T, 2] / [B, T, 2] int64
        valid size of each padded frame (None = no padding) -> decode_clip(encode_frames(...))."""
        if images.dim() == 4:
            return self.decode_clip(self.encode_frames(images, valid_hw), with_aux)
        if images.dim() != 5:
            raise ValueError(f"MDQE expects images [T, 3, H, W] or [B, T, 3, H, W], got {tuple(images.shape)}")
        B, T = images.shape[:2]
        feats = self.encode_frames(images.flatten(0, 1), None if valid_hw is None else valid_hw.reshape(B * T, 2))
        feats = {k: (v.view(B, T, *v.shape[1:]) if k in FRAME_KEYS + ("sem_logits", VALID_KEY) else v)
                 for k, v in feats.items()}
        return self.decode_clip(feats, with_aux)


def _drop_batch(out: Dict[str, object]) -> Dict[str, object]:
    res = {}
    for k, v in out.items():
        if k == "aux_outputs":
            res[k] = [_drop_batch(a) for a in v]
        else:
            res[k] = v[0]
    return res
