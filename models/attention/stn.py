"""Spatial transformer (Jaderberg et al., 2015) in front of the classifier, restricted to zoom + shift.

The localisation net predicts *where* to look as a softmax over a coarse grid of the input (its expected
position is the window's centre) and *how much* to zoom as a scale s in [min_scale, max_scale] (side of the square / side of the image). ``affine_grid`` +
``grid_sample`` then resample that square to ``out_size`` pixels for the classifier.

Three choices make it localise instead of keeping the whole image, which is what it learns otherwise:
* the square is at most ``max_scale`` of the image side, so the classifier cannot see everything and the
  only way to classify is to put the square on the object (with s free up to 1, both a 128-px and a 64-px
  output converged to s ~ 0.98 for every image: the classifier prefers context to resolution);
* the classifier's input is ``out_size`` pixels (64 for 128-px scenes): about the square's native size;
* the position comes from a translation-equivariant heat map (soft-argmax), which a small conv net can
  learn from the classification loss far more easily than regressing coordinates with a dense layer.
The window's shift is ``centre * (1 - s)``: it always stays inside the image and always contains the
predicted centre. The affine matrix theta (N, 2, 3), in ``affine_grid``'s normalised coordinates, passes
through the module ``theta`` and the where-map through ``where_map`` so hooks can read both.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._common import conv_bn_relu


class SpatialTransformer(nn.Module):
    """Input (N, C, H, W) -> the predicted square of it, resampled to (N, C, out_size, out_size)."""

    attention_type = "stn"

    def __init__(self, channels: int = 3, min_scale: float = 0.3, max_scale: float = 0.6, width: int = 16,
                 out_size: int | None = 64, grid: int = 8, init_scale: float = 0.55) -> None:
        super().__init__()
        if not 0 < min_scale < init_scale < max_scale <= 1:
            raise ValueError("need 0 < min_scale < init_scale < max_scale <= 1")
        self.min_scale, self.max_scale, self.out_size = min_scale, max_scale, out_size
        self.localization = nn.Sequential(
            conv_bn_relu(channels, width, 5, 4), conv_bn_relu(width, 2 * width, 3, 2),
            conv_bn_relu(2 * width, 2 * width, 3, 2), conv_bn_relu(2 * width, 2 * width, 3, 1),
            nn.AdaptiveAvgPool2d(grid),
        )
        self.where = nn.Conv2d(2 * width, 1, 1)          # logits of the where-map (N, 1, grid, grid)
        self.zoom = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, 32),
                                  nn.ReLU(inplace=True), nn.Linear(32, 1))
        nn.init.zeros_(self.where.weight)
        nn.init.zeros_(self.where.bias)                    # uniform where-map: centred window
        nn.init.zeros_(self.zoom[-1].weight)
        with torch.no_grad():                              # start wide, with the sigmoid far from saturation
            self.zoom[-1].bias.fill_(math.log((init_scale - min_scale) / (max_scale - init_scale)))
        self.where_map = nn.Identity()
        self.theta = nn.Identity()

    def affine(self, x: torch.Tensor) -> torch.Tensor:
        features = self.localization(x)
        logits = self.where(features)
        n, _, gh, gw = logits.shape
        probs = self.where_map(torch.softmax(logits.flatten(1), dim=1).view(n, 1, gh, gw))
        ys = (torch.arange(gh, dtype=x.dtype, device=x.device) + 0.5) / gh * 2 - 1  # cell centres in [-1, 1]
        xs = (torch.arange(gw, dtype=x.dtype, device=x.device) + 0.5) / gw * 2 - 1
        cx = (probs.sum(2).view(n, gw) * xs).sum(1)
        cy = (probs.sum(3).view(n, gh) * ys).sum(1)
        scale = self.min_scale + (self.max_scale - self.min_scale) * torch.sigmoid(self.zoom(features).view(n))
        zero = torch.zeros_like(scale)
        theta = torch.stack([torch.stack([scale, zero, cx * (1 - scale)], 1),
                             torch.stack([zero, scale, cy * (1 - scale)], 1)], 1)
        return self.theta(theta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        size = [n, c, self.out_size or h, self.out_size or w]
        grid = F.affine_grid(self.affine(x), size, align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
