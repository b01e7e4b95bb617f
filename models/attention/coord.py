"""Coordinate Attention (Hou et al., 2021), as houqb/CoordAttention ``mbv2_ca.py`` ``CoordAtt``.

Pool along W (giving an H-profile) and along H (a W-profile), encode both with one shared 1x1 conv
(``conv1`` + ``bn1`` + h-swish, ``mip = max(8, C // 32)``), split, and turn each into a per-channel,
per-coordinate sigmoid gate: a_h (N, C, H, 1) from ``conv2``, a_w (N, C, 1, W) from ``conv3``.
Output x * a_w * a_h. The two sigmoids are modules ``gate_h`` and ``gate_w`` for hooks.
"""
from __future__ import annotations

import torch
from torch import nn

from ._common import HardSwish


class CoordAtt(nn.Module):
    """Direction-aware channel attention that keeps one spatial coordinate in each gate."""

    attention_type = "coord"

    def __init__(self, channels: int, out_channels: int | None = None, groups: int = 32) -> None:
        super().__init__()
        out_channels = out_channels or channels
        mip = max(8, channels // groups)
        self.conv1 = nn.Conv2d(channels, mip, kernel_size=1)
        self.bn1 = nn.BatchNorm2d(mip)
        self.relu = HardSwish()
        self.conv2 = nn.Conv2d(mip, out_channels, kernel_size=1)
        self.conv3 = nn.Conv2d(mip, out_channels, kernel_size=1)
        self.gate_h = nn.Sigmoid()
        self.gate_w = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2:]
        x_h = x.mean(dim=3, keepdim=True)                      # (N, C, H, 1)
        x_w = x.mean(dim=2, keepdim=True).permute(0, 1, 3, 2)  # (N, C, W, 1)
        y = self.relu(self.bn1(self.conv1(torch.cat([x_h, x_w], dim=2))))
        y_h, y_w = torch.split(y, [h, w], dim=2)
        a_h = self.gate_h(self.conv2(y_h))                      # (N, C, H, 1)
        a_w = self.gate_w(self.conv3(y_w.permute(0, 1, 3, 2)))  # (N, C, 1, W)
        return x * a_w * a_h
