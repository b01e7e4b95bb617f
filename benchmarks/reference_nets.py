"""The networks the issue-28 equality tests and benchmark share, so both compare the same ones: torchvision's
ResNet-50 with random weights and random BatchNorm statistics (with the default ones every BatchNorm bias is 0 and
FullGrad's bias terms would go untested), and a timm ViT copied into torchvision's ``VisionTransformer`` (the only
ViT TorchCAM's LeGrad hooks)."""
from __future__ import annotations

import torch
import torchvision


def resnet50_random(seed: int = 0) -> torch.nn.Module:
    """torchvision's ResNet-50 in eval mode with seeded random weights and non-trivial BatchNorm statistics."""
    torch.manual_seed(seed)
    net = torchvision.models.resnet50().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net


class _Embed(torch.nn.Module):
    """The timm model's own patch embedding (a convolution, or the bundled hybrid's trunk) in torchvision's
    ``conv_proj`` place: (B, D, h, w) out."""

    def __init__(self, embed: torch.nn.Module) -> None:
        super().__init__()
        self.embed = embed

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x)
        h, w = self.embed.dynamic_feat_size(x.shape[-2:])
        return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], h, w)


def as_torchvision_vit(vit: torch.nn.Module) -> torchvision.models.VisionTransformer:
    """A torchvision ViT with the timm ViT's weights (class token, learned positions, qkv bias, no fc_norm); its
    patch embedding is the timm model's own module."""
    depth, dim = len(vit.blocks), vit.embed_dim
    tv = torchvision.models.VisionTransformer(
        image_size=vit.patch_embed.img_size[0], patch_size=vit.patch_embed.patch_size[0], num_layers=depth,
        num_heads=vit.blocks[0].attn.num_heads, hidden_dim=dim, mlp_dim=vit.blocks[0].mlp.fc1.out_features,
        num_classes=vit.num_classes).eval()
    sd = vit.state_dict()
    new = {"class_token": sd["cls_token"], "encoder.pos_embedding": sd["pos_embed"],
           "encoder.ln.weight": sd["norm.weight"], "encoder.ln.bias": sd["norm.bias"],
           "heads.head.weight": sd["head.weight"], "heads.head.bias": sd["head.bias"]}
    pairs = (("norm1", "ln_1"), ("norm2", "ln_2"), ("mlp.fc1", "mlp.0"), ("mlp.fc2", "mlp.3"),
             ("attn.proj", "self_attention.out_proj"), ("attn.qkv", "self_attention.in_proj"))
    for i in range(depth):
        for ours, theirs in pairs:
            sep = "_" if theirs.endswith("in_proj") else "."
            for kind in ("weight", "bias"):
                new[f"encoder.layers.encoder_layer_{i}.{theirs}{sep}{kind}"] = sd[f"blocks.{i}.{ours}.{kind}"]
    tv.conv_proj = _Embed(vit.patch_embed)
    missing, unexpected = tv.load_state_dict(new, strict=False)
    assert not unexpected and all(k.startswith("conv_proj.") for k in missing)
    return tv
