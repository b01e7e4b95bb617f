"""Model cards: where the bundled weights and their cards live, and the card schema, read and written here only.

A card (``models/weights/<name>.json``) is the single source of truth for a bundled model: training writes it
(:func:`write_card`), the registry builds a spec from it (:func:`spec_from_card`).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING

from attnviz.core.specs import ModelSpec, WeightsSource

if TYPE_CHECKING:
    from torch import nn

# The checkout (or install) that holds models/: bundled weights, their replicates, and the git commit a training
# records. Found without importing the package (that imports torch; reading the cards must not).
PROJECT_ROOT = Path(importlib.util.find_spec("models").origin).resolve().parent.parent
WEIGHTS_DIR = PROJECT_ROOT / "models" / "weights"
REPLICATES_DIR = WEIGHTS_DIR / "replicates"


# What every card carries: the registry builds a spec from these, training writes them.
REQUIRED_FIELDS = ("name", "display_name", "architecture", "attention", "class_names", "input_size", "mean", "std",
                   "default_layer", "layers", "sha256")


def _check(card: dict, where: Path) -> dict:
    missing = [key for key in REQUIRED_FIELDS if key not in card]
    if missing:
        raise ValueError(f"model card {where} lacks {', '.join(missing)}")
    return card


def read_card(path: Path) -> dict:
    return _check(json.loads(path.read_text()), path)


def write_card(path: Path, card: dict) -> None:
    path.write_text(json.dumps(_check(card, path), indent=2) + "\n")


def spec_from_card(card: dict, weights_path: Path, source: str = "bundled zoo") -> ModelSpec:
    """A bundled model's spec from its model card (the card is the single source of truth)."""
    arch = card["architecture"]
    num_classes = len(card["class_names"])
    build_kwargs = dict(card.get("build_kwargs", {}))

    def builder() -> nn.Module:
        import models

        return models.build(arch, num_classes=num_classes, **build_kwargs)

    return ModelSpec(
        name=card["name"], display_name=card.get("display_name", card["name"]), attention=card["attention"],
        builder=builder, weights=WeightsSource(weights_path, card.get("sha256", ""), "bundled"),
        class_names=tuple(card["class_names"]), input_size=card["input_size"],
        resize_size=card.get("resize_size", card["input_size"]), mean=tuple(card["mean"]), std=tuple(card["std"]),
        default_layer=card["default_layer"], layers=tuple(card["layers"]), source=source, card=card)

