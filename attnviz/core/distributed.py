"""Sharded runs under PyTorch's own launcher: ``torchrun --nproc-per-node N -m attnviz eval|explain ...``.

torchrun starts N copies of the command and tells each its place through ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``. Each rank takes items ``i`` with ``i % world == rank`` (deterministic, no scheduler of our own),
runs them on its own device (``cuda:LOCAL_RANK`` when CUDA is used, else the CPU), and sends its results to rank 0
with a ``torch.distributed`` gather (gloo on CPU, NCCL on CUDA); rank 0 alone writes files. A plain ``python -m
attnviz`` run is the world of one: the same code path, with no process group.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator, Sequence, TypeVar

import torch

from attnviz.errors import AttnvizError

T = TypeVar("T")
TIMEOUT = timedelta(seconds=float(os.environ.get("ATTNVIZ_DIST_TIMEOUT_S", "1800")))


@dataclass(frozen=True)
class World:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value) if value.strip() else default
    except ValueError:
        raise AttnvizError(f"{name}={value!r} is not an integer (set by torchrun)") from None


def current() -> World:
    """The world torchrun describes in the environment (a world of one when it did not start us)."""
    size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if size < 1 or not 0 <= rank < size:
        raise AttnvizError(f"RANK={rank} does not fit WORLD_SIZE={size}")
    return World(rank, size, _env_int("LOCAL_RANK", rank))


def rank_device(requested: str | None, world: World) -> str | None:
    """The device this rank should use: under torchrun, CUDA requests ("auto", "cuda") become ``cuda:LOCAL_RANK``."""
    if not world.distributed:
        return requested
    from attnviz.core.devices import default_device_request

    wanted = (requested or default_device_request()).strip().lower()
    if wanted in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{world.local_rank % max(1, torch.cuda.device_count())}"
    if wanted == "auto":
        return "cpu"
    return wanted


@contextmanager
def process_group(world: World, device: str | None) -> Iterator[World]:
    """Join torchrun's process group for the duration of a command (nothing to do for a world of one)."""
    if not world.distributed or torch.distributed.is_initialized():
        yield world
        return
    use_nccl = bool(device and device.startswith("cuda"))
    if use_nccl:
        torch.cuda.set_device(torch.device(device))
    torch.distributed.init_process_group("nccl" if use_nccl else "gloo", timeout=TIMEOUT)
    try:
        yield world
    finally:
        torch.distributed.destroy_process_group()


def shard(items: Sequence[T], world: World) -> list[tuple[int, T]]:
    """This rank's share of ``items`` as (index, item): every ``world.size``-th item from ``world.rank``."""
    return [(i, items[i]) for i in range(world.rank, len(items), world.size)]


def gather(payload: Any, world: World) -> list[Any] | None:
    """Every rank's ``payload`` on rank 0 (in rank order); ``None`` on the other ranks."""
    if not world.distributed:
        return [payload]
    received: list[Any] | None = [None] * world.size if world.is_main else None
    torch.distributed.gather_object(payload, received, dst=0)
    return received


def merge_indexed(parts: Sequence[Sequence[tuple[int, T]]]) -> list[T]:
    """Ranks' (index, result) lists back into the one-process order."""
    return [item for _, item in sorted((pair for part in parts for pair in part), key=lambda p: p[0])]


def barrier(world: World) -> None:
    if world.distributed:
        torch.distributed.barrier()
