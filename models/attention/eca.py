"""Efficient Channel Attention (Wang et al., 2020), as BangguWu/ECANet ``eca_layer``.

A 1-D convolution across the pooled channel descriptor replaces SE's two FC layers.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def adaptive_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """The paper's rule k = |log2(C)/gamma + b/gamma|, rounded to the nearest odd number above."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


class ECALayer(nn.Module):
    """GAP -> Conv1d(1, 1, k, pad (k-1)/2, no bias) across channels -> sigmoid -> scale."""

    attention_type = "eca"

    def __init__(self, channels: int, k_size: int | None = 3) -> None:
        super().__init__()
        if k_size is None:
            k_size = adaptive_kernel_size(channels)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    @property
    def gate(self) -> nn.Module:
        """The sigmoid whose output is the channel attention (N, C, 1, 1)."""
        return self.sigmoid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.avg_pool(x)  # (N, C, 1, 1)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return x * self.sigmoid(y)
