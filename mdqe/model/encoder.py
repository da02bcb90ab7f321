"""Input projections and the deformable encoder (each frame on its own)."""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .deform_attn import MSDeformAttn
from .layers import pixel_centres
from .padding import flat_valid, level_valid, masked_sine_position_encoding


def _gn_groups(channels: int, preferred: int = 32) -> int:
    """GroupNorm group count: `preferred` if it divides `channels`, else the largest divisor below it."""
    for g in range(min(preferred, channels), 0, -1):
        if channels % g == 0:
            return g
    return 1


class InputProjection(nn.Module):
    """Backbone maps -> L levels of hidden_dim channels (strides 8/16/32/64).

    Levels 0..2: 1x1 conv + GroupNorm(32) on res3/res4/res5; extra levels: 3x3 stride-2 conv + GN.
    """

    fp16_compute = True   # a heavy trunk: its convs/matmuls may run in fp16 (export/fp16.py Fp16Policy)

    def __init__(self, in_channels: List[int], hidden_dim: int, num_levels: int):
        super().__init__()
        layers = []
        for c in in_channels:
            layers.append(nn.Sequential(nn.Conv2d(c, hidden_dim, 1), nn.GroupNorm(_gn_groups(hidden_dim), hidden_dim)))
        c = in_channels[-1]
        for _ in range(num_levels - len(in_channels)):
            layers.append(nn.Sequential(nn.Conv2d(c, hidden_dim, 3, stride=2, padding=1),
                                        nn.GroupNorm(_gn_groups(hidden_dim), hidden_dim)))
            c = hidden_dim
        self.layers = nn.ModuleList(layers)
        for seq in self.layers:
            nn.init.xavier_uniform_(seq[0].weight, gain=1)
            nn.init.zeros_(seq[0].bias)

    def forward(self, feats: List[torch.Tensor]) -> List[torch.Tensor]:
        """feats: backbone maps [N, C_i, H_i, W_i] -> L maps [N, hidden, H_l, W_l]."""
        out = [proj(f) for proj, f in zip(self.layers, feats)]
        src = feats[-1]
        for proj in self.layers[len(feats):]:
            src = proj(src)
            out.append(src)
        return out


class EncoderLayer(nn.Module):
    """Deformable self-attention + FFN (post-norm, GELU). x [N, S, C] -> [N, S, C]."""

    fp16_compute = True   # a heavy trunk: its convs/matmuls may run in fp16 (export/fp16.py Fp16Policy)

    def __init__(self, d_model: int, n_heads: int, n_levels: int, n_points: int, d_ffn: int,
                 offset_scale: float, dropout: float = 0.0):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_heads, n_levels, n_points, offset_scale, mode="free")
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, pos, ref, spatial_shapes, level_start_index, valid=None):
        x = self.norm1(x + self.dropout(self.self_attn(x + pos, ref, x, spatial_shapes, level_start_index, valid)))
        x = self.norm2(x + self.dropout(self.linear2(self.dropout(F.gelu(self.linear1(x))))))
        return x


class DeformableEncoder(nn.Module):
    """Flattens the L levels, adds sine position + level embedding, runs the layers, final LayerNorm.

    forward(srcs: L x [N, C, H_l, W_l], valid_hw [N, 2] int64 valid image size per frame) ->
    (memory [N, S, C], spatial_shapes [L, 2] int64, level_start_index [L] int64,
    level_sizes: L (H_l, W_l) taken from the tensors' shapes, valid [N, S] bool).
    The position encoding is normalised by each frame's valid extent and padded value rows are
    zeroed in every attention layer (docs/model.md, "Padding"); reference points span the padded map.
    """

    def __init__(self, d_model: int, n_heads: int, n_levels: int, n_points: int, d_ffn: int,
                 n_layers: int, offset_scale: float, dropout: float = 0.0):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(d_model, n_heads, n_levels, n_points, d_ffn, offset_scale, dropout)
                                    for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.level_embed = nn.Parameter(torch.randn(n_levels, d_model))

    def forward(self, srcs: List[torch.Tensor], valid_hw: torch.Tensor):
        N, C = srcs[0].shape[:2]
        sizes = [tuple(src.shape[-2:]) for src in srcs]
        valid = level_valid(valid_hw, sizes)
        flat, pos, refs = [], [], []
        for lvl, src in enumerate(srcs):
            h, w = sizes[lvl]
            flat.append(src.flatten(2).transpose(1, 2))                                   # [N, HW, C]
            p = masked_sine_position_encoding(*valid[lvl], C).flatten(2).transpose(1, 2)  # [N, HW, C]
            pos.append(p.to(src.dtype) + self.level_embed[lvl].view(1, 1, -1))
            refs.append(pixel_centres(h, w, src))                                        # [HW, 2]
        memory = torch.cat(flat, 1)
        pos = torch.cat(pos, 1)
        ref = torch.cat(refs, 0).unsqueeze(0).expand(N, -1, -1)                           # [N, S, 2]
        spatial_shapes = shapes_tensor(srcs)
        level_start_index = torch.cat([spatial_shapes.new_zeros(1),
                                       (spatial_shapes[:, 0] * spatial_shapes[:, 1]).cumsum(0)[:-1]])
        tokens_valid = flat_valid(valid)                                                 # [N, S]
        for layer in self.layers:
            memory = layer(memory, pos, ref, spatial_shapes, level_start_index, tokens_valid)
        return self.norm(memory), spatial_shapes, level_start_index, sizes, tokens_valid


def shapes_tensor(srcs: List[torch.Tensor]) -> torch.Tensor:
    """[L, 2] int64 (H_l, W_l) of maps [N, C, H_l, W_l]; recorded as Shape ops while tracing."""
    if torch.jit.is_tracing():
        return torch.stack([torch._shape_as_tensor(s)[-2:] for s in srcs], 0).to(torch.int64)
    sizes = [int(v) for s in srcs for v in s.shape[-2:]]
    if srcs[0].device.type == "cpu":
        return torch.tensor(sizes, dtype=torch.int64).view(-1, 2)
    # on a GPU: fill kernels instead of a blocking host-to-device copy (keeps encode_frames CUDA-graph capturable)
    return torch.stack([torch.full((), v, dtype=torch.int64, device=srcs[0].device) for v in sizes]).view(-1, 2)
