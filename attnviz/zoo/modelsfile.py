"""A models file (``models.toml``): an operator's own networks on the page, the CLI and the API.

::

    [[model]]
    name = "mine"                         # how --models, the page and the API call it
    arch = "timm:resnet18"                # registry name, timm:<name> or python:package.module:function
    checkpoint = "weights/mine.safetensors"
    classes = "classes.txt"               # one name per line, a .json list / mapping, or "imagenet"
    # optional: layer, input_size, resize_size, mean, std, interpolation, display_name

Relative paths are resolved against the file's folder (python: modules are imported from there too).
The whole file is validated — every field, then every checkpoint strictly loaded — before anything is
registered, so a server never starts half-configured; the first problem is one message naming the
entry (its number and name) and the field. The file is the operator's: it may name any file and run
python: builders, but checkpoints are still read as data only (safetensors, ``weights_only=True``).
"""
from __future__ import annotations

import difflib
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser from PyPI (requirements.txt installs it there)
    import tomli as tomllib

from attnviz.core.specs import ModelSpec
from attnviz.errors import CheckpointError, ModelsFileError

ENV_VAR = "ATTNVIZ_MODELS_FILE"
SOURCE = "models file"
MAX_FILE_BYTES = 1024 * 1024
MAX_MODELS = 64
REQUIRED = ("name", "arch", "checkpoint", "classes")
OPTIONAL = ("layer", "input_size", "resize_size", "mean", "std", "interpolation", "display_name")
INTERPOLATIONS = ("bilinear", "bicubic")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+@-]{0,63}$")


@dataclass(frozen=True)
class Entry:
    """One checked ``[[model]]`` table, paths resolved."""

    index: int
    name: str
    arch: str
    checkpoint: Path
    classes: Path | None            # None: "imagenet"
    options: dict[str, Any]


class _EntryProblem(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _where(path: Path, index: int, name: str | None) -> str:
    label = f"[[model]] #{index}" + (f" ({name!r})" if name else "")
    return f"{path.name}, {label}"


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ModelsFileError(f"Models file not found: {path}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ModelsFileError(f"{path.name} is {size / 1024:.0f} KB; a models file may be at most "
                              f"{MAX_FILE_BYTES // 1024} KB.")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ModelsFileError(f"{path.name} is not UTF-8 text.") from None
    except tomllib.TOMLDecodeError as exc:
        raise ModelsFileError(f"{path.name} is not valid TOML: {exc}.") from None


def _string(table: dict, field: str, required: bool) -> str | None:
    value = table.get(field)
    if value is None:
        if required:
            raise _EntryProblem(field, "missing (required: " + ", ".join(REQUIRED) + ")")
        return None
    if not isinstance(value, str) or not value.strip():
        raise _EntryProblem(field, f"must be a non-empty string, not {value!r}")
    return value.strip()


def _int(table: dict, field: str, low: int, high: int) -> int | None:
    value = table.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _EntryProblem(field, f"must be a whole number of pixels from {low} to {high}, not {value!r}")
    return value


def _triple(table: dict, field: str, positive: bool) -> tuple[float, float, float] | None:
    value = table.get(field)
    if value is None:
        return None
    ok = isinstance(value, list) and len(value) == 3 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if ok and positive:
        ok = all(v > 0 for v in value)
    if not ok:
        kind = "three positive numbers" if positive else "three numbers"
        raise _EntryProblem(field, f"must be {kind} (one per RGB channel), e.g. [0.5, 0.5, 0.5], not {value!r}")
    return tuple(float(v) for v in value)


def _file(folder: Path, field: str, value: str) -> Path:
    path = Path(value).expanduser()
    path = path if path.is_absolute() else folder / path
    if not path.is_file():
        raise _EntryProblem(field, f"no such file: {path}")
    return path


def _check_entry(table: Any, index: int, folder: Path) -> Entry:
    if not isinstance(table, dict):
        raise _EntryProblem("", "each [[model]] must be a table of fields")
    unknown = [k for k in table if k not in REQUIRED + OPTIONAL]
    if unknown:
        close = difflib.get_close_matches(unknown[0], REQUIRED + OPTIONAL, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise _EntryProblem(unknown[0], f"unknown field{hint}; fields are: {', '.join(REQUIRED + OPTIONAL)}")
    name = _string(table, "name", True)
    if not _NAME.match(name):
        raise _EntryProblem("name", "use letters, digits and _ . + @ - (no spaces or commas, at most 64 "
                                    f"characters), not {name!r}")
    arch = _string(table, "arch", True)
    checkpoint = _file(folder, "checkpoint", _string(table, "checkpoint", True))
    classes_text = _string(table, "classes", True)
    classes = None if classes_text.lower() == "imagenet" else _file(folder, "classes", classes_text)
    options: dict[str, Any] = {
        "layer": _string(table, "layer", False),
        "input_size": _int(table, "input_size", 16, 2048),
        "resize_size": _int(table, "resize_size", 16, 4096),
        "mean": _triple(table, "mean", False),
        "std": _triple(table, "std", True),
        "display_name": _string(table, "display_name", False),
        "interpolation": _string(table, "interpolation", False),
    }
    if options["interpolation"] is not None and options["interpolation"] not in INTERPOLATIONS:
        raise _EntryProblem("interpolation", f"must be one of {', '.join(INTERPOLATIONS)}")
    if options["display_name"] is not None and len(options["display_name"]) > 80:
        raise _EntryProblem("display_name", "is longer than 80 characters")
    return Entry(index, name, arch, checkpoint, classes, options)


def read_models_file(path: str | Path) -> list[ModelSpec]:
    """Validate every entry of a models file (strict checkpoint loads included) and return their specs.

    Nothing is registered here; the first problem raises :class:`ModelsFileError` naming the entry and
    the field. Names already used by another source (the bundled zoo, ImageNet models) are refused.
    """
    from attnviz.zoo import registry as zoo
    from attnviz.zoo.architectures import parse_arch
    from attnviz.zoo.checkpoints import checkpoint_spec

    path = Path(path).expanduser().resolve()
    data = _read_toml(path)
    extra = [k for k in data if k != "model"]
    if extra:
        raise ModelsFileError(f"{path.name}: unknown top-level key {extra[0]!r}; models are [[model]] tables.")
    tables = data.get("model")
    if not isinstance(tables, list) or not tables:
        raise ModelsFileError(f"{path.name} defines no models: add [[model]] tables (name, arch, checkpoint, classes).")
    if len(tables) > MAX_MODELS:
        raise ModelsFileError(f"{path.name} lists {len(tables)} models; at most {MAX_MODELS} are allowed.")
    taken = {s.name: s.source for s in zoo.all_specs() if s.source != SOURCE}
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for i, table in enumerate(tables, start=1):  # cheap checks for every entry before any checkpoint is read
        name = table.get("name") if isinstance(table, dict) and isinstance(table.get("name"), str) else None
        try:
            entry = _check_entry(table, i, path.parent)
            if entry.name in seen:
                raise _EntryProblem("name", f"already used by [[model]] #{seen[entry.name]}")
            if entry.name in taken:
                raise _EntryProblem("name", f"already a model ({taken[entry.name]}); choose another name")
            parse_arch(entry.arch, search_path=path.parent)  # form and existence only; built below
        except _EntryProblem as exc:
            where = f"field {exc.field!r}: " if exc.field else ""
            raise ModelsFileError(f"{_where(path, i, name)}, {where}{exc}.") from None
        except CheckpointError as exc:
            raise ModelsFileError(f"{_where(path, i, name)}, field 'arch': {exc}") from None
        seen[entry.name] = i
        entries.append(entry)
    specs = []
    for entry in entries:
        opts = entry.options
        try:
            from attnviz.zoo.imagenet import imagenet_classes

            spec = checkpoint_spec(
                entry.arch, entry.checkpoint, entry.classes, name=entry.name,
                class_names=imagenet_classes() if entry.classes is None else None,
                layer=opts["layer"], input_size=opts["input_size"], resize_size=opts["resize_size"],
                mean=opts["mean"], std=opts["std"], interpolation=opts["interpolation"],
                display_name=opts["display_name"], source=SOURCE, search_path=path.parent)
        except CheckpointError as exc:
            field = getattr(exc, "field", None) or "checkpoint"
            raise ModelsFileError(f"{_where(path, entry.index, entry.name)}, field {field!r}: {exc}") from None
        specs.append(spec)
    return specs


def load_models_file(path: str | Path) -> list[ModelSpec]:
    """Validate a models file completely, then register its models (replacing an earlier load of them)."""
    from attnviz.zoo import registry as zoo

    specs = read_models_file(path)
    for spec in specs:
        zoo.register(spec, replace=True)
    return specs


def load_from_env() -> list[ModelSpec]:
    """``ATTNVIZ_MODELS_FILE``, when set (app.py and the Docker image): load it, or raise before serving."""
    value = os.environ.get(ENV_VAR, "").strip()
    return load_models_file(value) if value else []
