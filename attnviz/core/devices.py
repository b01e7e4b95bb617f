"""Which torch device a model runs on: ``"auto"`` picks CUDA, then Apple's MPS, then the CPU.

Every entry point (API ``device=``, CLI ``--device``, ``ATTNVIZ_DEVICE`` for the page and the Docker image) goes
through :func:`resolve_device`, so an absent or broken device is the same one readable line everywhere instead of
a CUDA traceback in the middle of a request. :func:`to_host` is how the engine's results leave the device: one
copy for many tensors.
"""
from __future__ import annotations

import os
import re
from contextlib import nullcontext
from typing import ContextManager, Sequence

import numpy as np
import torch

from attnviz.errors import AttnvizError, DeviceError

ENV_VAR = "ATTNVIZ_DEVICE"
_SPEC = re.compile(r"^(auto|cpu|mps|cuda(?::(\d+))?)$")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def available_devices() -> list[str]:
    """What this machine offers, e.g. ``["cuda:0", "cuda:1", "cpu"]`` (for messages and ``attnviz models``)."""
    found = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if _mps_available():
        found.append("mps")
    return found + ["cpu"]


def default_device_request() -> str:
    """The device asked for when none is given: ``ATTNVIZ_DEVICE`` or ``"auto"``."""
    return os.environ.get(ENV_VAR, "").strip() or "auto"


def _probe(device: torch.device) -> None:
    """Allocate one tensor so a present-but-broken device (driver mismatch, out of memory) fails here, readably."""
    try:
        torch.zeros(1, device=device).add_(1)
    except Exception as exc:  # any backend error: the message names the device, not the stack
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DeviceError(f"Device {device} is present but unusable ({first_line}); "
                          f"available: {', '.join(available_devices())}.") from None


def resolve_device(requested: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"``/``"cpu"``/``"cuda"``/``"cuda:N"``/``"mps"`` -> a checked :class:`torch.device`.

    Raises :class:`DeviceError` (one line naming the device and what is available) when it does not exist here.
    """
    if isinstance(requested, torch.device):
        requested = str(requested)
    text = (requested or default_device_request()).strip().lower()
    match = _SPEC.match(text)
    if match is None:
        raise DeviceError(f"Unknown device {requested!r}; use auto, cpu, cuda, cuda:N or mps "
                          f"(available here: {', '.join(available_devices())}).")
    if text == "auto":
        if torch.cuda.is_available():
            text = "cuda"
        elif _mps_available():
            text = "mps"
        else:
            return torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not _mps_available():
            raise DeviceError(f"Device 'mps' is not available on this machine; available: "
                              f"{', '.join(available_devices())}.")
        device = torch.device("mps")
    else:
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
            raise DeviceError(f"Device {text!r} is not available: torch {torch.__version__} ({build}) sees no CUDA "
                              f"device; available: {', '.join(available_devices())}.")
        index = int(match.group(2)) if match.group(2) is not None else torch.cuda.current_device()
        if index >= torch.cuda.device_count():
            raise DeviceError(f"Device 'cuda:{index}' does not exist: this machine has "
                              f"{torch.cuda.device_count()} CUDA device(s); available: "
                              f"{', '.join(available_devices())}.")
        device = torch.device("cuda", index)
    _probe(device)
    return device


def autocast(device: torch.device, enabled: bool) -> ContextManager:
    """Mixed precision for ``--amp``: float16 autocast on CUDA; elsewhere a no-op (the caller warns)."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()


def to_host(tensors: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """Tensors of any shapes (on one device) as numpy arrays, with ONE device->host copy per dtype: flattened and
    concatenated on the device, copied, split on the host (the arrays are views of that one host buffer). Tensors
    already on the CPU are not copied at all (their arrays share their memory)."""
    if all(t.device.type == "cpu" for t in tensors):
        return [t.detach().numpy() for t in tensors]
    out: list[np.ndarray | None] = [None] * len(tensors)
    by_dtype: dict[torch.dtype, list[int]] = {}
    for i, t in enumerate(tensors):
        by_dtype.setdefault(t.dtype, []).append(i)
    for indices in by_dtype.values():
        flat = torch.cat([tensors[i].detach().reshape(-1) for i in indices]).cpu().numpy()
        at = 0
        for i in indices:
            size = tensors[i].numel()
            out[i] = flat[at:at + size].reshape(tuple(tensors[i].shape))
            at += size
    return out  # type: ignore[return-value]


def use_threads(threads: int | None = None) -> int:
    """Set torch's CPU threads for a long command when asked (``--threads N``) and return the count in use.

    Without a request torch's own default stays (one thread per core), so ``eval``, ``sanity`` and ``explain DIR``
    use the whole machine; only training pins its recorded count, for bit-reproducible weights.
    """
    if threads is not None:
        if threads < 1:
            raise AttnvizError("--threads must be at least 1.")
        torch.set_num_threads(int(threads))
    return torch.get_num_threads()
