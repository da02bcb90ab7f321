"""Multi-scale deformable attention layers (authors' variant), all calling `mdqe.ops.ms_deform_attn`
with the implementation chosen on the module (`msda_impl`, see mdqe/ops/msda/selection.py).

Sampling locations are `ref_xy + offsets / offset_scale` in normalised coordinates (offsets are not
divided by each level's size as in Deformable DETR). Two offset modes:
- "free" (encoder): offsets = Linear(query), bias initialised to head directions.
- "box" (decoder): offsets = fixed head-direction pattern * 0.5 * ref_wh + Linear(query) clamped
  to [-ref_wh * offset_scale, ref_wh * offset_scale], i.e. the pattern scales with the reference box.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops import MSDACaller, ms_deform_attn
from .padding import zero_padded


def _direction_pattern(n_heads: int, n_levels: int, n_points: int, scale: float) -> torch.Tensor:
    """[M, L, P, 2]: head m points along angle 2*pi*m/M (max-norm 1), point k at (k+1)/P * scale."""
    thetas = torch.arange(n_heads, dtype=torch.float32) * (2.0 * math.pi / n_heads)
    d = torch.stack([thetas.cos(), thetas.sin()], -1)
    d = d / d.abs().max(-1, keepdim=True)[0]
    k = torch.arange(1, n_points + 1, dtype=torch.float32).view(1, 1, n_points, 1)
    return d.view(n_heads, 1, 1, 2).expand(n_heads, n_levels, n_points, 2) * k / n_points * scale


class MSDeformAttn(MSDACaller, nn.Module):
    """Deformable attention over `n_levels` maps (feature levels, or frames for TCA).

    Parameters: value_proj, output_proj [C->C], attention_weights [C -> M*L*P],
    and sampling_offsets [C -> M*L*P*2] ("free") or sampling_grid_offsets [C -> M*L*P*2] plus the
    fixed buffer sampling_offsets [1,1,M,L,P,2] ("box"). `msda_impl` ("auto" unless set by
    `mdqe.ops.use_msda_impl`) is the implementation its MSDeformAttn calls use.
    """

    def __init__(self, d_model: int, n_heads: int, n_levels: int, n_points: int,
                 offset_scale: float = 8.0, mode: str = "free"):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} must be divisible by n_heads {n_heads}")
        if mode not in ("free", "box"):
            raise ValueError(f"mode must be 'free' or 'box', got {mode!r}")
        self.d_model, self.n_heads, self.n_levels, self.n_points = d_model, n_heads, n_levels, n_points
        self.scale = float(offset_scale)
        self.mode = mode
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        pattern = _direction_pattern(n_heads, n_levels, n_points, self.scale)
        if mode == "free":
            self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
            level_scale = torch.arange(1, n_levels + 1, dtype=torch.float32).view(1, -1, 1, 1)
            with torch.no_grad():
                self.sampling_offsets.weight.zero_()
                self.sampling_offsets.bias.copy_((pattern * 0.05 * level_scale).reshape(-1))
        else:
            self.register_buffer("sampling_offsets", pattern.view(1, 1, n_heads, n_levels, n_points, 2))
            self.sampling_grid_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
            nn.init.zeros_(self.sampling_grid_offsets.weight)
            nn.init.zeros_(self.sampling_grid_offsets.bias)
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def _locations_and_weights(self, query: torch.Tensor, ref: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """query [B, Lq, C], ref [B, Lq, 2] (points) or [B, Lq, 4] (cx, cy, w, h boxes)
        -> sampling locations [B, Lq, M, L, P, 2], attention weights [B, Lq, M, L, P]."""
        B, Lq, _ = query.shape
        M, L, P = self.n_heads, self.n_levels, self.n_points
        ref = ref[:, :, None, None, None, :]
        if self.mode == "free":
            offsets = self.sampling_offsets(query).view(B, Lq, M, L, P, 2)
        else:
            if ref.shape[-1] != 4:
                raise ValueError("box-mode deformable attention needs reference boxes [B, Lq, 4]")
            wh = ref[..., 2:]
            learned = self.sampling_grid_offsets(query).view(B, Lq, M, L, P, 2)
            learned = torch.maximum(torch.minimum(learned, wh * self.scale), -wh * self.scale)
            offsets = self.sampling_offsets * 0.5 * wh + learned
        loc = ref[..., :2] + offsets / self.scale
        attn = F.softmax(self.attention_weights(query).view(B, Lq, M, L * P), dim=-1).view(B, Lq, M, L, P)
        return loc, attn

    def forward(self, query: torch.Tensor, ref: torch.Tensor, memory: torch.Tensor,
                spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Spatial attention. query [B, Lq, C], ref [B, Lq, 2|4], memory [B, S, C] (L levels concatenated),
        spatial_shapes [L, 2] int64, level_start_index [L] int64, valid [B, S] bool (False = padded token:
        its value row is zeroed before sampling, as the authors do; None = no padding) -> [B, Lq, C]."""
        B, S, C = memory.shape
        value = zero_padded(self.value_proj(memory), valid).view(B, S, self.n_heads, C // self.n_heads)
        loc, attn = self._locations_and_weights(query, ref)
        out = ms_deform_attn(value, spatial_shapes, level_start_index, loc, attn, impl=self.msda_impl)
        return self.output_proj(out)

    def forward_temporal(self, query: torch.Tensor, ref: torch.Tensor, memory: torch.Tensor,
                         spatial_shapes: torch.Tensor, level_sizes: Sequence[Tuple[int, int]],
                         valid: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Temporal cross-attention (TCA): the T frames of one feature level are the MSDeformAttn
        "levels" (n_levels == T); called once per feature level, outputs averaged.

        query [B, Q, C], ref [B, Q, 4] (clip box), memory [B, T, S, C], spatial_shapes [L, 2] int64,
        level_sizes: the L (H_l, W_l) as Python/symbolic ints, valid [B, T, S] bool (False = padded token,
        value row zeroed) or None -> [B, Q, C].
        """
        B, T, S, C = memory.shape
        if T != self.n_levels:
            raise ValueError(f"TCA was built for T={self.n_levels} frames, got memory with T={T}")
        M = self.n_heads
        loc, attn = self._locations_and_weights(query, ref)
        frame_idx = torch.arange(T, device=memory.device, dtype=spatial_shapes.dtype)
        outs = []
        start = 0
        for lvl, (h, w) in enumerate(level_sizes):
            n = h * w
            # projecting level by level gives [B, T, n, C] contiguous: the [B, T*n, M, D] view needs no copy
            v = self.value_proj(memory[:, :, start:start + n])
            if valid is not None:
                v = zero_padded(v, valid[:, :, start:start + n])
            v = v.view(B, T * n, M, C // M)
            shapes = spatial_shapes[lvl:lvl + 1].expand(T, 2)
            starts = frame_idx * (spatial_shapes[lvl, 0] * spatial_shapes[lvl, 1])
            outs.append(ms_deform_attn(v, shapes, starts, loc, attn, impl=self.msda_impl))
            start = start + n
        return self.output_proj(torch.stack(outs, 0).mean(0))
