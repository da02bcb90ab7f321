"""ResNet backbone in plain PyTorch (torchvision-style, frozen BatchNorm).

Module names follow detectron2's ResNet (`stem.conv1`, `res2.0.conv1`, `res2.0.conv1.norm`,
`res2.0.shortcut`, ...) so the authors' checkpoints map one-to-one (mdqe/convert.py).
Bottleneck blocks (depth 50/101) put the stride in the 3x3 conv ("stride_in_1x1 = False").
"""
from __future__ import annotations

from typing import List

import torch
import torch.nn as nn
import torch.nn.functional as F

_STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics and affine terms, all stored as buffers. x: [N, C, H, W]."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)


class ConvNorm(nn.Conv2d):
    """Conv2d without bias followed by a frozen BN stored as `.norm` (detectron2 naming)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, padding: int = 0):
        super().__init__(cin, cout, k, stride=stride, padding=padding, bias=False)
        self.norm = FrozenBatchNorm2d(cout)
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(super().forward(x))


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34). x: [N, cin, H, W] -> [N, cout, H/stride, W/stride]."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = ConvNorm(cin, cout, 3, stride, 1)
        self.conv2 = ConvNorm(cout, cout, 3, 1, 1)
        self.shortcut = ConvNorm(cin, cout, 1, stride) if (stride != 1 or cin != cout) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu_(self.conv1(x)))
        sc = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out + sc)


class BottleneckBlock(nn.Module):
    """1x1 -> 3x3 (stride here) -> 1x1. x: [N, cin, H, W] -> [N, cout, H/stride, W/stride]."""

    def __init__(self, cin: int, cout: int, stride: int, bottleneck: int):
        super().__init__()
        self.conv1 = ConvNorm(cin, bottleneck, 1)
        self.conv2 = ConvNorm(bottleneck, bottleneck, 3, stride, 1)
        self.conv3 = ConvNorm(bottleneck, cout, 1)
        self.shortcut = ConvNorm(cin, cout, 1, stride) if (stride != 1 or cin != cout) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        sc = x if self.shortcut is None else self.shortcut(x)
        return F.relu_(out + sc)


class Stem(nn.Module):
    """7x7/2 conv + 3x3/2 max-pool. [N, 3, H, W] -> [N, base, H/4, W/4]."""

    def __init__(self, base: int):
        super().__init__()
        self.conv1 = ConvNorm(3, base, 7, 2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu_(self.conv1(x)), kernel_size=3, stride=2, padding=1)


class ResNet(nn.Module):
    """ResNet returning res3, res4, res5 (strides 8, 16, 32).

    depth: 18/34 (basic blocks) or 50/101 (bottleneck); base_width: stem channels (64 standard).
    `out_channels` lists the channels of the returned maps.
    """

    fp16_compute = True   # a heavy trunk: its convs/matmuls may run in fp16 (export/fp16.py Fp16Policy)

    def __init__(self, depth: int = 50, base_width: int = 64):
        super().__init__()
        if depth not in _STAGE_BLOCKS:
            raise ValueError(f"unsupported ResNet depth {depth}; choose one of {sorted(_STAGE_BLOCKS)}")
        bottleneck = depth >= 50
        self.stem = Stem(base_width)
        cin = base_width
        self.out_channels: List[int] = []
        for i, n_blocks in enumerate(_STAGE_BLOCKS[depth]):
            width = base_width * 2 ** i
            cout = width * 4 if bottleneck else width
            blocks = []
            for b in range(n_blocks):
                stride = 2 if (b == 0 and i > 0) else 1
                blocks.append(BottleneckBlock(cin, cout, stride, width) if bottleneck
                              else BasicBlock(cin, cout, stride))
                cin = cout
            self.add_module(f"res{i + 2}", nn.Sequential(*blocks))
            if i > 0:
                self.out_channels.append(cout)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        """x: [N, 3, H, W] -> [res3 [N, C3, H/8, W/8], res4 [.., H/16, W/16], res5 [.., H/32, W/32]]."""
        x = self.res2(self.stem(x))
        r3 = self.res3(x)
        r4 = self.res4(r3)
        r5 = self.res5(r4)
        return [r3, r4, r5]
