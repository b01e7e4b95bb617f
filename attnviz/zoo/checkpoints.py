"""Bring your own checkpoint: read it safely, fit it to an architecture strictly, explain what does not fit.

Files are read as data only: ``.safetensors`` with safetensors, ``.pth``/``.pt``/``.bin`` with
``torch.load(weights_only=True)`` (a pickle that would run code is refused, never executed). TorchScript
archives are refused. Released wrappers (``{"state_dict": {"module." + key}}``, ``{"model": ...}``) are
unwrapped, the class count is read from the classifier weight, and loading is strict; on a mismatch the
error lists missing / unexpected / mis-shaped keys and names the registry architecture it looks like.
Architectures are registry names, ``timm:<name>`` or ``python:module:function`` (:mod:`.architectures`);
the CAM layer comes from :mod:`.layers`.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import models
from attnviz.errors import CheckpointError, TargetError
from attnviz.zoo.files import read_checkpoint


@dataclass
class KeyDiff:
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 8) -> str:
        parts = []
        for title, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                shown = ", ".join(items[:limit]) + (f" … (+{len(items) - limit})" if len(items) > limit else "")
                parts.append(f"{len(items)} {title} key(s): {shown}")
        if self.mismatched:
            shown = ", ".join(f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in self.mismatched[:limit])
            parts.append(f"{len(self.mismatched)} shape mismatch(es) (checkpoint vs model): {shown}")
        return "; ".join(parts)


def key_diff(model_state: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> KeyDiff:
    diff = KeyDiff(sorted(set(model_state) - set(state)), sorted(set(state) - set(model_state)))
    for k in sorted(set(model_state) & set(state)):
        if tuple(model_state[k].shape) != tuple(state[k].shape):
            diff.mismatched.append((k, tuple(state[k].shape), tuple(model_state[k].shape)))
    return diff


def classifier_key(model: nn.Module) -> str | None:
    """State-dict key of the last Linear layer's weight (the classifier)."""
    last = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            last = name
    return f"{last}.weight" if last else None


def infer_num_classes(arch: str, state: dict[str, torch.Tensor]) -> int | None:
    """The class count in the checkpoint's classifier weight (any architecture name, see :mod:`.architectures`)."""
    from attnviz.zoo.architectures import infer_num_classes as infer

    return infer(arch, state)


def _key_signature(arch: str) -> frozenset[str]:
    from attnviz.zoo.architectures import build_shape_only

    model = build_shape_only(arch, 10)  # keys only: the meta device spares allocating ~60 networks
    return frozenset(k for k in model.state_dict() if not k.endswith("num_batches_tracked"))


_SIGNATURES: dict[str, frozenset[str]] = {}


def guess_architecture(state: dict[str, torch.Tensor], candidates: list[str] | None = None) -> tuple[str, float]:
    """The registry architecture whose key set best matches (Jaccard), and that score."""
    keys = frozenset(k for k in state if not k.endswith("num_batches_tracked"))
    names = candidates or [n for n in models.available() if not n.startswith("small_resnet")]
    names += [n for n in models.available() if n.startswith("small_resnet_") or n == "small_resnet"]
    best, best_score = "", 0.0
    for name in dict.fromkeys(names):
        if name not in _SIGNATURES:
            _SIGNATURES[name] = _key_signature(name)
        sig = _SIGNATURES[name]
        score = len(keys & sig) / max(1, len(keys | sig))
        if score > best_score:
            best, best_score = name, score
    return best, best_score


def load_into(arch: str, state: dict[str, torch.Tensor], num_classes: int | None = None, *,
              allow_python: bool = True) -> nn.Module:
    """Build ``arch`` with the checkpoint's class count and load strictly, or raise a readable diff.

    ``arch`` is a registry name, ``timm:<name>`` or ``python:module:function`` (:mod:`.architectures`).
    Keys and shapes are compared on a shape-only (meta-device) build first, so a checkpoint that does not
    fit never makes attnviz allocate the network.
    """
    return _fit(arch, state, num_classes, allow_python=allow_python)[0]


def _fit(arch, state: dict[str, torch.Tensor], num_classes: int | None = None, *,
         allow_python: bool = True) -> tuple[nn.Module, int | None]:
    """:func:`load_into`, also returning the class count the network was built with (None: its own)."""
    from attnviz.zoo.architectures import as_ref, build, build_shape_only

    ref = as_ref(arch, allow_python=allow_python)
    n = num_classes or infer_num_classes(ref, state) or (1000 if ref.kind == "registry" else None)
    shaped = build_shape_only(ref, n)
    diff = key_diff(shaped.state_dict(), state)
    if not diff.ok:
        raise CheckpointError(mismatch_message(ref.text, diff, state))
    on_meta = any(t.is_meta for t in shaped.state_dict().values())
    model = build(ref, n) if on_meta else shaped
    model.load_state_dict(state, strict=True)
    return model.eval(), n


def mismatch_message(arch: str, diff: KeyDiff, state: dict[str, torch.Tensor]) -> str:
    """Why a checkpoint does not fit ``arch``, the suggestion first (the architecture it looks like), the
    key lists after it."""
    guess, score = guess_architecture(state)
    lead = f"The checkpoint does not fit {arch}."
    if guess and guess != arch and score > 0.9:
        kind = models.get(guess).attention
        lead = (f"Choose {guess}: this looks like a {kind.upper() if kind != 'none' else 'plain'} checkpoint "
                f"(key overlap {score:.0%}), not {arch}.")
    return f"{lead} Details: {diff.describe()}."


def read_class_names(path: str | Path | None, num_classes: int) -> tuple[str, ...] | None:
    """Class names from a .txt (one per line) or .json (a list, or a {index: name} mapping) file."""
    if path is None:
        return None
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"Cannot read the class-names file {path.name}: {exc}") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CheckpointError(f"The class-names file is not valid JSON ({exc}).") from None
        if isinstance(data, dict):
            try:
                names = [str(data[k]) for k in sorted(data, key=lambda k: int(k))]
            except (ValueError, TypeError):
                raise CheckpointError("A JSON class-names mapping must have integer keys (\"0\": \"cat\", ...).") from None
        elif isinstance(data, list):
            names = [str(x) for x in data]
        else:
            raise CheckpointError("The JSON class-names file must hold a list or an {index: name} mapping.")
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != num_classes:
        raise CheckpointError(f"The class-names file lists {len(names)} names but the checkpoint has {num_classes} classes.")
    return tuple(names)




def default_cam_layer(arch: str, model: nn.Module) -> str:
    """The CAM layer for a loaded checkpoint: :func:`attnviz.core.layers.default_cam_layer` (the deepest stage)."""
    from attnviz.core.layers import default_cam_layer as default_layer

    return default_layer(model)


@contextlib.contextmanager
def _field(name: str):
    """Tag a CheckpointError raised inside with the models-file field it concerns (unless already tagged)."""
    try:
        yield
    except CheckpointError as exc:
        if getattr(exc, "field", None) is None:
            exc.field = name
        raise


def checkpoint_spec(arch: str, path: str | Path, classes: str | Path | None = None, name: str | None = None, *,
                    layer: str | None = None, input_size: int | None = None, resize_size: int | None = None,
                    mean: tuple[float, float, float] | None = None, std: tuple[float, float, float] | None = None,
                    interpolation: str | None = None, display_name: str | None = None,
                    allow_python: bool = True, class_names: tuple[str, ...] | None = None,
                    source: str = "checkpoint", search_path: str | Path | None = None):
    """Validate a user checkpoint against ``arch`` now (strict, readable errors) and return its ModelSpec.

    ``arch``: a registry name, ``timm:<name>`` or ``python:module:function``. Preprocessing defaults to the
    architecture's own (timm: its pretrained config; the compact zoo family: 128 px; else 224/256 with
    ImageNet statistics); the keyword arguments override it. ``layer`` must exist in the network; by
    default it is :func:`attnviz.core.layers.default_cam_layer`. The returned spec loads the same file through
    the zoo (cached, with its own lock) like any model. ``search_path``: the folder python: modules are
    imported from (a models file's folder).
    """
    from attnviz.core.layers import cam_layer_choices
    from attnviz.core.specs import ModelSpec, WeightsSource
    from attnviz.data.synth import CLASS_NAMES
    from attnviz.zoo.architectures import as_ref, attention_of, build, default_preprocessing
    from attnviz.zoo.files import sha256_file
    from attnviz.zoo.imagenet import imagenet_classes

    with _field("arch"):
        ref = as_ref(arch, allow_python=allow_python, search_path=search_path)
    path = Path(path)
    with _field("checkpoint"):
        state = read_checkpoint(path)
        model, built_with = _fit(ref, state)
    pre = default_preprocessing(ref, model)
    size = int(input_size or pre.input_size)
    key = classifier_key(model)
    if key and model.state_dict()[key].dim() == 2:
        n = int(model.state_dict()[key].shape[0])
    else:  # no Linear classifier (a conv head, a wrapper): count the outputs once
        with torch.no_grad():
            n = int(model(torch.zeros(1, 3, size, size)).shape[-1])
    with _field("classes"):
        names = tuple(class_names) if class_names else read_class_names(classes, n)
        if names is not None and len(names) != n:
            raise CheckpointError(f"{len(names)} class names given but the checkpoint has {n} classes.")
    if names is None:
        names = imagenet_classes() if n == 1000 else (CLASS_NAMES if n == len(CLASS_NAMES) else
                                                       tuple(f"class_{i}" for i in range(n)))
    try:
        choices = list(cam_layer_choices(model, probe_size=size))
    except TargetError as exc:  # no rule and no spatial layer found: the user must name one
        if layer is None:
            raise CheckpointError(str(exc), field="layer") from None
        choices = []
    if layer is not None:
        try:
            model.get_submodule(layer)
        except AttributeError:
            raise CheckpointError(f"Layer {layer!r} is not in {ref.text}; for example: {', '.join(choices)}.",
                                  field="layer") from None
        choices = [c for c in choices if c != layer] + [layer]
    default = choices[-1]
    if resize_size is None:  # keep the architecture's crop ratio when only the crop side is overridden
        resize_size = pre.resize_size if input_size is None else round(size * pre.resize_size / pre.input_size)
    digest = sha256_file(path)
    spec = ModelSpec(
        name=name or f"{ref.text}@{path.stem}", display_name=display_name or f"{ref.text} ({path.name})",
        attention=attention_of(ref, model),
        builder=lambda: build(ref, built_with),
        weights=WeightsSource(path, digest, "upload"),
        class_names=names, input_size=size,
        resize_size=int(resize_size),
        mean=tuple(mean or pre.mean), std=tuple(std or pre.std),
        interpolation=interpolation or pre.interpolation,
        default_layer=default, layers=tuple(dict.fromkeys(choices)),
        source=source)
    return spec
