"""Where the attention slot sits in each backbone, and the compact zoo backbone's contract."""
from __future__ import annotations

import pytest
import torch

import models
from models.attention import ATTENTION_TYPES


def _capture(module: torch.nn.Module, store: dict, key: str, what: str = "out"):
    def hook(mod, inp, out):
        store[key] = (inp[0] if what == "in" else out).detach().clone()
    return module.register_forward_hook(hook)


@pytest.mark.parametrize("name,attr", [("se_resnet18", "se"), ("cbam_resnet18", "cbam"),
                                       ("triplet_resnet18", "triplet_attention"), ("eca_resnet18", "eca"),
                                       ("ca_resnet18", "ca")])
def test_resnet_basic_block_applies_attention_after_last_bn_before_residual_sum(name, attr):
    model = models.build(name, num_classes=10).eval()
    block = model.layer2[0]  # has a downsample branch
    store: dict = {}
    handles = [_capture(block.bn2, store, "bn2"), _capture(getattr(block, attr), store, "att_in", "in"),
               _capture(getattr(block, attr), store, "att_out"), _capture(block.downsample, store, "identity"),
               _capture(block, store, "block_out")]
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    for h in handles:
        h.remove()
    assert torch.equal(store["att_in"], store["bn2"])
    torch.testing.assert_close(store["block_out"], torch.relu(store["att_out"] + store["identity"]))


def test_resnet50_bottleneck_slot_follows_bn3():
    model = models.build("se_resnet50", num_classes=10).eval()
    block = model.layer1[1]  # identity shortcut
    store: dict = {}
    handles = [_capture(block.bn3, store, "bn3"), _capture(block.se, store, "in", "in"),
               _capture(block.se, store, "out"), _capture(block, store, "block", "in"),
               _capture(block, store, "block_out")]
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    for h in handles:
        h.remove()
    assert torch.equal(store["in"], store["bn3"])
    torch.testing.assert_close(store["block_out"], torch.relu(store["out"] + store["block"]))


@pytest.mark.parametrize("attention", [None, *ATTENTION_TYPES])
def test_small_resnet_gives_8x8_last_stage_at_128px_and_any_attention(attention):
    model = models.build("small_resnet", num_classes=11, attention=attention).eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 3, 128, 128))
        logits = model(torch.randn(2, 3, 128, 128))
    assert features.shape[-2:] == (8, 8)
    assert logits.shape == (2, 11)
    if attention and ATTENTION_TYPES[attention].placement == "block":
        attr = ATTENTION_TYPES[attention].block_attr
        assert all(hasattr(block, attr) for stage in (model.layer1, model.layer2, model.layer3) for block in stage)


def test_small_resnet_input_size_and_class_count_are_configurable():
    model = models.build("small_resnet_cbam", num_classes=5, input_size=96).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 96, 96)).shape == (1, 5)
        assert model.forward_features(torch.randn(1, 3, 96, 96)).shape[-1] == 6


@pytest.mark.parametrize("name", ["mobilenet_v2", "triplet_mobilenet_v2", "ca_mobilenet_v2", "resnet34", "triplet_resnet50"])
def test_imagenet_layouts_run_forward(name):
    model = models.build(name).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
