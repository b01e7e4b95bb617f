"""The bundled zoo: model cards, weights, loading, preprocessing, accuracy, training, evaluation numbers."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import models
from attnviz.data import synth
from attnviz.data.scenes import TEST_SEED
from attnviz.evaluation import run as evaluate
from attnviz.zoo import registry as zoo
from attnviz.zoo import train_loop
from attnviz.zoo import training as train
from attnviz.zoo.files import sha256_file

CARD_FIELDS = {"name", "architecture", "attention", "class_names", "input_size", "mean", "std", "default_layer",
               "layers", "parameters", "flops", "test_accuracy", "test_set", "training_seconds", "recipe",
               "data_seed", "project_commit", "sha256"}
REQUIRED_ATTENTION = {"none", "se", "eca", "cbam", "triplet", "coord"}
RESULTS_JSON = Path(__file__).resolve().parents[2] / "docs" / "results.json"


@pytest.fixture(scope="module")
def names() -> list[str]:
    found = zoo.bundled()
    assert found, "no bundled models: models/weights/*.safetensors + *.json are missing"
    return found


@pytest.fixture(scope="module")
def fresh_scenes() -> synth.Scenes:
    # a seed that training, validation, testing, evaluation and the gallery never use
    return synth.generate(44, seed=90210, workers=1)


def test_zoo_covers_every_core_attention_type(names):
    kinds = {zoo.get_spec(n).attention for n in names}
    assert REQUIRED_ATTENTION <= kinds
    assert "baseline" in names and names[0] == "baseline"


def test_model_cards_are_complete_and_match_the_weights(names):
    for name in names:
        spec = zoo.get_spec(name)
        card = spec.card
        assert CARD_FIELDS <= set(card), name
        assert card["sha256"] == sha256_file(spec.weights.path)
        assert tuple(card["class_names"]) == synth.CLASS_NAMES
        assert card["test_accuracy"] >= 0.95, f"{name}: card states {card['test_accuracy']}"
        assert card["training_seconds"] > 0  # a measurement of the machine it ran on: README table, not a gate
        assert card["test_set"]["seed"] == TEST_SEED and card["data_seed"] == train.TRAIN_SEED
        model = models.build(card["architecture"], num_classes=len(card["class_names"]))
        assert card["parameters"] == sum(p.numel() for p in model.parameters())
        # change a recipe -> retrain the zoo; the CNNs share one, the ViT has its own
        assert card["recipe"] == train.RECIPES[card.get("recipe_name", "shared")], name


def test_every_cnn_card_uses_the_same_recipe_and_the_vit_its_own(names):
    cnns = [n for n in names if zoo.get_spec(n).attention != "vit"]
    recipes = {json.dumps(zoo.get_spec(n).card["recipe"], sort_keys=True) for n in cnns}
    assert len(recipes) == 1
    for name in set(names) - set(cnns):
        card = zoo.get_spec(name).card
        assert card["recipe_name"] == "vit" and card["recipe"] == train.RECIPES["vit"]
        assert "--recipe vit" in card["command"]


def test_load_gives_eval_model_and_spec_preprocess(names, fresh_scenes):
    loaded = zoo.load(names[0])
    assert not loaded.model.training
    x = loaded.spec.preprocess(fresh_scenes.images[:4])
    assert x.shape == (4, 3, 128, 128) and x.dtype == torch.float32
    torch.testing.assert_close(x, train_loop.normalise(torch.from_numpy(fresh_scenes.images[:4])))


def test_every_bundled_model_classifies_fresh_scenes(names, fresh_scenes):
    for name in names:
        loaded = zoo.load(name)
        with torch.no_grad():
            pred = loaded.model(loaded.spec.preprocess(fresh_scenes.images)).argmax(1).numpy()
        accuracy = (pred == fresh_scenes.labels).mean()
        assert accuracy >= 0.85, f"{name}: {accuracy:.2f} on 44 fresh scenes"


def test_card_accuracy_recomputed_on_a_slice_of_its_test_set(names):
    test = synth.generate(300, TEST_SEED, workers=1)
    for name in names[:2]:
        loaded = zoo.load(name)
        with torch.no_grad():
            pred = np.concatenate([loaded.model(loaded.spec.preprocess(test.images[i:i + 100])).argmax(1).numpy()
                                   for i in range(0, 300, 100)])
        accuracy = (pred == test.labels).mean()
        assert abs(accuracy - loaded.spec.card["test_accuracy"]) < 0.04, (name, accuracy)


def test_tiny_training_run_decreases_the_loss():
    scenes = synth.generate(128, seed=77, workers=1)  # 10 passes over a small set: the loss must fall clearly
    torch.manual_seed(0)
    model = models.build("small_resnet_cbam", num_classes=len(synth.CLASS_NAMES))
    recipe = {**train.RECIPE, "batch_size": 32, "lr": 0.05}
    result = train_loop.train_model(model, scenes, None, recipe, max_steps=40, progress=False, log=lambda s: None)
    first, last = np.mean(result.losses[:8]), np.mean(result.losses[-8:])
    assert result.steps == 40 and last < first - 0.2, (first, last)


def test_augmentation_is_deterministic_for_a_seed():
    x = torch.randn(4, 3, 16, 16)
    a = train_loop.augment(x, torch.Generator().manual_seed(3), max_shift=2)
    b = train_loop.augment(x, torch.Generator().manual_seed(3), max_shift=2)
    c = train_loop.augment(x, torch.Generator().manual_seed(4), max_shift=2)
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == x.shape


def test_results_table_numbers_are_recomputed_for_one_model():
    results = json.loads(RESULTS_JSON.read_text())
    row = results["models"][0]
    scenes = synth.generate(len(row["check"]), results["seed"], workers=1)
    loaded = zoo.load(row["model"])
    for item in row["check"]:
        i = item["index"]
        values, _ = evaluate.scene_metrics(loaded, scenes.images[i], int(scenes.labels[i]), scenes.masks[i],
                                           results["methods"], with_road=False)
        assert set(values) == set(item["values"])
        for m, stored in item["values"].items():
            for k, v in stored.items():
                if k != "road":  # ROAD is not recomputed here (slow); everything else is
                    assert values[m][k] == pytest.approx(v, abs=1e-4), (row["model"], i, m, k)


@pytest.mark.slow
def test_training_from_scratch_reproduces_the_shipped_accuracy(tmp_path):
    card = zoo.get_spec("se").card
    new = train.train_variant("se", tmp_path, train.RECIPE, progress=False, log=lambda s: None)
    assert abs(new["test_accuracy"] - card["test_accuracy"]) <= 0.015


def test_readme_zoo_table_matches_the_model_cards():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    start = "<!-- zoo-table: generated by `attnviz models --markdown` -->\n"
    assert start in readme, "README lost its zoo-table markers"
    block = readme.split(start, 1)[1].split("<!-- /zoo-table -->", 1)[0].strip()
    assert block == zoo.bundled_table_markdown(), "README's zoo table is stale: paste `attnviz models --markdown`"


def test_eval_update_adds_a_model_and_keeps_the_other_rows(tmp_path):
    from attnviz.errors import AttnvizError

    first = evaluate.run_eval(["baseline"], n=3, out=tmp_path, progress=False, road_scenes=1)
    second = evaluate.run_eval(["se"], n=3, out=tmp_path, progress=False, road_scenes=1, update=True)
    assert [r["model"] for r in second["models"]] == ["baseline", "se"]
    assert second["models"][0] == first["models"][0]
    assert "| SE |" in (tmp_path / "results.md").read_text()
    with pytest.raises(AttnvizError, match="other settings \\(n\\)"):
        evaluate.run_eval(["eca"], n=4, out=tmp_path, progress=False, road_scenes=1, update=True)
