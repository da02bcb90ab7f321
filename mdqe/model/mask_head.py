"""YOLACT-like mask head: encoder levels at strides 32/16/8 -> mask features at stride 4."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .encoder import _gn_groups


class DepthwiseSeparableConv(nn.Module):
    """k x k depthwise conv + 1x1 conv + GroupNorm + ReLU. [N, cin, H, W] -> [N, cout, H, W]."""

    def __init__(self, cin: int, cout: int, k: int = 5):
        super().__init__()
        self.depthwise = nn.Conv2d(cin, cin, k, padding=k // 2, groups=cin)
        self.pointwise = nn.Conv2d(cin, cout, 1)
        self.gn = nn.GroupNorm(32 if cout % 32 == 0 else _gn_groups(cout, 24), cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.gn(self.pointwise(self.depthwise(x))))


class MaskHead(nn.Module):
    """Top-down fusion of three encoder levels, then x2 upsampling.

    forward(p8 [N, C, H/8, W/8], p16 [N, C, H/16, W/16], p32 [N, C, H/32, W/32])
    -> mask features [N, mask_dim, H/4, W/4].
    """

    fp16_compute = True   # a heavy trunk: its convs/matmuls may run in fp16 (export/fp16.py Fp16Policy)

    def __init__(self, hidden_dim: int, mask_dim: int):
        super().__init__()
        g = _gn_groups(hidden_dim, 8)
        self.lay1 = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1)
        self.gn1 = nn.GroupNorm(g, hidden_dim)
        self.lay2 = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1)
        self.gn2 = nn.GroupNorm(g, hidden_dim)
        self.lay3 = nn.Conv2d(hidden_dim, hidden_dim, 3, padding=1)
        self.gn3 = nn.GroupNorm(g, hidden_dim)
        self.adapter1 = nn.Conv2d(hidden_dim, hidden_dim, 1)
        self.adapter2 = nn.Conv2d(hidden_dim, hidden_dim, 1)
        self.out_lay1 = DepthwiseSeparableConv(hidden_dim, hidden_dim, 5)
        # 1x1 depthwise transposed conv, stride 2: each pixel to the top-left of a 2x2 block (x2 size)
        self.out_uplay = nn.ConvTranspose2d(hidden_dim, hidden_dim, 1, stride=2, output_padding=1, groups=hidden_dim)
        self.out_lay2 = DepthwiseSeparableConv(hidden_dim, mask_dim, 5)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, p8: torch.Tensor, p16: torch.Tensor, p32: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.gn1(self.lay1(p32)))
        x = self.adapter1(p16) + F.interpolate(x, size=p16.shape[-2:], mode="nearest")
        x = F.gelu(self.gn2(self.lay2(x)))
        x = self.adapter2(p8) + F.interpolate(x, size=p8.shape[-2:], mode="nearest")
        x = F.gelu(self.gn3(self.lay3(x)))
        return self.out_lay2(self.out_uplay(self.out_lay1(x)))
