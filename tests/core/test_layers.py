"""Default CAM layers and token layouts for any network (attnviz.core.layers), on random-weight models built offline."""
from __future__ import annotations

import json

import pytest
import timm
import torch
import torchvision
from torch import nn

import models
from attnviz.core.layers import cam_layer_choices, channels_last, default_cam_layer, token_layout
from attnviz.errors import TargetError
from attnviz.zoo.cards import WEIGHTS_DIR


def _timm(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, **kwargs).eval()


def _output_of(model: nn.Module, layer: str, size: int = 224) -> torch.Tensor:
    seen = []
    handle = model.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        with torch.no_grad():
            model(torch.randn(1, 3, size, size))
    finally:
        handle.remove()
    return seen[0]


# pytorch-grad-cam's documented target layers and the token grids its hand-written reshape_transforms assume
TRANSFORMERS = [
    # name, kwargs, input size, default layer, (prefix tokens, grid)
    ("vit_tiny_patch16_224", {}, 224, "blocks.11.norm1", (1, (14, 14))),
    ("deit_tiny_distilled_patch16_224", {}, 224, "blocks.11.norm1", (2, (14, 14))),
    ("vit_small_patch14_reg4_dinov2", {"img_size": 112, "depth": 2, "embed_dim": 48, "num_heads": 2}, 112,
     "blocks.1.norm1", (5, (8, 8))),
]


@pytest.mark.parametrize("name,kwargs,size,layer,layout", TRANSFORMERS, ids=[t[0] for t in TRANSFORMERS])
def test_vit_family_default_layer_and_token_layout_match_the_layer_output(name, kwargs, size, layer, layout):
    model = _timm(name, **kwargs)
    assert default_cam_layer(model) == layer
    assert token_layout(model) == layout
    out = _output_of(model, layer, size)
    prefix, (h, w) = layout
    assert out.dim() == 3 and out.shape[1] == prefix + h * w  # (B, N, C): the layout accounts for every token
    assert not channels_last(model, layer)
    # folding with the layout is the reshape users used to write by hand for pytorch-grad-cam
    folded = out[:, prefix:, :].reshape(1, h, w, -1).permute(0, 3, 1, 2)
    assert folded.shape == (1, out.shape[-1], h, w)


def test_swin_default_layer_is_the_last_stages_last_block_norm1_and_is_channels_last():
    model = _timm("swin_tiny_patch4_window7_224")
    assert default_cam_layer(model) == "layers.3.blocks.1.norm1"
    assert cam_layer_choices(model) == ("layers.0.blocks.1.norm1", "layers.1.blocks.1.norm1",
                                        "layers.2.blocks.5.norm1", "layers.3.blocks.1.norm1")
    out = _output_of(model, "layers.3.blocks.1.norm1")
    assert out.shape == (1, 7, 7, 768)                   # (B, H, W, C)
    assert channels_last(model, "layers.3.blocks.1.norm1")
    assert not channels_last(model, "patch_embed.proj")  # the patch conv is still NCHW
    assert token_layout(model) is None                   # not a token sequence


@pytest.mark.parametrize("name,layer,shape", [
    ("resnet18", "layer4", (1, 512, 7, 7)),
    ("convnext_atto", "stages.3", (1, 320, 7, 7)),
])
def test_timm_cnns_use_their_last_feature_stage(name, layer, shape):
    model = _timm(name)
    assert default_cam_layer(model) == layer
    assert tuple(_output_of(model, layer).shape) == shape
    assert token_layout(model) is None and not channels_last(model, layer)


@pytest.mark.parametrize("name,layer", [
    ("efficientnet_b0", "bn2"),            # the 1x1 head conv runs before pooling: the last spatial map
    ("mobilenetv3_large_100", "blocks.6"),  # here the head conv runs after pooling
    ("regnety_008", "s4"),
    ("seresnet50", "layer4"),
    ("cait_xxs24_224", "blocks.23.norm1"),
])
def test_more_timm_families_by_rule(name, layer):
    with torch.device("meta"):  # rules read the structure only: no weights needed
        model = timm.create_model(name, pretrained=False)
    assert default_cam_layer(model) == layer


@pytest.mark.parametrize("name,layer", [
    ("resnet50", "layer4"), ("mobilenet_v2", "features.18"), ("efficientnet_b0", "features.8"),
    ("regnet_y_800mf", "trunk_output.block4"), ("convnext_tiny", "features.7"),
    ("vit_b_16", "encoder.layers.encoder_layer_11.ln_1"), ("swin_t", "features.7.1.norm1"),
])
def test_torchvision_models(name, layer):
    model = torchvision.models.get_model(name, weights=None)
    assert default_cam_layer(model) == layer


def test_torchvision_resnet50_and_mobilenet_v2_layers_are_spatial():
    for name, shape in (("resnet50", (1, 2048, 7, 7)), ("mobilenet_v2", (1, 1280, 7, 7))):
        model = torchvision.models.get_model(name, weights=None).eval()
        assert tuple(_output_of(model, default_cam_layer(model)).shape) == shape


def test_torchvision_vit_token_layout():
    model = torchvision.models.get_model("vit_b_16", weights=None)
    assert token_layout(model) == (1, (14, 14))
    assert token_layout(model, input_hw=(384, 384)) == (1, (24, 24))


def test_every_bundled_model_card_names_the_layer_the_rules_find():
    """The zoo's cards were written by the training code; the generic rules must agree with every one."""
    cards = sorted(WEIGHTS_DIR.glob("*.json"))
    assert cards
    for path in cards:
        card = json.loads(path.read_text())
        model = models.build(card["architecture"], num_classes=len(card["class_names"]), **card.get("build_kwargs", {}))
        assert default_cam_layer(model) == card["default_layer"], card["name"]
        assert set(card["layers"]) <= set(cam_layer_choices(model)), card["name"]


@pytest.mark.parametrize("arch,layer", [
    ("cbam_resnet50", "layer4"), ("ca_mobilenet_v2", "conv"), ("triplet_mobilenet_v2", "features.18"),
    ("small_resnet_cc", "cc3"), ("small_resnet_danet", "danet3"), ("small_resnet", "layer3"),
    ("small_vit", "blocks.5.norm1"),
])
def test_registry_architectures(arch, layer):
    assert default_cam_layer(models.build(arch, num_classes=11)) == layer


def test_registry_vit_token_layout_matches_its_output():
    model = models.build("small_vit", num_classes=11).eval()
    assert token_layout(model) == (1, (16, 16))
    assert _output_of(model, "blocks.5.norm1", 128).shape[1] == 1 + 16 * 16


def test_token_layout_reconciles_with_the_tokens_the_engine_saw():
    vit = _timm("vit_tiny_patch16_224")
    assert token_layout(vit, num_tokens=197) == (1, (14, 14))
    assert token_layout(vit, num_tokens=196) == (0, (14, 14))      # CaiT-style patch-only blocks
    assert token_layout(vit, num_tokens=1 + 49) == (1, (7, 7))       # another input size
    assert token_layout(vit, num_tokens=1 + 6 * 8) is None          # not a square grid: the engine must say so
    dynamic = _timm("vit_tiny_patch16_224", dynamic_img_size=True)
    assert token_layout(dynamic, input_hw=(96, 128)) == (1, (6, 8))
    assert _output_of(dynamic, "blocks.11.norm1", 96).shape[1] == 1 + 6 * 6


class _Wrapped(nn.Module):
    """A user model the rules do not know: a torchvision trunk inside a Sequential, and a head."""

    def __init__(self) -> None:
        super().__init__()
        trunk = torchvision.models.resnet18(weights=None)
        self.body = nn.Sequential(trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool, trunk.layer1, trunk.layer2)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 3))

    def forward(self, x):
        return self.head(self.body(x))


def test_unknown_models_are_probed_with_one_forward_pass_and_left_as_they_were():
    model = _Wrapped().train()
    assert default_cam_layer(model, probe_size=64) == "body"  # the last module with a spatial output
    assert model.training
    assert all(not m._forward_hooks for m in model.modules())


def test_a_model_without_spatial_layers_is_a_readable_error():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
    with pytest.raises(TargetError, match="no layer with a spatial"):
        default_cam_layer(mlp, probe_size=8)
    with pytest.raises(TargetError, match="test forward pass failed"):
        default_cam_layer(nn.Sequential(nn.Flatten(), nn.Linear(5, 4)), probe_size=8)
