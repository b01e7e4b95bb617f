"""Criss-Cross Attention (Huang et al., CCNet, 2019) in pure PyTorch, with the recurrent (R = 2) form.

Each position attends only to the positions in its own row and column: energies q.k over the column
(H of them, the position itself masked out there so it is counted once) and over the row (W), one
softmax over those H + W values, values aggregated along the same cross, ``gamma`` (zero-initialised)
scales the result added to the input. Applying the *same* module twice lets every position reach every
other one (row then column). Each step's softmax is its own module (``steps[i]``, no parameters) so a
hook can read each step's (N, H, W, H + W) weights; the learned weights are shared.

``head=True`` wraps the steps the way CCNet's RCCA module uses them: a 3x3 conv-BN-ReLU down to C/4
channels (``conva``), the criss-cross steps, a 3x3 conv-BN-ReLU (``convb``), then the input concatenated
with the result and mapped back to C channels (``bottleneck``, here 1x1 conv-BN-ReLU so the classifier's
input keeps its width). The bundled zoo uses it: the bare steps on un-normalised last-stage features trained
to 92.8 % (val 67 % at mid-training) with the shared recipe, the weakest model by far.
"""
from __future__ import annotations

import torch
from torch import nn

from ._common import add_query_key_value, conv_bn_relu


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

    def __init__(self, channels: int, recurrence: int = 2, reduction: int = 8, head: bool = False) -> None:
        super().__init__()
        self.head = head
        inner = max(1, channels // 4) if head else channels
        if head:
            self.conva = conv_bn_relu(channels, inner, 3)
            self.convb = conv_bn_relu(inner, inner, 3)
            self.bottleneck = conv_bn_relu(channels + inner, channels, 1)
        self.cca = CrissCrossAttention(inner, reduction)
        self.steps = nn.ModuleList(nn.Softmax(dim=-1) for _ in range(recurrence))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conva(x) if self.head else x
        for softmax in self.steps:
            y = self.cca(y, softmax)
        return self.bottleneck(torch.cat([x, self.convb(y)], dim=1)) if self.head else y
