"""Triplet Attention (Misra et al., "Rotate to Attend", 2021), as landskape-ai ``MODELS/triplet_attention.py``.

Three branches share one recipe — Z-pool (cat[max, mean]) over the first non-batch dim, k x k conv + BN,
sigmoid, multiply — applied to the tensor rotated three ways:

* ``ChannelGateH`` on x.permute(0, 2, 1, 3): pools over H, its gate is (N, 1, C, W) (C-W interaction);
* ``ChannelGateW`` on x.permute(0, 3, 2, 1): pools over W, its gate is (N, 1, H, C) (H-C interaction);
* ``SpatialGate`` on x: pools over C, its gate is (N, 1, H, W).

Output = mean of the three re-weighted tensors (or of the two channel branches with ``no_spatial``).

The official code permutes the whole feature map (and back) for each rotated branch. Here each branch
pools the *unpermuted* tensor over the same axis and lays the two pooled maps out exactly as the rotated
tensor would (C x W, and H x C), so the convolutions, BNs and gates see identical inputs and give
identical outputs; the gates are broadcast back onto x (equal to the official output up to float
rounding, as the tests check) without four full-size copies.
"""
from __future__ import annotations

import torch
from torch import nn

from ._common import ChannelPool, ConvBN


class TripletGate(nn.Module):
    """One branch: Z-pool -> conv + BN (no ReLU) -> sigmoid (``gate``); ``forward`` also multiplies."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.compress = ChannelPool()
        self.spatial = ConvBN(2, 1, kernel_size, relu=False)
        self.gate = nn.Sigmoid()

    def weights(self, pooled: torch.Tensor) -> torch.Tensor:
        """Gate for an already Z-pooled (N, 2, A, B) input: (N, 1, A, B)."""
        return self.gate(self.spatial(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(self.compress(x))


def _zpool(x: torch.Tensor, dim: int) -> torch.Tensor:
    """cat([max, mean]) over ``dim`` of x (N, C, H, W), kept in x's axis order: (N, 2, ...)."""
    return torch.stack((x.amax(dim=dim), x.mean(dim=dim)), dim=1)


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
        # branch 1 = official ChannelGateH on x.permute(0, 2, 1, 3): pool over H, conv over the (C, W) plane
        gate_cw = self.ChannelGateH.weights(_zpool(x, 2))                        # (N, 1, C, W)
        # branch 2 = official ChannelGateW on x.permute(0, 3, 2, 1): pool over W, conv over the (H, C) plane
        gate_hc = self.ChannelGateW.weights(_zpool(x, 3).transpose(2, 3))        # (N, 1, H, C)
        weight = gate_cw.permute(0, 2, 1, 3) + gate_hc.permute(0, 3, 2, 1)      # (N, C, 1, W) + (N, C, H, 1)
        if self.no_spatial:
            return 0.5 * (x * weight)
        weight = weight + self.SpatialGate.weights(_zpool(x, 1))                 # + (N, 1, H, W)
        return (1.0 / 3.0) * (x * weight)
