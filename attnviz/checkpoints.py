"""Bring your own checkpoint: read it safely, fit it to an architecture strictly, explain what does not fit.

Files are read as data only: ``.safetensors`` with safetensors, ``.pth``/``.pt``/``.bin`` with
``torch.load(weights_only=True)`` (a pickle that would run code is refused, never executed). TorchScript
archives are refused. Released wrappers (``{"state_dict": {"module." + key}}``, ``{"model": ...}``) are
unwrapped, the class count is read from the classifier weight, and loading is strict; on a mismatch the
error lists missing / unexpected / mis-shaped keys and names the registry architecture it looks like.
"""
from __future__ import annotations

import json
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

import models

from .errors import CheckpointError

MAX_CHECKPOINT_BYTES = 1024 * 1024 * 1024   # 1 GiB
MAX_TENSOR_ELEMENTS = 500_000_000          # no single weight of a supported network comes near this
SAFETENSORS = (".safetensors",)
# ".pth.tar" is how the official CBAM / Triplet releases are named; ".tar" alone is the same container.
PICKLED = (".pth", ".pth.tar", ".pt", ".bin", ".ckpt", ".tar", ".pkl")
# Every file name ending the reader accepts: the page's upload widget offers exactly these.
CHECKPOINT_SUFFIXES: tuple[str, ...] = SAFETENSORS + PICKLED


def checkpoint_suffix(name: str | Path) -> str:
    """The accepted ending of a file name (longest match, lower case), or "" when it has none."""
    lower = Path(name).name.lower()
    return max((s for s in CHECKPOINT_SUFFIXES if lower.endswith(s)), key=len, default="")


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.split("/", 1)[-1].startswith("code/") or n.endswith("constants.pkl") for n in names)


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, unwrapped to a clean state dict. Never executes code from the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No such checkpoint file: {path.name}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError("The checkpoint file is empty.")
    if size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"The checkpoint is {size / 2**20:.0f} MB; the limit is {MAX_CHECKPOINT_BYTES / 2**20:.0f} MB.")
    suffix = checkpoint_suffix(path)
    if suffix in SAFETENSORS:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            raw = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"This is not a valid .safetensors file ({exc}).") from None
    elif suffix in PICKLED:
        if _is_torchscript(path):
            raise CheckpointError("TorchScript archives are not accepted (they contain code). "
                                  "Save the model's state_dict (torch.save(model.state_dict(), ...)) instead.")
        try:
            raw = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
            if found:
                raise CheckpointError("Refused: the file contains Python objects other than tensors and plain "
                                      f"containers ({found.group(1)}); loading it would run code. Re-save only the "
                                      "state_dict, or use .safetensors.") from None
            raise CheckpointError("This file is not a readable PyTorch checkpoint (the pickle stream is invalid).") from None
        except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
            raise CheckpointError(f"This file is not a readable PyTorch checkpoint ({str(exc).splitlines()[0][:200]}).") from None
    else:
        raise CheckpointError(f"Unsupported checkpoint type {path.suffix.lower() or '(none)'}: use "
                              f"{', '.join(CHECKPOINT_SUFFIXES)}.")
    try:
        state = models.unwrap_state_dict(raw)
    except ValueError as exc:
        raise CheckpointError(f"No weights found in the checkpoint: {exc}.") from None
    check_tensors(state)
    return state


def check_tensors(state: dict[str, torch.Tensor]) -> None:
    """Refuse absurd shapes and non-finite weights with a message naming the first offending key."""
    for key, t in state.items():
        if t.numel() > MAX_TENSOR_ELEMENTS:
            raise CheckpointError(f"Tensor {key!r} has {t.numel():,} elements ({tuple(t.shape)}); refusing it.")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(f"Tensor {key!r} contains {bad} NaN or infinite values; the checkpoint is unusable.")


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
    probe = models.build(arch, num_classes=7)
    key = classifier_key(probe)
    if key and key in state and state[key].dim() == 2:
        return int(state[key].shape[0])
    return None


def _key_signature(arch: str) -> frozenset[str]:
    model = models.build(arch, num_classes=10)
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


def load_into(arch: str, state: dict[str, torch.Tensor], num_classes: int | None = None) -> nn.Module:
    """Build ``arch`` with the checkpoint's class count and load strictly, or raise a readable diff."""
    if arch not in models.available():
        raise CheckpointError(f"Unknown architecture {arch!r}. Choose one of: {', '.join(models.available())}.")
    n = num_classes or infer_num_classes(arch, state) or 1000
    model = models.build(arch, num_classes=n)
    diff = key_diff(model.state_dict(), state)
    if not diff.ok:
        guess, score = guess_architecture(state)
        hint = ""
        if guess and guess != arch and score > 0.9:
            hint = f" This looks like a {models.get(guess).attention.upper() if models.get(guess).attention != 'none' else 'plain'} " \
                   f"checkpoint; choose {guess}."
        raise CheckpointError(f"The checkpoint does not fit {arch}: {diff.describe()}.{hint}")
    model.load_state_dict(state, strict=True)
    return model.eval()


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


def save_safetensors(model_or_state: nn.Module | dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write a loaded checkpoint as .safetensors (tensors only; safe to share)."""
    from safetensors.torch import save_file

    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    path = Path(path)
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path))
    return path


def default_cam_layer(arch: str, model: nn.Module) -> str:
    """The deepest convolutional stage of a registry architecture (or the head after it)."""
    from models.resnet import last_stage_attention_name

    family = models.get(arch).family
    if family == "mobilenet_v2":
        return "conv" if hasattr(model, "conv") and isinstance(model.conv, nn.Sequential) else "features.18"
    head = last_stage_attention_name(model)
    if head:
        return head
    return "layer3" if family == "small_resnet" else "layer4"


def checkpoint_spec(arch: str, path: str | Path, classes: str | Path | None = None, name: str | None = None):
    """Validate a user checkpoint against ``arch`` now (strict, readable errors) and return its ModelSpec.

    The returned spec loads the same file through the zoo (cached, with its own lock) like any model.
    """
    from .imagenet import imagenet_classes
    from .specs import ModelSpec, WeightsSource
    from .synth import CLASS_NAMES
    from .zoo import sha256_file

    path = Path(path)
    state = read_checkpoint(path)
    model = load_into(arch, state)
    n = model.state_dict()[classifier_key(model)].shape[0] if classifier_key(model) else 1000
    names = read_class_names(classes, n)
    if names is None:
        names = imagenet_classes() if n == 1000 else (CLASS_NAMES if n == len(CLASS_NAMES) else
                                                       tuple(f"class_{i}" for i in range(n)))
    compact = models.get(arch).family == "small_resnet"
    layer = default_cam_layer(arch, model)
    layers = ("layer1", "layer2", "layer3", layer) if compact else (
        ("layer2", "layer3", "layer4", layer) if models.get(arch).family == "resnet" else (layer,))
    digest = sha256_file(path)
    spec = ModelSpec(
        name=name or f"{arch}@{path.stem}", display_name=f"{arch} ({path.name})", attention=models.get(arch).attention,
        builder=lambda: models.build(arch, num_classes=n), weights=WeightsSource(path, digest, "upload"),
        class_names=names, input_size=128 if compact else 224, resize_size=128 if compact else 256,
        default_layer=layer, layers=tuple(dict.fromkeys(layers)), source="checkpoint")
    return spec
