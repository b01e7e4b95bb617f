"""CBAM (Woo et al., 2018), laid out as Jongchan/attention-module ``MODELS/cbam.py``.

Channel gate: avg- and max-pooled descriptors through one shared MLP, *summed*, then sigmoid.
Spatial gate: cat([max, mean]) over channels -> 7x7 conv + BN (no ReLU) -> sigmoid.
Both sigmoids are modules (``ChannelGate.gate``, ``SpatialGate.gate``) so hooks see the maps.
"""
from __future__ import annotations

import torch
from torch import nn

from ._common import ChannelPool, ConvBN


class CBAMChannelGate(nn.Module):
    """Shared-MLP channel attention; the gate output has shape (N, C, 1, 1)."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels, hidden),
            nn.ReLU(),
            nn.Linear(hidden, channels),
        )
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        raw = self.mlp(x.mean(dim=(2, 3))) + self.mlp(x.amax(dim=(2, 3)))
        return x * self.gate(raw.view(n, c, 1, 1))


class CBAMSpatialGate(nn.Module):
    """Channel-pooled 2-map input -> k x k conv + BN -> sigmoid; gate output (N, 1, H, W)."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.compress = ChannelPool()
        self.spatial = ConvBN(2, 1, kernel_size, relu=False)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.spatial(self.compress(x)))


class CBAM(nn.Module):
    """Channel gate then spatial gate, applied in sequence (``no_spatial`` drops the second)."""

    attention_type = "cbam"

    def __init__(self, channels: int, reduction: int = 16, no_spatial: bool = False) -> None:
        super().__init__()
        self.ChannelGate = CBAMChannelGate(channels, reduction)
        self.no_spatial = no_spatial
        if not no_spatial:
            self.SpatialGate = CBAMSpatialGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.ChannelGate(x)
        return out if self.no_spatial else self.SpatialGate(out)
