"""ResNet-18/34/50 with an attention slot, on torchvision's ResNet so plain keys stay torchvision's.

The module sits where the official SE/ECA/CBAM/Triplet code puts it: after the last BN of the residual
branch, before ``out += identity``, under the official attribute name (``se``, ``eca``, ``cbam``,
``triplet_attention``), so released checkpoints load with ``strict=True``.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet

from .attention import attention_type

# Official ECA-ResNet-50 checkpoint ("k3557") uses kernel sizes 3, 5, 5, 7 for the four stages.
ECA_RESNET50_KSIZES = (3, 5, 5, 7)


class AttentionSlotMixin:
    """Gives a residual block an optional attention module applied to the residual branch."""

    attention_attr: str | None = None

    def set_attention(self, attr: str, module: nn.Module) -> None:
        setattr(self, attr, module)
        self.attention_attr = attr

    def apply_attention(self, out: torch.Tensor) -> torch.Tensor:
        if self.attention_attr is None:
            return out
        return getattr(self, self.attention_attr)(out)


class AttnBasicBlock(AttentionSlotMixin, tv_resnet.BasicBlock):
    """torchvision BasicBlock + attention before the residual sum."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.apply_attention(self.bn2(self.conv2(out)))
        return self.relu(out + identity)


class AttnBottleneck(AttentionSlotMixin, tv_resnet.Bottleneck):
    """torchvision Bottleneck + attention before the residual sum."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.apply_attention(self.bn3(self.conv3(out)))
        return self.relu(out + identity)


def stages(model: nn.Module) -> list[nn.Sequential]:
    """The residual stages of a ResNet-like model, in order (``layer1``, ``layer2``, ...)."""
    found = []
    for i in range(1, 10):
        layer = getattr(model, f"layer{i}", None)
        if layer is None:
            break
        found.append(layer)
    return found


def insert_attention(model: nn.Module, kind: str | None, per_stage_kwargs: Sequence[dict[str, Any]] | None = None,
                     **kwargs: Any) -> nn.Module:
    """Put one ``kind`` module into every residual block of ``model`` (in place); ``None`` leaves it plain."""
    if kind in (None, "none"):
        return model
    att = attention_type(kind)
    for s, stage in enumerate(stages(model)):
        extra = dict(per_stage_kwargs[s]) if per_stage_kwargs else {}
        for block in stage:
            channels = block.bn3.num_features if hasattr(block, "bn3") else block.bn2.num_features
            block.set_attention(att.block_attr, att.build(channels, **{**kwargs, **extra}))
    return model


_DEPTHS: dict[int, tuple[type[nn.Module], list[int]]] = {
    18: (AttnBasicBlock, [2, 2, 2, 2]),
    34: (AttnBasicBlock, [3, 4, 6, 3]),
    50: (AttnBottleneck, [3, 4, 6, 3]),
}


def resnet(depth: int, attention: str | None = None, num_classes: int = 1000,
           per_stage_kwargs: Sequence[dict[str, Any]] | None = None, **attention_kwargs: Any) -> tv_resnet.ResNet:
    """An ImageNet-layout ResNet of ``depth`` 18/34/50 with ``attention`` in every block."""
    if depth not in _DEPTHS:
        raise ValueError(f"ResNet depth must be one of {sorted(_DEPTHS)}, got {depth}")
    block, layers = _DEPTHS[depth]
    model = tv_resnet.ResNet(block, layers, num_classes=num_classes)
    return insert_attention(model, attention, per_stage_kwargs, **attention_kwargs)


def eca_resnet(depth: int, num_classes: int = 1000, k_sizes: Sequence[int] | str = ECA_RESNET50_KSIZES,
               ) -> tv_resnet.ResNet:
    """ECA-ResNet; ``k_sizes`` per stage (released checkpoint: 3,5,5,7) or ``"adaptive"`` (paper's rule)."""
    per_stage = [{"k_size": None} for _ in range(4)] if k_sizes == "adaptive" else [{"k_size": k} for k in k_sizes]
    return resnet(depth, "eca", num_classes, per_stage_kwargs=per_stage)
