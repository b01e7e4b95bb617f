"""The bundled zoo's vision transformers: timm's ``VisionTransformer`` sized like the compact ResNet.

* ``small_vit``: 128 px input, 8 px patches (a 16 x 16 token grid plus one class token), 96-wide, 6 blocks of
  3 heads: 715,595 parameters against the compact ResNet's 703,491. It learns slowly on the zoo's benchmark
  (docs/vit_trials).
* ``hybrid_vit``: the ViT paper's hybrid (Dosovitskiy et al. 2021, section 3.1): the patch embedding is a
  convolutional trunk — the compact ResNet's stem and first two stages (stride 8) plus a 2 x 2 stride-2
  projection — so the transformer sees an 8 x 8 grid of 64 tokens plus a class token, with global
  self-attention in every block. Its trunk has the compact ResNet's key names (``patch_embed.trunk.conv1``,
  ``.layer1``, ...), so it can start from a trained baseline's weights.

timm is imported only when a ViT is built.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

ZOO_VIT = {"img_size": 128, "patch_size": 8, "embed_dim": 96, "depth": 6, "num_heads": 3, "mlp_ratio": 4.0}
HYBRID_VIT = {"img_size": 128, "embed_dim": 96, "depth": 6, "num_heads": 3, "mlp_ratio": 4.0}
HYBRID_STRIDE = 16   # trunk stride 8, projection stride 2


def small_vit(num_classes: int = 11, **kwargs: Any) -> nn.Module:
    """timm ``VisionTransformer`` with the zoo's size (keyword arguments override :data:`ZOO_VIT`)."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(num_classes=num_classes, **{**ZOO_VIT, **kwargs})


class HybridEmbed(nn.Module):
    """Convolutional patch embedding with timm's ``PatchEmbed`` interface (grid, stride, dynamic size)."""

    def __init__(self, img_size: int = 128, patch_size: int = HYBRID_STRIDE, in_chans: int = 3,
                 embed_dim: int = 96, **_: Any) -> None:
        super().__init__()
        from .small_resnet import SmallResNet

        self.trunk = SmallResNet(widths=(32, 64), depths=(2, 2), input_size=img_size)
        del self.trunk.fc, self.trunk.avgpool
        self.proj = nn.Conv2d(64, embed_dim, kernel_size=2, stride=2)
        self.img_size = (img_size, img_size)
        self.patch_size = (HYBRID_STRIDE, HYBRID_STRIDE)
        self.grid_size = (img_size // HYBRID_STRIDE, img_size // HYBRID_STRIDE)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.dynamic_img_pad = False

    def feat_ratio(self, as_scalar: bool = True) -> int | tuple[int, int]:
        return HYBRID_STRIDE if as_scalar else self.patch_size

    def dynamic_feat_size(self, img_size: tuple[int, int]) -> tuple[int, int]:
        return img_size[0] // HYBRID_STRIDE, img_size[1] // HYBRID_STRIDE

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(self.trunk.forward_features(x)).flatten(2).transpose(1, 2)


def hybrid_vit(num_classes: int = 11, **kwargs: Any) -> nn.Module:
    """timm ``VisionTransformer`` whose patch embedding is :class:`HybridEmbed` (class token, global attention)."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(num_classes=num_classes, patch_size=HYBRID_STRIDE, embed_layer=HybridEmbed,
                             **{**HYBRID_VIT, **kwargs})
