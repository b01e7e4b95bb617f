"""Squeeze-and-Excitation (Hu et al., 2018), laid out as moskomule/senet.pytorch ``SELayer``.

The sigmoid is ``fc[3]``, a module, so a forward hook reads the channel weights (N, C).
"""
from __future__ import annotations

import torch
from torch import nn


class SELayer(nn.Module):
    """Global average pool -> FC(C, C/r, no bias) -> ReLU -> FC(C/r, C, no bias) -> sigmoid -> scale."""

    attention_type = "se"

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, channels, bias=False),
            nn.Sigmoid(),
        )

    @property
    def gate(self) -> nn.Module:
        """The sigmoid whose output is the channel attention (N, C)."""
        return self.fc[3]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        weights = self.fc(self.avg_pool(x).view(n, c)).view(n, c, 1, 1)
        return x * weights
