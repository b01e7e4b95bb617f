"""The bundled ViT: a trained transformer with a class token and global self-attention, at the zoo's bar."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from attnviz.api import explain
from attnviz.data import synth
from attnviz.data.examples import EXAMPLES_DIR
from attnviz.zoo import registry as zoo
from attnviz.zoo.training import RECIPES

UNUSED_SEED = 4242   # never used for training, validation, test, evaluation or the examples


@pytest.fixture(scope="module")
def vit():
    if "vit" not in zoo.bundled():
        pytest.fail("the ViT is not bundled (models/weights/vit.json + vit.safetensors)")
    return zoo.load("vit", "cpu")


def test_the_vit_is_bundled_with_its_own_recipe(vit):
    card = vit.spec.card
    assert card["test_accuracy"] >= 0.95
    assert card["recipe_name"] == "vit" and card["recipe"] == RECIPES["vit"]
    assert card["command"] == "attnviz train --attention vit --recipe vit"
    assert vit.model.cls_token is not None and vit.model.global_pool == "token"


def test_the_vit_scores_at_least_95_percent_on_300_scenes_of_an_unused_seed(vit):
    scenes = synth.generate(300, seed=UNUSED_SEED, workers=1)
    with torch.no_grad():
        predicted = np.concatenate([vit.model(vit.spec.preprocess(scenes.images[i:i + 100])).argmax(1).numpy()
                                    for i in range(0, 300, 100)])
    assert (predicted == scenes.labels).mean() >= 0.95


def test_rollout_grad_rollout_and_per_head_maps_come_back_from_explain(vit):
    scene = sorted(p for p in EXAMPLES_DIR.glob("*.png") if not p.name.endswith("_mask.png"))[0]
    e = explain("vit", scene, methods=["gradcam", "rollout", "grad-rollout"], device="cpu")
    assert set(e.cams) == {"gradcam", "rollout", "grad-rollout"}
    for m in e.cams.values():
        assert m.heatmap.shape == (128, 128) and np.isfinite(m.heatmap).all() and m.heatmap.max() > 0
    assert e.cams["rollout"].layer_map.shape == (8, 8)
    blocks = {a.block for a in e.attention_maps if a.attention == "vit"}
    assert len(blocks) == 6
    last = {a.name: a for a in e.attention_maps if a.block == "blocks.5.attn"}
    assert {"head 1", "head 2", "head 3", "mean of heads"} <= set(last)          # per-head query-point maps
    assert last["head 1"].data.shape == (8, 8, 8, 8)
    assert last["class-token attention"].data.shape == (8, 8)
