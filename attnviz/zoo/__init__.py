"""Zoo layer: which models exist (registry, cards, ImageNet sources, models files, uploads' checkpoints), their
weights on disk, and training the bundled ones. ``attnviz.zoo.registry.load(name)`` is public API."""
from attnviz.zoo.registry import all_specs, bundled, get_spec, load

__all__ = ["all_specs", "bundled", "get_spec", "load"]
