"""O2I decoder (paper Fig. 2b): frame-level queries -> clip-level (instance) queries.

Per layer, frame level (batch B*T): deformable cross-attention (reference = per-frame box) ->
self-attention -> FFN. Instance level (batch B): clip query = sum_t softmax_t(time_weights(q_t)) * q_t
is the query of the temporal cross-attention (TCA, the T frames as MSDeformAttn levels, reference =
union of the per-frame boxes), added to the running instance query -> self-attention -> FFN.
Boxes are refined after the warm-up stage and after every layer with one shared box MLP;
positional embeddings are Linear(2 -> C) of the box centres.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .deform_attn import MSDeformAttn
from .layers import MLP, box_cxcywh_to_xyxy, box_xyxy_to_cxcywh, inverse_sigmoid


class DecoderLayer(nn.Module):
    """One O2I layer. Shapes: B clips, T frames, Q queries, C channels, S memory tokens."""

    fp16_compute = True   # a heavy trunk: its convs/matmuls may run in fp16 (export/fp16.py Fp16Policy)

    def __init__(self, d_model: int, n_heads: int, n_levels: int, n_frames: int, n_points: int,
                 d_ffn: int, offset_scale: float, dropout: float = 0.0):
        super().__init__()
        self.n_frames = n_frames
        # frame level
        self.cross_attn = MSDeformAttn(d_model, n_heads, n_levels, n_points, offset_scale, mode="box")
        self.norm2 = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.norm3 = nn.LayerNorm(d_model)
        # instance level
        self.time_weights = nn.Linear(d_model, 1)
        self.temp_attn_inst = MSDeformAttn(d_model, n_heads, n_frames, n_points, offset_scale, mode="box")
        self.norm2_inst = nn.LayerNorm(d_model)
        self.self_attn_inst = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.norm1_inst = nn.LayerNorm(d_model)
        self.linear1_inst = nn.Linear(d_model, d_ffn)
        self.linear2_inst = nn.Linear(d_ffn, d_model)
        self.norm3_inst = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, x_pos, x_ref, x_inst, inst_pos, inst_ref, memory, spatial_shapes,
                level_start_index, level_sizes, valid=None):
        """x, x_pos [B*T, Q, C]; x_ref [B*T, Q, 4]; x_inst, inst_pos [B, Q, C]; inst_ref [B, Q, 4];
        memory [B*T, S, C]; valid [B*T, S] bool or None -> (x [B*T, Q, C], x_inst [B, Q, C])."""
        BT, Q, C = x.shape
        T = self.n_frames
        B = BT // T
        # frame level: cross-attention first, then self-attention, then FFN
        x = self.norm2(x + self.dropout(self.cross_attn(x + x_pos, x_ref, memory, spatial_shapes, level_start_index,
                                                                 valid)))
        after_ca = x
        q = x + x_pos
        x = self.norm1(x + self.dropout(self.self_attn(q, q, x, need_weights=False)[0]))
        x = self.norm3(x + self.dropout(self.linear2(self.dropout(F.gelu(self.linear1(x))))))
        # instance level: time-weighted clip query -> TCA -> self-attention -> FFN
        w = F.softmax(self.time_weights(x).view(B, T, Q, 1), dim=1)
        clip_q = (w * after_ca.view(B, T, Q, C)).sum(1)                            # [B, Q, C]
        tca = self.temp_attn_inst.forward_temporal(clip_q + inst_pos, inst_ref, memory.view(B, T, -1, C),
                                                   spatial_shapes, level_sizes,
                                                   None if valid is None else valid.view(B, T, -1))
        x_inst = self.norm2_inst(x_inst + self.dropout(tca))
        qi = x_inst + inst_pos
        x_inst = self.norm1_inst(x_inst + self.dropout(self.self_attn_inst(qi, qi, x_inst, need_weights=False)[0]))
        x_inst = self.norm3_inst(x_inst + self.dropout(
            self.linear2_inst(self.dropout(F.gelu(self.linear1_inst(x_inst))))))
        return x, x_inst


def clip_box(boxes: torch.Tensor) -> torch.Tensor:
    """Union over frames. boxes [B, T, Q, 4] (cx, cy, w, h) -> [B, Q, 4] (cx, cy, w, h), clipped to [0, 1]."""
    xyxy = box_cxcywh_to_xyxy(boxes).clamp(0, 1)
    union = torch.cat((xyxy[..., :2].min(dim=1)[0], xyxy[..., 2:].max(dim=1)[0]), dim=-1)
    return box_xyxy_to_cxcywh(union)


class O2IDecoder(nn.Module):
    """Warm-up box stage + n layers. Returns per stage (n + 1 of them) the instance queries and boxes."""

    def __init__(self, d_model: int, n_heads: int, n_levels: int, n_frames: int, n_points: int,
                 d_ffn: int, n_layers: int, offset_scale: float, dropout: float = 0.0):
        super().__init__()
        self.n_frames = n_frames
        self.layers = nn.ModuleList(DecoderLayer(d_model, n_heads, n_levels, n_frames, n_points, d_ffn,
                                                 offset_scale, dropout) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)                 # shared "decoder_norm" (also used by the heads)
        self.bbox_embed = MLP(d_model, d_model, 4, 3)     # shared box refinement MLP
        self.point2pos_proj = nn.Linear(2, d_model)
        nn.init.zeros_(self.bbox_embed.layers[-1].bias)

    def _refine(self, x: torch.Tensor, ref: torch.Tensor, B: int):
        """x [B*T, Q, C], ref [B*T, Q, 4] -> boxes, detached ref, x_pos, clip ref box, inst_pos."""
        boxes = (self.bbox_embed(self.norm(x)) + inverse_sigmoid(ref)).sigmoid()
        ref = boxes.detach()                       # next reference: no gradient through the box chain
        x_pos = self.point2pos_proj(boxes[..., :2])  # the positional embedding keeps its gradient
        inst_ref = clip_box(ref.view(B, self.n_frames, *ref.shape[1:]))
        return boxes, ref, x_pos, inst_ref, self.point2pos_proj(inst_ref[..., :2])

    def forward(self, x: torch.Tensor, points: torch.Tensor, memory: torch.Tensor, spatial_shapes: torch.Tensor,
                level_start_index: torch.Tensor, level_sizes: Sequence[Tuple[int, int]],
                valid: Optional[torch.Tensor] = None) -> Tuple[List[torch.Tensor], List[torch.Tensor]]:
        """x [B*T, Q, C] aligned frame queries, points [B*T, Q, 2], memory [B*T, S, C], valid [B*T, S]
        bool (False = padded token) or None
        -> (instance queries: n+1 x [B, Q, C], boxes: n+1 x [B*T, Q, 4] in [0, 1])."""
        BT, Q, C = x.shape
        T = self.n_frames
        B = BT // T
        ref = torch.cat((points, torch.full_like(points, 0.1)), dim=-1)
        x_inst = x.view(B, T, Q, C)[:, (T - 1) // 2]                              # central frame's queries
        boxes, ref, x_pos, inst_ref, inst_pos = self._refine(x, ref, B)
        insts, all_boxes = [x_inst], [boxes]
        for layer in self.layers:
            x, x_inst = layer(x, x_pos, ref, x_inst, inst_pos, inst_ref, memory, spatial_shapes,
                              level_start_index, level_sizes, valid)
            boxes, ref, x_pos, inst_ref, inst_pos = self._refine(x, ref, B)
            insts.append(x_inst)
            all_boxes.append(boxes)
        return insts, all_boxes
