"""MobileNetV2 in the layouts the official attention repositories released checkpoints for.

* ``mobilenet_v2``: torchvision's network, unchanged.
* ``triplet_mobilenet_v2``: landskape-ai ``MODELS/mobilenet.py`` — torchvision's layout with Triplet
  Attention appended to every inverted residual's ``conv`` after the projection BN (dropout 0.25).
* ``ca_mobilenet_v2``: houqb/CoordAttention ``mbv2_ca.py`` — its own flat layout: Coordinate Attention
  inside ``InvertedResidual.conv`` right after the depthwise block, only where expand_ratio != 1, and a
  separate final ``conv`` (1x1 to 1280) before the classifier (dropout 0.1).
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import mobilenetv2 as tv_mbv2
from torchvision.models._utils import _make_divisible

from .attention import CoordAtt, TripletAttention

# (expand ratio t, output channels c, repeats n, first stride s) — the MobileNetV2 paper's table.
INVERTED_RESIDUAL_SETTING = [
    [1, 16, 1, 1],
    [6, 24, 2, 2],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]


def mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2) -> tv_mbv2.MobileNetV2:
    """torchvision's MobileNetV2 (random weights)."""
    return tv_mbv2.MobileNetV2(num_classes=num_classes, width_mult=width_mult, dropout=dropout)


def triplet_mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0, kernel_size: int = 7,
                         ) -> tv_mbv2.MobileNetV2:
    """MobileNetV2 + Triplet Attention after the projection BN of every inverted residual."""
    model = mobilenet_v2(num_classes, width_mult, dropout=0.25)
    for block in model.features:
        if isinstance(block, tv_mbv2.InvertedResidual):
            block.conv.append(TripletAttention(block.out_channels, kernel_size=kernel_size))
    return model


def _conv_bn_relu6(inp: int, oup: int, kernel: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, oup, kernel, stride, (kernel - 1) // 2, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU6(inplace=True),
    )


class CAInvertedResidual(nn.Module):
    """Inverted residual of ``mbv2_ca.py``: flat ``conv`` Sequential with CA after the depthwise block."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = round(inp * expand_ratio)
        self.identity = stride == 1 and inp == oup
        depthwise = [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(inplace=True),
        ]
        project = [nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        if expand_ratio == 1:
            layers = depthwise + project
        else:
            expand = [nn.Conv2d(inp, hidden, 1, 1, 0, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True)]
            layers = expand + depthwise + [CoordAtt(hidden, hidden)] + project
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.identity else y


class CAMobileNetV2(nn.Module):
    """MobileNetV2 with Coordinate Attention, key-compatible with the released ``mbv2_ca`` checkpoint."""

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0) -> None:
        super().__init__()
        divisor = 4 if width_mult == 0.1 else 8
        inp = _make_divisible(32 * width_mult, divisor)
        layers: list[nn.Module] = [_conv_bn_relu6(3, inp, 3, 2)]
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            oup = _make_divisible(c * width_mult, divisor)
            for i in range(n):
                layers.append(CAInvertedResidual(inp, oup, s if i == 0 else 1, t))
                inp = oup
        self.features = nn.Sequential(*layers)
        last = _make_divisible(1280 * width_mult, divisor) if width_mult > 1.0 else 1280
        self.conv = _conv_bn_relu6(inp, last, 1, 1)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(nn.Dropout(0.1), nn.Linear(last, num_classes))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.conv(self.features(x)))
        return self.classifier(torch.flatten(x, 1))


def ca_mobilenet_v2(num_classes: int = 1000, width_mult: float = 1.0) -> CAMobileNetV2:
    return CAMobileNetV2(num_classes, width_mult)
