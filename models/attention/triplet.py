"""Triplet Attention (Misra et al., "Rotate to Attend", 2021), as landskape-ai ``MODELS/triplet_attention.py``.

Three branches share one recipe — Z-pool (cat[max, mean]) over the first non-batch dim, k x k conv + BN,
sigmoid, multiply — applied to the tensor rotated three ways:

* ``ChannelGateH`` on x.permute(0, 2, 1, 3): pools over H, its gate is (N, 1, C, W) (C-W interaction);
* ``ChannelGateW`` on x.permute(0, 3, 2, 1): pools over W, its gate is (N, 1, H, C) (H-C interaction);
* ``SpatialGate`` on x: pools over C, its gate is (N, 1, H, W).

Output = mean of the three re-weighted tensors (or of the two channel branches with ``no_spatial``).
"""
from __future__ import annotations

import torch
from torch import nn

from ._common import ChannelPool, ConvBN


class TripletGate(nn.Module):
    """One branch: Z-pool -> conv + BN (no ReLU) -> sigmoid (``gate``) -> multiply."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.compress = ChannelPool()
        self.spatial = ConvBN(2, 1, kernel_size, relu=False)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.spatial(self.compress(x)))


class TripletAttention(nn.Module):
    """Cross-dimension attention by rotation; no channel reduction, so no information bottleneck."""

    attention_type = "triplet"

    def __init__(self, channels: int | None = None, kernel_size: int = 7, no_spatial: bool = False) -> None:
        # ``channels`` is unused (the official signature takes gate_channels); kept for a uniform slot API.
        super().__init__()
        self.ChannelGateH = TripletGate(kernel_size)
        self.ChannelGateW = TripletGate(kernel_size)
        self.no_spatial = no_spatial
        if not no_spatial:
            self.SpatialGate = TripletGate(kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_h = self.ChannelGateH(x.permute(0, 2, 1, 3).contiguous()).permute(0, 2, 1, 3).contiguous()
        out_w = self.ChannelGateW(x.permute(0, 3, 2, 1).contiguous()).permute(0, 3, 2, 1).contiguous()
        if self.no_spatial:
            return 0.5 * (out_h + out_w)
        return (1.0 / 3.0) * (self.SpatialGate(x) + out_h + out_w)
