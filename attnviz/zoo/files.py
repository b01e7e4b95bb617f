"""Checkpoint files as data: read (safetensors, or pickles with ``weights_only=True``), save, hash.

The lowest zoo module: the registry (bundled weights) and the checkpoint fitter (uploads) both read files
through it, so neither imports the other. Nothing here ever executes code from a file. torch is imported when a
file is read or written, not for the names and limits (the page's upload widgets start without it).
"""
from __future__ import annotations

import hashlib
import pickle
import re
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from attnviz.errors import CheckpointError

if TYPE_CHECKING:
    import torch
    from torch import nn

MAX_CHECKPOINT_BYTES = 1024 * 1024 * 1024   # 1 GiB


MAX_TENSOR_ELEMENTS = 500_000_000          # no single weight of a supported network comes near this


SAFETENSORS = (".safetensors",)
NOT_A_CHECKPOINT = "not a PyTorch or safetensors checkpoint"


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
    except (zipfile.BadZipFile, OSError, ValueError):   # ValueError: a member name flagged UTF-8 that is not
        return False
    return any(n.split("/", 1)[-1].startswith("code/") or n.endswith("constants.pkl") for n in names)


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, unwrapped to a clean state dict. Never executes code from the file."""
    import models

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No such checkpoint file: {path.name}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path.name} is empty: {NOT_A_CHECKPOINT}.")
    if size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"The checkpoint is {size / 2**20:.0f} MB; the limit is {MAX_CHECKPOINT_BYTES / 2**20:.0f} MB.")
    suffix = checkpoint_suffix(path)
    if suffix in SAFETENSORS:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            raw = load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{path.name} is {NOT_A_CHECKPOINT} (its safetensors header cannot be read: "
                                  f"{str(exc).splitlines()[0][:120]}).") from None
    elif suffix in PICKLED:
        if _is_torchscript(path):
            raise CheckpointError("TorchScript archives are not accepted (they contain code). "
                                  "Save the model's state_dict (torch.save(model.state_dict(), ...)) instead.")
        raw = _torch_load(path)
    else:
        raise CheckpointError(f"{path.name} is {NOT_A_CHECKPOINT} by its name: unsupported checkpoint type "
                              f"{path.suffix.lower() or '(none)'}; use {', '.join(CHECKPOINT_SUFFIXES)}.")
    try:
        state = models.unwrap_state_dict(raw)
    except ValueError as exc:
        raise CheckpointError(f"No weights found in the checkpoint: {exc}.") from None
    check_tensors(state)
    return state


def _torch_load(path: Path):
    """``torch.load(weights_only=True)``; whatever a file that is no checkpoint makes the unpickler raise
    (UnpicklingError, KeyError, IndexError, EOFError, ...) becomes one readable CheckpointError."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found:
            raise CheckpointError("Refused: the file contains Python objects other than tensors and plain "
                                  f"containers ({found.group(1)}); loading it would run code. Re-save only the "
                                  "state_dict, or use .safetensors.") from None
        raise CheckpointError(f"{path.name} is {NOT_A_CHECKPOINT} (its pickle stream is invalid).") from None
    except MemoryError:
        raise CheckpointError(f"{path.name} is {NOT_A_CHECKPOINT} (reading it would need more memory than "
                              "there is).") from None
    except Exception:  # noqa: BLE001 - any failure of the unpickler on foreign bytes (KeyError, IndexError, ...)
        raise CheckpointError(f"{path.name} is {NOT_A_CHECKPOINT} (it cannot be unpickled as one).") from None


def check_tensors(state: dict[str, torch.Tensor]) -> None:
    """Refuse absurd shapes and non-finite weights with a message naming the first offending key."""
    import torch

    for key, t in state.items():
        if t.numel() > MAX_TENSOR_ELEMENTS:
            raise CheckpointError(f"Tensor {key!r} has {t.numel():,} elements ({tuple(t.shape)}); refusing it.")
        if max(t.shape, default=0) > MAX_TENSOR_ELEMENTS:   # empty, but its strides overflow any operation on it
            raise CheckpointError(f"Tensor {key!r} has the shape {tuple(t.shape)}; refusing it.")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(f"Tensor {key!r} contains {bad} NaN or infinite values; the checkpoint is unusable.")


def save_safetensors(model_or_state: nn.Module | dict[str, torch.Tensor], path: str | Path) -> Path:
    """Write a loaded checkpoint as .safetensors (tensors only; safe to share)."""
    from safetensors.torch import save_file
    from torch import nn

    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    path = Path(path)
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path))
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
