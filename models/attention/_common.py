"""Building blocks shared by several attention modules (kept tiny: one job each)."""
from __future__ import annotations

import torch
from torch import nn


class ChannelPool(nn.Module):
    """Stack channel-wise max and mean, max first, as the CBAM/Triplet official code does ("Z-pool")."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat((x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)), dim=1)


class ConvBN(nn.Module):
    """Conv (no bias) + BatchNorm(eps 1e-5, momentum 0.01), optional ReLU.

    Attribute names ``conv``/``bn`` follow the official ``BasicConv`` so released checkpoints load.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, relu: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=1e-5, momentum=0.01, affine=True)
        self.relu = nn.ReLU() if relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return self.relu(x) if self.relu is not None else x


def conv_bn_relu(in_ch: int, out_ch: int, kernel_size: int) -> nn.Sequential:
    """Conv (no bias, "same" padding) + BatchNorm (PyTorch defaults) + ReLU, for the CCNet head.

    Not :class:`ConvBN`: that one carries the CBAM/Triplet release's BN momentum (0.01) and ``conv``/``bn``
    names; the bundled Criss-Cross weights were trained with this layout (keys ``conva.0``, ``conva.1``).
    """
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class HardSwish(nn.Module):
    """x * relu6(x + 3) / 6 — the activation Coordinate Attention uses after its shared 1x1 conv."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.clamp(x + 3.0, 0.0, 6.0) / 6.0


def add_query_key_value(module: nn.Module, channels: int, reduction: int = 8) -> None:
    """The 1x1 query / key (C/r) and value (C) convolutions and the zero-initialised ``gamma`` that
    CCNet's and DANet's position attention share, under their official attribute names."""
    qk = max(1, channels // reduction)
    module.query_conv = nn.Conv2d(channels, qk, kernel_size=1)
    module.key_conv = nn.Conv2d(channels, qk, kernel_size=1)
    module.value_conv = nn.Conv2d(channels, channels, kernel_size=1)
    module.gamma = nn.Parameter(torch.zeros(1))
