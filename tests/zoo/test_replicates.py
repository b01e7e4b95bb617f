"""The committed training-seed replicates (models/weights/replicates): only the seed differs from the bundled
model's recipe, the weights are the ones the card hashes, they load by name and stay off the page."""
from __future__ import annotations

import json

import pytest

from attnviz.zoo import registry as zoo
from attnviz.zoo.files import sha256_file

CARDS = sorted(zoo.REPLICATES_DIR.glob("*.json"))


def test_there_are_replicates_of_the_five_core_models():
    bases = {json.loads(p.read_text())["replicate_of"] for p in CARDS}
    assert bases <= {"baseline", "se", "cbam", "triplet", "coord"} and len(bases) >= 1


@pytest.mark.parametrize("card_path", CARDS, ids=[p.stem for p in CARDS])
def test_only_the_training_seed_differs_and_the_weights_match_the_card(card_path):
    card = json.loads(card_path.read_text())
    bundled = json.loads((zoo.WEIGHTS_DIR / f"{card['replicate_of']}.json").read_text())
    changed = {k for k in set(card["recipe"]) | set(bundled["recipe"])
               if card["recipe"].get(k) != bundled["recipe"].get(k)}
    assert changed == {"torch_seed"} and card["recipe"]["torch_seed"] != bundled["recipe"]["torch_seed"]
    assert card["name"] == f"{card['replicate_of']}_seed{card['recipe']['torch_seed']}"
    assert (card["architecture"], card["attention"]) == (bundled["architecture"], bundled["attention"])
    weights = card_path.with_suffix(".safetensors")
    assert sha256_file(weights) == card["sha256"]
    assert card["test_accuracy"] >= 0.95                      # the zoo's bar holds for every run, not just seed 0


def test_replicates_load_by_name_but_are_not_bundled():
    name = CARDS[0].stem
    assert name not in zoo.bundled()
    assert zoo.load(name, "cpu").spec.source == "replicate"
