"""Spatial transformer (Jaderberg et al., 2015) in front of the classifier, restricted to zoom + shift.

A small localisation net predicts a scale s in [min_scale, 1] and a shift that keeps the sampled square
inside the image; ``affine_grid`` + ``grid_sample`` resample the input so the classifier sees that square
at full resolution (an incentive to zoom onto the object). The affine matrix theta (N, 2, 3), in
``affine_grid``'s normalised coordinates, passes through the module ``theta`` so a hook can read it.
The last localisation layer starts at the identity transform.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SpatialTransformer(nn.Module):
    """Input -> (theta) -> resampled input of the same size."""

    attention_type = "stn"

    def __init__(self, channels: int = 3, min_scale: float = 0.3, width: int = 16) -> None:
        super().__init__()
        self.min_scale = min_scale
        self.localization = nn.Sequential(
            nn.Conv2d(channels, width, 5, stride=4, padding=2, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.fc_loc = nn.Sequential(nn.Linear(2 * width, 32), nn.ReLU(inplace=True), nn.Linear(32, 3))
        nn.init.zeros_(self.fc_loc[2].weight)
        with torch.no_grad():
            self.fc_loc[2].bias.copy_(torch.tensor([4.0, 0.0, 0.0]))  # sigmoid(4) ~ 0.98: start near identity
        self.theta = nn.Identity()

    def affine(self, x: torch.Tensor) -> torch.Tensor:
        p = self.fc_loc(self.localization(x))
        scale = self.min_scale + (1 - self.min_scale) * torch.sigmoid(p[:, 0])
        shift = torch.tanh(p[:, 1:]) * (1 - scale).unsqueeze(1)       # keeps the square inside [-1, 1]
        zero = torch.zeros_like(scale)
        theta = torch.stack([torch.stack([scale, zero, shift[:, 0]], 1),
                             torch.stack([zero, scale, shift[:, 1]], 1)], 1)
        return self.theta(theta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(self.affine(x), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
