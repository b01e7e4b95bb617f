"""Turn what a released checkpoint file holds into a clean ``state_dict`` (no file I/O here).

Released files come as ``{"state_dict": {"module." + key: tensor}}`` (DataParallel training),
``{"model": ...}``, ``{"model_state": ...}``, or a bare state dict; safetensors files are always bare.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

_WRAPPER_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "net", "module", "ema")
_PREFIXES = ("module.", "model.", "_orig_mod.")


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _strip_common_prefix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = dict(sd)
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            if out and all(k.startswith(prefix) for k in out):
                out = {k[len(prefix):]: v for k, v in out.items()}
                changed = True
    return out


def unwrap_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """Find the tensor mapping inside ``obj`` and drop wrapper prefixes (``module.`` etc.).

    Raises ``ValueError`` with a readable reason when no state dict can be found.
    """
    seen = 0
    while not _is_state_dict(obj):
        seen += 1
        if not isinstance(obj, Mapping) or seen > 4:
            raise ValueError(f"no state dict found (top level is {type(obj).__name__})")
        inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
            if not tensors:
                raise ValueError(f"no tensors found; top-level keys: {sorted(map(str, obj))[:10]}")
            obj = tensors  # e.g. a bare state dict stored next to an epoch counter
            break
        obj = inner
    return _strip_common_prefix(obj)
