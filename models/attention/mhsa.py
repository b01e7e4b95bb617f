"""Multi-head self-attention over spatial positions, as in Bottleneck Transformers (Srinivas et al., 2021).

Replaces the 3x3 convolution of the last stage's blocks: 1x1 query / key / value projections, ``heads``
heads, and learned position embeddings factorised over height and width (``rel_h`` (heads, d, H, 1) +
``rel_w`` (heads, d, 1, W), as BoTNet's reference code) that enter the logits as q . pos_key.
Logits are scaled by 1/sqrt(d). The softmax is the module ``softmax``: (N, heads, HW, HW).
Embeddings are bilinearly resized when the feature map is not the size they were built for.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MHSA2d(nn.Module):
    """Self-attention among all H x W positions with content-content and content-position logits."""

    attention_type = "mhsa"

    def __init__(self, channels: int, height: int = 8, width: int = 8, heads: int = 4) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.dim = channels // heads
        self.query = nn.Conv2d(channels, channels, kernel_size=1)
        self.key = nn.Conv2d(channels, channels, kernel_size=1)
        self.value = nn.Conv2d(channels, channels, kernel_size=1)
        self.rel_h = nn.Parameter(torch.randn(heads, self.dim, height, 1) * self.dim ** -0.5)
        self.rel_w = nn.Parameter(torch.randn(heads, self.dim, 1, width) * self.dim ** -0.5)
        self.softmax = nn.Softmax(dim=-1)

    def position(self, h: int, w: int) -> torch.Tensor:
        pos = self.rel_h + self.rel_w                                   # (heads, d, H0, W0)
        if pos.shape[-2:] != (h, w):
            pos = F.interpolate(pos, size=(h, w), mode="bilinear", align_corners=False)
        return pos.reshape(self.heads, self.dim, h * w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q = self.query(x).view(n, self.heads, self.dim, h * w)
        k = self.key(x).view(n, self.heads, self.dim, h * w)
        v = self.value(x).view(n, self.heads, self.dim, h * w)
        keys = k + self.position(h, w).unsqueeze(0)                    # content + position of each key
        logits = torch.einsum("nhdi,nhdj->nhij", q, keys) * self.dim ** -0.5
        attention = self.softmax(logits)                               # (N, heads, HW query, HW key)
        out = torch.einsum("nhij,nhdj->nhdi", attention, v)
        return out.reshape(n, c, h, w)
