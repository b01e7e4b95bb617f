"""Architecture names beyond the project's registry: ``timm:<name>`` and ``python:package.module:function``.

Wherever attnviz accepts an architecture (``--arch``, the page's checkpoint panel, a models file, the
Python API) the name is one of

* a registry name (``models.available()``: ``cbam_resnet50``, ``small_resnet_se``, ...);
* ``timm:<model name>`` — any model in timm's registry, optionally with a pretrained tag
  (``timm:vit_small_patch16_224.augreg_in1k``), always built with ``pretrained=False`` so nothing downloads;
  hub / local-dir sources (``hf-hub:``) are refused because they fetch or read configs;
* ``python:package.module:function`` — a function returning an ``nn.Module`` (it is called with
  ``num_classes=`` when it accepts that keyword). This imports and runs code, so only the operator's
  own inputs (command line, models file, Python) may use it; the web page refuses it.

Every failure is one readable :class:`CheckpointError` line.
"""
from __future__ import annotations

import contextlib
import difflib
import importlib
import inspect
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

import models
from attnviz.errors import CheckpointError


def _arch_error(message: str) -> CheckpointError:
    """A :class:`CheckpointError` about the architecture name or its builder (field "arch")."""
    return CheckpointError(message, field="arch")


def _why(exc: BaseException) -> str:
    """``Type: first line of the message`` — what went wrong in someone else's code, on one line."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:200]}" if text else type(exc).__name__


TIMM = "timm:"
PYTHON = "python:"
_TIMM_NAME = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)?$")
_PYTHON_TARGET = re.compile(r"^([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):([A-Za-z_]\w*)$")


@dataclass(frozen=True)
class ArchRef:
    """A parsed architecture name: ``kind`` is "registry", "timm" or "python"."""

    text: str
    kind: str
    name: str                   # registry name, timm model name (with tag), or "module:function"
    search_path: str = ""       # folder put on sys.path while importing a python: module (models file's folder)

    @property
    def label(self) -> str:
        return self.text


def parse_arch(text: str, *, allow_python: bool = True, search_path: str | Path | None = None) -> ArchRef:
    """Check an architecture name's form and existence (without building anything heavy)."""
    text = (text or "").strip()
    if not text:
        raise _arch_error("No architecture given: use a registry name, timm:<name> or python:module:function.")
    if text.startswith(TIMM):
        name = text[len(TIMM):].strip()
        if not _TIMM_NAME.match(name):
            raise _arch_error(f"{text!r} is not a timm model name (letters, digits and _ with an optional "
                              ".tag, e.g. timm:resnet18 or timm:vit_small_patch16_224.augreg_in1k).")
        import timm

        if not timm.is_model(name):
            close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=3)
            hint = f" Did you mean: {', '.join('timm:' + c for c in close)}?" if close else ""
            raise _arch_error(f"timm has no model {name!r}.{hint}")
        return ArchRef(text, "timm", name)
    if text.startswith(PYTHON):
        if not allow_python:
            raise _arch_error("python: architectures run code from the server's Python path, so they are only "
                              "accepted from the command line or a models file, not from the page.")
        target = text[len(PYTHON):].strip()
        if not _PYTHON_TARGET.match(target):
            raise _arch_error(f"{text!r} must look like python:package.module:function.")
        return ArchRef(text, "python", target, str(search_path) if search_path else "")
    if text in models.available():
        return ArchRef(text, "registry", text)
    close = difflib.get_close_matches(text, models.available(), n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise _arch_error(f"Unknown architecture {text!r}.{hint} Use a registry name "
                      "(`attnviz models --architectures`), timm:<name> or python:package.module:function.")


def as_ref(arch: str | ArchRef, *, allow_python: bool = True, search_path: str | Path | None = None) -> ArchRef:
    """``arch`` parsed (a ready :class:`ArchRef` passes through; python: ones only when ``allow_python``)."""
    if isinstance(arch, ArchRef):
        if arch.kind == "python" and not allow_python:
            return parse_arch(arch.text, allow_python=False)  # raises the readable refusal
        return arch
    return parse_arch(arch, allow_python=allow_python, search_path=search_path)


@contextlib.contextmanager
def _on_path(folder: str) -> Iterator[None]:
    if not folder or folder in sys.path:
        yield
        return
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)


def python_function(ref: ArchRef) -> Callable[..., nn.Module]:
    """Import the function a python: architecture names (errors are one line, never a traceback)."""
    module_name, func_name = ref.name.split(":")
    with _on_path(ref.search_path):
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:  # ImportError, SyntaxError, or whatever the module raises at import
            raise _arch_error(f"{ref.text}: cannot import {module_name} ({_why(exc)}).") from None
    func = getattr(module, func_name, None)
    if func is None:
        raise _arch_error(f"{ref.text}: module {module_name} has no attribute {func_name!r}.")
    if not callable(func):
        raise _arch_error(f"{ref.text}: {module_name}.{func_name} is a {type(func).__name__}, not a function.")
    return func


def _accepts_num_classes(func: Callable) -> bool:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "num_classes" or p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def build(arch: str | ArchRef, num_classes: int | None = None) -> nn.Module:
    """The network with random weights (timm: ``pretrained=False``; nothing is downloaded)."""
    ref = as_ref(arch)
    if ref.kind == "registry":
        return models.build(ref.name, num_classes=num_classes or 1000)
    if ref.kind == "timm":
        import timm

        kwargs = {} if num_classes is None else {"num_classes": num_classes}
        try:
            return timm.create_model(ref.name, pretrained=False, **kwargs)
        except Exception as exc:
            raise _arch_error(f"{ref.text}: timm could not build it ({_why(exc)}).") from None
    func = python_function(ref)
    kwargs = {"num_classes": num_classes} if num_classes is not None and _accepts_num_classes(func) else {}
    try:
        with _on_path(ref.search_path):
            model = func(**kwargs)
    except Exception as exc:
        raise _arch_error(f"{ref.text}: calling {ref.name.replace(':', '.')}() raised {_why(exc)}") from None
    if not isinstance(model, nn.Module):
        raise _arch_error(f"{ref.text}: {ref.name.replace(':', '.')}() returned a {type(model).__name__}, "
                          "not a torch.nn.Module.")
    return model


def build_shape_only(arch: str | ArchRef, num_classes: int | None = None) -> nn.Module:
    """The network on the meta device (shapes, no memory) when it allows that, else on the CPU.

    Used to compare a checkpoint's keys and shapes before anything big is allocated. python:
    functions are always built for real: they may do things a meta device cannot.
    """
    ref = as_ref(arch)
    if ref.kind != "python":
        try:
            with torch.device("meta"):
                return build(ref, num_classes)
        except CheckpointError:
            raise
        except Exception:  # some builders compute with tensors in __init__ (torchvision RegNet)
            pass
    return build(ref, num_classes)


def _last_linear_key(model: nn.Module) -> str | None:
    last = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            last = name
    return f"{last}.weight" if last else None


def classifier_keys(arch: str | ArchRef, model: nn.Module) -> list[str]:
    """State-dict keys of the classifier weight(s): timm names them in its config, else the last Linear."""
    ref = as_ref(arch)
    if ref.kind == "timm":
        cfg = getattr(model, "pretrained_cfg", None) or {}
        heads = cfg.get("classifier") if isinstance(cfg, dict) else None
        if heads:
            heads = (heads,) if isinstance(heads, str) else tuple(heads)
            return [f"{h}.weight" for h in heads]
    key = _last_linear_key(model)
    return [key] if key else []


def infer_num_classes(arch: str | ArchRef, state: dict[str, torch.Tensor]) -> int | None:
    """The class count stored in a checkpoint's classifier weight, or None when it has no classifier."""
    ref = as_ref(arch)
    probe = build_shape_only(ref, 7 if ref.kind != "python" else None)
    for key in classifier_keys(ref, probe):
        if key in state and state[key].dim() in (2, 4):  # Linear, or a 1x1 conv classifier
            return int(state[key].shape[0])
    return None


def attention_of(arch: str | ArchRef, model: nn.Module) -> str:
    """What the model's attention is, for display: the registry says; otherwise read from its modules."""
    ref = as_ref(arch)
    if ref.kind == "registry":
        return models.get(ref.name).attention
    from attnviz.core.layers import _nhwc_model, token_layout

    if _nhwc_model(model):
        return "swin"
    if token_layout(model) is not None:
        return "vit"
    kinds = {"SEModule": "se", "SqueezeExcite": "se", "SqueezeExcitation": "se", "EcaModule": "eca",
             "CecaModule": "eca", "GlobalContext": "gc", "CbamModule": "cbam", "LightCbamModule": "cbam"}
    found = {kinds[type(m).__name__] for m in model.modules() if type(m).__name__ in kinds}
    return "+".join(sorted(found)) if found else "none"


@dataclass(frozen=True)
class Preprocessing:
    """How a model is fed: crop side, shorter side before the crop, normalisation, resampling."""

    input_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"


def timm_preprocessing(name: str) -> Preprocessing:
    """timm's evaluation transform for a model (its pretrained config, read offline).

    timm resizes the shorter side to ``floor(input / crop_pct)`` and centre-crops ``input``.
    """
    import math

    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        import timm

        with torch.device("meta"):
            cfg_dict = timm.create_model(name, pretrained=False).pretrained_cfg
    else:
        cfg_dict = cfg.to_dict()
    size = int(cfg_dict.get("input_size", (3, 224, 224))[-1])
    crop_pct = float(cfg_dict.get("crop_pct") or 0.875)
    return Preprocessing(size, math.floor(size / crop_pct), tuple(float(v) for v in cfg_dict.get("mean")),
                         tuple(float(v) for v in cfg_dict.get("std")), str(cfg_dict.get("interpolation") or "bilinear"))


def default_preprocessing(arch: str | ArchRef, model: nn.Module | None = None) -> Preprocessing:
    """timm models: their pretrained config; the compact zoo family: 128 px; everything else ImageNet's 224/256."""
    from attnviz.core.specs import IMAGENET_MEAN, IMAGENET_STD

    ref = as_ref(arch)
    if ref.kind == "timm":
        return timm_preprocessing(ref.name)
    if ref.kind == "registry" and models.get(ref.name).family in ("small_resnet", "vit"):
        size = int(getattr(model, "input_size", 0) or 128)
        return Preprocessing(size, size, IMAGENET_MEAN, IMAGENET_STD)
    return Preprocessing(224, 256, IMAGENET_MEAN, IMAGENET_STD)
