"""The model registry the page, the CLI and the API list, and the cache of loaded models.

Specs come from providers: the bundled zoo (``models/weights/*.json`` model cards next to their
``.safetensors`` files) and, where registered, other sources. ``load(name)`` builds the network once,
loads its weights (safetensors only), puts it in eval mode and caches it with its own lock: module
hooks are global to a model, so two requests on one model must not interleave.

Listing the specs imports neither torch nor the networks (``attnviz models`` prints the list in a fraction
of torch's start-up); loading a model does.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from attnviz.core.specs import LoadedModel, ModelSpec, WeightsSource
from attnviz.errors import ModelNotFoundError, WeightsUnavailableError
from attnviz.zoo.cards import REPLICATES_DIR, WEIGHTS_DIR, read_card, spec_from_card

if TYPE_CHECKING:
    import torch
    from torch import nn

CACHE_SIZE = int(os.environ.get("ATTNVIZ_MODEL_CACHE", "16"))




_specs: dict[str, ModelSpec] = {}
_specs_lock = threading.Lock()
_providers: list[Callable[[], Iterable[ModelSpec]]] = []
_providers_loaded = False
# One loaded copy per (model name, device): a model is moved to a device once and reused from there.
_cache: "OrderedDict[tuple[str, str], LoadedModel]" = OrderedDict()
_cache_lock = threading.Lock()
_load_locks: dict[tuple[str, str], threading.Lock] = {}


def register(spec: ModelSpec, replace: bool = False) -> ModelSpec:
    """Add a spec; names are unique unless ``replace`` (used for user checkpoints)."""
    with _specs_lock:
        if spec.name in _specs and not replace:
            raise ValueError(f"model {spec.name!r} is already registered")
        _specs[spec.name] = spec
    _drop_cached(spec.name)
    return spec


def _drop_cached(name: str) -> None:
    with _cache_lock:
        for key in [k for k in _cache if k[0] == name]:
            del _cache[key]


def add_provider(provider: Callable[[], Iterable[ModelSpec]]) -> None:
    """A function returning specs, called once on first use (keeps imports and disk scans lazy)."""
    global _providers_loaded
    _providers.append(provider)
    if _providers_loaded:
        for spec in provider():
            register(spec, replace=True)


def _ensure_providers() -> None:
    global _providers_loaded
    if _providers_loaded:
        return
    with _specs_lock:
        if _providers_loaded:
            return
        _providers_loaded = True
    for provider in _providers:
        for spec in provider():
            register(spec, replace=True)


def all_specs() -> list[ModelSpec]:
    _ensure_providers()
    return list(_specs.values())


def get_spec(name: str) -> ModelSpec:
    _ensure_providers()
    try:
        return _specs[name]
    except KeyError:
        names = ", ".join(sorted(_specs)) or "(none)"
        raise ModelNotFoundError(f"Unknown model {name!r}. Available models: {names}.") from None


def bundled() -> list[str]:
    """Names of the models trained by attnviz and shipped with it, in model-card order."""
    _ensure_providers()
    ordered = sorted((s for s in _specs.values() if s.source == "bundled zoo"),
                     key=lambda s: (s.card.get("order", 99), s.name))
    return [s.name for s in ordered]




def _load_weights(model: nn.Module, spec: ModelSpec) -> str:
    src = spec.weights
    if src.path is None:
        return ""
    if not src.path.is_file():
        if src.download_hint:
            raise WeightsUnavailableError(f"{spec.name} is not downloaded — {src.download_hint}.")
        raise WeightsUnavailableError(f"Weights for {spec.name!r} are not on this machine ({src.path}).")
    from attnviz.zoo.files import read_checkpoint, sha256_file

    digest = sha256_file(src.path)
    if src.sha256 and digest != src.sha256:
        raise WeightsUnavailableError(f"Weights file for {spec.name!r} is corrupt: sha256 {digest[:12]}… "
                                      f"does not match the model card ({src.sha256[:12]}…).")
    state = read_checkpoint(src.path)  # safetensors, or torch.load(weights_only=True) for .pth
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    return digest


def build_model(spec: ModelSpec) -> tuple[nn.Module, str]:
    model = spec.builder()
    digest = _load_weights(model, spec)
    return model.eval(), digest


def load(name_or_spec: str | ModelSpec, device: str | torch.device | None = None) -> LoadedModel:
    """The cached, ready-to-run model for a name or spec on ``device`` (default ``ATTNVIZ_DEVICE`` or "auto":
    CUDA, else MPS, else CPU), built, loaded and moved there on first use."""
    from attnviz.core.devices import resolve_device

    spec = name_or_spec if isinstance(name_or_spec, ModelSpec) else get_spec(name_or_spec)
    target = resolve_device(device)
    key = (spec.name, str(target))
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None and hit.spec is spec:
            _cache.move_to_end(key)
            return hit
        load_lock = _load_locks.setdefault(key, threading.Lock())
    with load_lock:  # two first requests for one model build it once
        with _cache_lock:
            hit = _cache.get(key)
            if hit is not None and hit.spec is spec:
                return hit
        model, digest = build_model(spec)
        loaded = LoadedModel(model.to(target), spec, weights_sha256=digest, device=target)
        with _cache_lock:
            _cache[key] = loaded
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
        return loaded


def loaded_models() -> list[LoadedModel]:
    """Models currently in the cache (tests use this to check no hooks are left behind)."""
    with _cache_lock:
        return list(_cache.values())


def evict(name_or_spec: str | ModelSpec) -> bool:
    """Drop one model from the cache (a page session's uploaded checkpoint when the session ends).

    Given a spec, only that spec's entry goes: another session's model of the same name stays.
    """
    name = name_or_spec if isinstance(name_or_spec, str) else name_or_spec.name
    with _cache_lock:
        keys = [k for k, hit in _cache.items() if k[0] == name and
                not (isinstance(name_or_spec, ModelSpec) and hit.spec is not name_or_spec)]
        for key in keys:  # every device's copy
            del _cache[key]
        return bool(keys)


def clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


# ---- bundled zoo provider -------------------------------------------------------------------





@lru_cache(maxsize=1)
def _bundled_cards() -> tuple[tuple[dict, Path], ...]:
    found = []
    for card_path in sorted(WEIGHTS_DIR.glob("*.json")):
        weights = card_path.with_suffix(".safetensors")
        if weights.is_file():
            found.append((read_card(card_path), weights))
    return tuple(found)


def _bundled_provider() -> Iterable[ModelSpec]:
    return [spec_from_card(card, path) for card, path in _bundled_cards()]


add_provider(_bundled_provider)



def replicate_specs(folder: Path | None = None) -> list[ModelSpec]:
    """Training-seed replicates (``<name>_seed<S>``, cards with ``"replicate_of"``), source "replicate": they
    load by name (``load("se_seed1")``) for ``attnviz eval`` but are not bundled models, so neither
    :func:`bundled` nor the page lists them."""
    folder = REPLICATES_DIR if folder is None else Path(folder)
    found = []
    for card_path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        weights = card_path.with_suffix(".safetensors")
        if weights.is_file():
            found.append(spec_from_card(read_card(card_path), weights, source="replicate"))
    return found


add_provider(replicate_specs)


def _imagenet_provider() -> Iterable[ModelSpec]:
    from attnviz.zoo.imagenet import provider

    return provider()


add_provider(_imagenet_provider)


def random_spec(arch: str, num_classes: int = 1000, *, name: str | None = None, input_size: int = 224,
                resize_size: int | None = None, default_layer: str | None = None,
                class_names: tuple[str, ...] | None = None, **build_kwargs) -> ModelSpec:
    """A spec for a registry architecture with random weights (tests, benchmarks, notebooks)."""
    import models

    a = models.get(arch)
    layer = default_layer or {"mobilenet_v2": "features.18" if arch != "ca_mobilenet_v2" else "conv",
                              "small_resnet": "layer3"}.get(a.family, "layer4")
    names = class_names or tuple(f"class_{i}" for i in range(num_classes))
    return ModelSpec(name=name or f"{arch}-random", display_name=f"{arch} (random weights)", attention=a.attention,
                     builder=lambda: models.build(arch, num_classes=num_classes, **build_kwargs),
                     weights=WeightsSource(), class_names=names, input_size=input_size,
                     resize_size=resize_size or input_size, default_layer=layer, layers=(layer,), source="random")


def bundled_table_markdown() -> str:
    """The README's table of bundled models, generated from their model cards (`attnviz models --markdown`)."""
    lines = ["| model | attention | parameters | MFLOPs | test accuracy | training time |",
             "|---|---|---|---|---|---|"]
    for name in bundled():
        card = get_spec(name).card
        lines.append(f"| `{name}` | {card.get('display_name', name)} | {card['parameters']:,} | "
                     f"{card['flops'] / 1e6:.0f} | {card['test_accuracy'] * 100:.2f} % | "
                     f"{card['training_seconds'] / 60:.1f} min |")
    return "\n".join(lines)


DEFAULT_SELECTION = ("baseline", "se", "cbam", "triplet", "coord")


def default_models() -> list[str]:
    """The selection the page starts with and ``attnviz explain`` uses without ``--models``."""
    shipped = bundled()
    picked = [n for n in DEFAULT_SELECTION if n in shipped]
    return picked or shipped[:5]
