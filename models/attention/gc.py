"""Global Context block (Cao et al., GCNet, 2019), with the official ContextBlock's names.

``conv_mask`` (1x1 to one map) + softmax over all positions gives one context map (N, 1, H, W) shared by
every query; the pooled context vector goes through ``channel_add_conv`` (1x1 -> LayerNorm -> ReLU -> 1x1,
last conv zero-initialised so the block starts as the identity) and is *added* to every position.
The softmax is the module ``softmax`` so a hook reads the context map.
"""
from __future__ import annotations

import torch
from torch import nn


class ContextBlock(nn.Module):
    """out = x + transform(sum_j softmax(conv_mask(x))_j x_j), the 'add' fusion of GCNet."""

    attention_type = "gc"

    def __init__(self, channels: int, ratio: float = 1 / 16) -> None:
        super().__init__()
        planes = max(1, int(channels * ratio))
        self.conv_mask = nn.Conv2d(channels, 1, kernel_size=1)
        self.softmax = nn.Softmax(dim=2)
        self.channel_add_conv = nn.Sequential(
            nn.Conv2d(channels, planes, kernel_size=1),
            nn.LayerNorm([planes, 1, 1]),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, channels, kernel_size=1),
        )
        nn.init.kaiming_normal_(self.conv_mask.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(self.conv_mask.bias)
        nn.init.zeros_(self.channel_add_conv[-1].weight)
        nn.init.zeros_(self.channel_add_conv[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        weights = self.softmax(self.conv_mask(x).view(n, 1, h * w))        # (N, 1, HW)
        context = (x.view(n, c, h * w) @ weights.transpose(1, 2)).view(n, c, 1, 1)
        return x + self.channel_add_conv(context)
