"""A compact ResNet for the bundled zoo: BasicBlocks, small widths, one attention slot per block.

Sized so that one variant trains on two CPU cores in minutes and its last stage still gives an
8x8 map at 128 px input (stem stride 4, then strides 1, 2, 2 -> 128/16 = 8).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from .resnet import AttnBasicBlock, StageSlotsMixin, insert_attention

DEFAULT_WIDTHS = (32, 64, 128)
DEFAULT_DEPTHS = (2, 2, 2)


class SmallResNet(StageSlotsMixin, nn.Module):
    """conv-bn-relu stem (stride 2) + conv-bn-relu (stride 2), three BasicBlock stages, GAP, FC."""

    def __init__(self, num_classes: int = 11, widths: Sequence[int] = DEFAULT_WIDTHS,
                 depths: Sequence[int] = DEFAULT_DEPTHS, stem_width: int = 24, input_size: int = 128) -> None:
        super().__init__()
        self.input_size = input_size
        self.conv1 = nn.Conv2d(3, stem_width, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.conv2 = nn.Conv2d(stem_width, widths[0], 3, 2, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        inplanes = widths[0]
        for i, (width, depth) in enumerate(zip(widths, depths)):
            stride = 1 if i == 0 else 2
            blocks: list[nn.Module] = []
            for b in range(depth):
                downsample = None
                if b == 0 and (stride != 1 or inplanes != width):
                    downsample = nn.Sequential(nn.Conv2d(inplanes, width, 1, stride, bias=False), nn.BatchNorm2d(width))
                blocks.append(AttnBasicBlock(inplanes, width, stride if b == 0 else 1, downsample))
                inplanes = width
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_stages = len(widths)
        self.last_stage_size = input_size // (4 * 2 ** (len(widths) - 1))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.run_input_modules(x)
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.relu(self.bn2(self.conv2(x)))
        return self.run_stages(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.forward_features(x)), 1))


def small_resnet(attention: str | None = None, num_classes: int = 11, **kwargs: Any) -> SmallResNet:
    """The bundled zoo's backbone with ``attention`` ("se", "eca", "cbam", "triplet", "coord", None)."""
    attention_kwargs = kwargs.pop("attention_kwargs", {})
    return insert_attention(SmallResNet(num_classes=num_classes, **kwargs), attention, **attention_kwargs)
