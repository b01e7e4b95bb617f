"""Dual attention (Fu et al., DANet, 2019): position attention (PAM) and channel attention (CAM).

PAM: query/key (C/8) and value (C) 1x1 convs, softmax over all positions -> (N, HW, HW), ``gamma`` x the
aggregated values + x. CAM: energy = X X^T (N, C, C), turned into ``rowmax - energy`` before the softmax
(as the official code does, so similar channels get *less* weight), ``gamma`` x (attention X) + x.
Both ``gamma`` start at 0. The two branches run in parallel on the same input and are averaged, so the
block starts as the identity. Submodule names follow junfu1115/DANet (``query_conv``, ``gamma``, ``softmax``).
"""
from __future__ import annotations

import torch
from torch import nn

from ._common import add_query_key_value


class PAMModule(nn.Module):
    """Position attention: every position aggregates values from every position."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        add_query_key_value(self, channels, reduction)
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q = self.query_conv(x).flatten(2).transpose(1, 2)          # (N, HW, C')
        k = self.key_conv(x).flatten(2)                             # (N, C', HW)
        attention = self.softmax(q @ k)                             # (N, HW, HW)
        v = self.value_conv(x).flatten(2)                           # (N, C, HW)
        out = (v @ attention.transpose(1, 2)).view(n, c, h, w)
        return self.gamma * out + x


class CAMModule(nn.Module):
    """Channel attention: every channel map aggregates all channel maps."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1))
        self.softmax = nn.Softmax(dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        flat = x.flatten(2)                                         # (N, C, HW)
        energy = flat @ flat.transpose(1, 2)                        # (N, C, C)
        energy_new = energy.amax(dim=-1, keepdim=True).expand_as(energy) - energy
        attention = self.softmax(energy_new)
        out = (attention @ flat).view(n, c, h, w)
        return self.gamma * out + x


class DualAttention(nn.Module):
    """(PAM(x) + CAM(x)) / 2 — the two DANet branches in parallel."""

    attention_type = "danet"

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        self.pam = PAMModule(channels, reduction)
        self.cam = CAMModule()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (self.pam(x) + self.cam(x))
