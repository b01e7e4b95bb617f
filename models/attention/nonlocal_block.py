"""Non-local block, embedded-Gaussian version (Wang et al., 2018), laid out as AlexHex7/Non-local_pytorch.

theta / phi / g are 1x1 convolutions to ``inter = C // 2`` channels; with ``sub_sample`` phi and g are
max-pooled 2x2 (keys at a quarter of the positions). The affinity softmax(theta^T phi) over keys is the
module ``softmax`` (output (N, HW, HW')); ``W`` (1x1 conv + BN, BN zero-initialised so the block starts as
the identity) maps the aggregated values back, and the result is added to the input.
"""
from __future__ import annotations

import torch
from torch import nn


class NonLocalBlock2D(nn.Module):
    """z = W(softmax(theta(x)^T phi(x)) g(x)) + x over all spatial positions."""

    attention_type = "nonlocal"

    def __init__(self, channels: int, inter_channels: int | None = None, sub_sample: bool = True,
                 bn_layer: bool = True) -> None:
        super().__init__()
        inter = inter_channels or max(1, channels // 2)
        self.inter_channels = inter
        self.g = nn.Conv2d(channels, inter, kernel_size=1)
        self.theta = nn.Conv2d(channels, inter, kernel_size=1)
        self.phi = nn.Conv2d(channels, inter, kernel_size=1)
        if bn_layer:
            self.W = nn.Sequential(nn.Conv2d(inter, channels, kernel_size=1), nn.BatchNorm2d(channels))
            nn.init.zeros_(self.W[1].weight)
            nn.init.zeros_(self.W[1].bias)
        else:
            self.W = nn.Conv2d(inter, channels, kernel_size=1)
            nn.init.zeros_(self.W.weight)
            nn.init.zeros_(self.W.bias)
        if sub_sample:
            self.g = nn.Sequential(self.g, nn.MaxPool2d(2))
            self.phi = nn.Sequential(self.phi, nn.MaxPool2d(2))
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        g_x = self.g(x).flatten(2).transpose(1, 2)             # (N, HW', inter)
        theta_x = self.theta(x).flatten(2).transpose(1, 2)     # (N, HW, inter)
        phi_x = self.phi(x).flatten(2)                         # (N, inter, HW')
        affinity = self.softmax(theta_x @ phi_x)               # (N, HW, HW')
        y = (affinity @ g_x).transpose(1, 2).reshape(n, self.inter_channels, h, w)
        return self.W(y) + x
