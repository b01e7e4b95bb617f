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


class StageSlotsMixin:
    """Lets a ResNet-like model run modules in front of the backbone and after given stages.

    ``after_stage`` maps a stage number (1-based) to attribute names applied after that stage, in order;
    ``input_modules`` are applied to the image first. Both are plain Python data, so they do not appear
    in the state dict — only the modules they name do.
    """

    def _slots(self) -> tuple[dict[int, list[str]], list[str]]:
        return getattr(self, "after_stage", {}), getattr(self, "input_modules", [])

    def add_after_stage(self, stage: int, name: str, module: nn.Module) -> None:
        setattr(self, name, module)
        after = dict(getattr(self, "after_stage", {}))
        after[stage] = [*after.get(stage, []), name]
        self.after_stage = after

    def add_input_module(self, name: str, module: nn.Module) -> None:
        setattr(self, name, module)
        self.input_modules = [*getattr(self, "input_modules", []), name]

    def run_input_modules(self, x: torch.Tensor) -> torch.Tensor:
        for name in self._slots()[1]:
            x = getattr(self, name)(x)
        return x

    def run_stages(self, x: torch.Tensor) -> torch.Tensor:
        after = self._slots()[0]
        for i, stage in enumerate(stages(self), start=1):
            x = stage(x)
            for name in after.get(i, []):
                x = getattr(self, name)(x)
        return x


class AttnResNet(StageSlotsMixin, tv_resnet.ResNet):
    """torchvision's ResNet with stage slots; with no slots filled it is exactly torchvision's forward."""

    def _forward_impl(self, x: torch.Tensor) -> torch.Tensor:
        x = self.run_input_modules(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.run_stages(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def stages(model: nn.Module) -> list[nn.Sequential]:
    """The residual stages of a ResNet-like model, in order (``layer1``, ``layer2``, ...)."""
    found = []
    for i in range(1, 10):
        layer = getattr(model, f"layer{i}", None)
        if layer is None:
            break
        found.append(layer)
    return found


def _block_channels(block: nn.Module) -> int:
    return block.bn3.num_features if hasattr(block, "bn3") else block.bn2.num_features


def last_stage_attention_name(model: nn.Module) -> str | None:
    """Attribute name of a module applied after the last stage (the CAM layer should follow it)."""
    after = getattr(model, "after_stage", {})
    names = after.get(len(stages(model)), [])
    return names[-1] if names else None


def insert_attention(model: nn.Module, kind: str | None, per_stage_kwargs: Sequence[dict[str, Any]] | None = None,
                     **kwargs: Any) -> nn.Module:
    """Put ``kind`` modules into ``model`` (in place) where that type belongs; ``None`` leaves it plain.

    The placement comes from the type's registry entry (see ``models.attention.PLACEMENTS``).
    """
    if kind in (None, "none"):
        return model
    att = attention_type(kind)
    all_stages = stages(model)
    last = len(all_stages)

    def build(stage_index: int, channels: int, **extra: Any) -> nn.Module:
        stage_kw = dict(per_stage_kwargs[stage_index - 1]) if per_stage_kwargs else {}
        return att.build(channels, **{**kwargs, **stage_kw, **extra})

    if att.placement == "block":
        for s, stage in enumerate(all_stages, start=1):
            for block in stage:
                block.set_attention(att.block_attr, build(s, _block_channels(block)))
    elif att.placement in ("between", "after_last", "after_second_last"):
        chosen = {"between": range(1, last), "after_last": [last], "after_second_last": [last - 1]}[att.placement]
        for s in chosen:
            channels = _block_channels(all_stages[s - 1][-1])
            model.add_after_stage(s, f"{att.block_attr}{s}", build(s, channels))
    elif att.placement == "replace_conv2_last":
        size = getattr(model, "last_stage_size", None)
        for block in all_stages[-1]:
            stride = block.conv2.stride[0]
            extra = {"height": size * stride, "width": size * stride} if size else {}
            mhsa = build(last, block.conv2.in_channels, **extra)
            # BoTNet keeps the stride of a replaced strided conv with a 2x2 average pool after attention
            block.conv2 = mhsa if stride == 1 else nn.Sequential(mhsa, nn.AvgPool2d(stride, stride))
    elif att.placement == "input":
        model.add_input_module(att.block_attr, att.build(3, **kwargs))
    else:
        raise ValueError(f"unknown placement {att.placement!r} for {kind!r}")
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
    model = AttnResNet(block, layers, num_classes=num_classes)
    model.last_stage_size = 7  # at 224 px
    return insert_attention(model, attention, per_stage_kwargs, **attention_kwargs)


def eca_resnet(depth: int, num_classes: int = 1000, k_sizes: Sequence[int] | str = ECA_RESNET50_KSIZES,
               ) -> tv_resnet.ResNet:
    """ECA-ResNet; ``k_sizes`` per stage (released checkpoint: 3,5,5,7) or ``"adaptive"`` (paper's rule)."""
    per_stage = [{"k_size": None} for _ in range(4)] if k_sizes == "adaptive" else [{"k_size": k} for k in k_sizes]
    return resnet(depth, "eca", num_classes, per_stage_kwargs=per_stage)
