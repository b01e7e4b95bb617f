"""Criss-Cross Attention (Huang et al., CCNet, 2019) in pure PyTorch, with the recurrent (R = 2) form.

Each position attends only to the positions in its own row and column: energies q.k over the column
(H of them, the position itself masked out there so it is counted once) and over the row (W), one
softmax over those H + W values, values aggregated along the same cross, ``gamma`` (zero-initialised)
scales the result added to the input. Applying the *same* module twice lets every position reach every
other one (row then column). Each step's softmax is its own module (``steps[i]``, no parameters) so a
hook can read each step's (N, H, W, H + W) weights; the learned weights are shared.
"""
from __future__ import annotations

import torch
from torch import nn

from ._common import add_query_key_value


class CrissCrossAttention(nn.Module):
    """One criss-cross step (CCNet's ``CrissCrossAttention``: query/key/value 1x1 convs, ``gamma``)."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        add_query_key_value(self, channels, reduction)

    def forward(self, x: torch.Tensor, softmax: nn.Module) -> torch.Tensor:
        n, _, h, w = x.shape
        q, k, v = self.query_conv(x), self.key_conv(x), self.value_conv(x)
        energy_h = torch.einsum("nchw,ncgw->nhwg", q, k)  # column: (N, H, W, H) over rows g
        energy_w = torch.einsum("nchw,nchv->nhwv", q, k)  # row: (N, H, W, W) over columns v
        self_mask = torch.eye(h, dtype=torch.bool, device=x.device).view(1, h, 1, h)
        energy_h = energy_h.masked_fill(self_mask, float("-inf"))
        att = softmax(torch.cat([energy_h, energy_w], dim=-1))       # (N, H, W, H + W)
        att_h, att_w = att[..., :h], att[..., h:]
        out = torch.einsum("nhwg,ncgw->nchw", att_h, v) + torch.einsum("nhwv,nchv->nchw", att_w, v)
        return self.gamma * out + x


class RecurrentCrissCross(nn.Module):
    """``recurrence`` applications of one shared criss-cross step (CCNet's RCCA, R = 2)."""

    attention_type = "cc"

    def __init__(self, channels: int, recurrence: int = 2, reduction: int = 8) -> None:
        super().__init__()
        self.cca = CrissCrossAttention(channels, reduction)
        self.steps = nn.ModuleList(nn.Softmax(dim=-1) for _ in range(recurrence))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for softmax in self.steps:
            x = self.cca(x, softmax)
        return x
