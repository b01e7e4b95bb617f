"""The bundled zoo's vision transformer: timm's ``VisionTransformer`` sized like the compact ResNet.

128 px input, 8 px patches (a 16 x 16 token grid plus one class token), 96-wide, 6 blocks of 3 heads:
715,595 parameters against the compact ResNet's 703,491, so the two differ in how they mix positions
(self-attention vs convolution), not in size. timm is imported only when a ViT is built.
"""
from __future__ import annotations

from typing import Any

from torch import nn

ZOO_VIT = {"img_size": 128, "patch_size": 8, "embed_dim": 96, "depth": 6, "num_heads": 3, "mlp_ratio": 4.0}


def small_vit(num_classes: int = 11, **kwargs: Any) -> nn.Module:
    """timm ``VisionTransformer`` with the zoo's size (keyword arguments override :data:`ZOO_VIT`)."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(num_classes=num_classes, **{**ZOO_VIT, **kwargs})
