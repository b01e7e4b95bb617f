"""Extending attnviz: a map method is one catalogue entry, an attention type one module plus its registry entry.

The test adds a toy one-pass method, a toy rollout-type method and a toy attention type through only those
entries and sees them in ``explain``, the CLI's ``--methods`` help and the page's method choices.
"""
from __future__ import annotations

import torch
from torch import nn

import models
from attnviz.api import explain
from attnviz.app import cli
from attnviz.core import methods as catalogue
from models.attention import ATTENTION_TYPES, AttentionType


def _toy_cam(activations: torch.Tensor, gradients: torch.Tensor | None, eigen_smooth: bool) -> torch.Tensor:
    """Channel-summed activations times positive gradients (torch tensors on the model's device)."""
    return (activations * gradients.clamp_min(0)).sum(dim=1)


def _toy_rollout(attention, gradients, prefix, grid):
    """The last block's class-token row, mean of heads."""
    last = attention[-1].float().mean(dim=1)
    return last[:, 0, prefix:].reshape(-1, *grid)


class ToyGate(nn.Module):
    """A made-up attention type: a 1x1 conv and a sigmoid over positions."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 1, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.conv(x))


def test_a_toy_method_is_one_catalogue_entry(monkeypatch):
    monkeypatch.setitem(catalogue.CATALOGUE, "toycam",
                        catalogue.Method("toycam", "Toy-CAM", catalogue.ONE_PASS, _toy_cam))
    monkeypatch.setitem(catalogue.CATALOGUE, "toyrollout",
                        catalogue.Method("toyrollout", "Toy rollout", catalogue.ROLLOUT, _toy_rollout,
                                         gradients=False))
    assert "toycam" in cli.methods_help() and "toyrollout" in cli.methods_help()
    parser_help = cli.build_parser()._subparsers._group_actions[0].choices["explain"].format_help()
    assert "toycam" in parser_help

    torch.manual_seed(0)
    net = models.build("small_resnet", num_classes=4).eval()
    e = explain(net, torch.rand(1, 3, 64, 64), methods=["Toy-CAM", "gradcam"], layer="layer3")
    assert list(e.cams) == ["toycam", "gradcam"]
    assert e.cams["toycam"].heatmap.shape == (64, 64) and abs(e.cams["toycam"].heatmap.max() - 1.0) <= 1e-6

    from timm.models.vision_transformer import VisionTransformer

    vit = VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=3).eval()
    e = explain(vit, torch.rand(1, 3, 32, 32), methods=["toyrollout"])
    assert e.cams["toyrollout"].layer_map.shape == (4, 4)

    from attnviz.app.web import page

    choices = page.method_choices()
    assert ("Toy-CAM", "toycam") in choices and ("Toy rollout", "toyrollout") in choices


def test_a_toy_attention_type_is_one_module_and_its_registry_entry(monkeypatch):
    monkeypatch.setitem(ATTENTION_TYPES, "toy", AttentionType("toy", "Toy gate", "toy", ToyGate))
    from models.small_resnet import small_resnet

    torch.manual_seed(0)
    net = small_resnet(attention="toy", num_classes=4).eval()
    e = explain(net, torch.rand(1, 3, 64, 64), methods=["gradcam"], layer="layer3")
    toy = [m for m in e.attention_maps if m.attention == "toy"]
    assert len(toy) == 6 and all(m.layout == "spatial" for m in toy)   # one per residual block
    assert all(0 < m.data.min() and m.data.max() < 1 for m in toy)     # sigmoid gate values
