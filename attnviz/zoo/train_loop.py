"""The training loop every zoo model shares, and its resumable state.

Deterministic on the CPU: the epoch order and every augmentation draw come from one seeded ``torch.Generator``.
Every ``save_every`` steps the loop writes its whole state (model, optimizer, step, the epoch's order and the
position in it, the generator's and torch's RNG states, losses, history, elapsed time) to one file, atomically;
``resume`` continues from it, and a resumed run ends with the same weights, bit for bit, as an uninterrupted one.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attnviz.data import synth
from attnviz.data.scenes import cache_dir
from attnviz.errors import AttnvizError

SAVE_EVERY = 200   # steps between two resumable states (a killed run loses at most this many)


def state_dir() -> Path:
    """Where resumable training states are kept: ``$ATTNVIZ_CACHE/train-state`` (default ~/.cache/attnviz),
    outside git."""
    path = cache_dir().parent / "train-state"
    path.mkdir(parents=True, exist_ok=True)
    return path


def normalise(batch_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (N,H,W,3) -> normalised float (N,3,H,W) with the zoo's ImageNet statistics (as ``ModelSpec.normalise``)."""
    from attnviz.core.specs import IMAGENET_MEAN, IMAGENET_STD

    x = batch_uint8.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def augment(x: torch.Tensor, gen: torch.Generator, max_shift: int = 8, jitter: float = 0.15) -> torch.Tensor:
    """Flip, translate and jitter a normalised batch; every random draw comes from ``gen``."""
    n, _, h, w = x.shape
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
    padded = F.pad(x, (max_shift,) * 4, mode="reflect")
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h))            # (n, h)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w))            # (n, w)
    idx_n = torch.arange(n).view(n, 1, 1)
    x = padded.permute(0, 2, 3, 1)[idx_n, rows.view(n, h, 1), cols.view(n, 1, w)].permute(0, 3, 1, 2)
    scale = 1 + (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * jitter
    shift = (torch.rand(n, 1, 1, 1, generator=gen) * 2 - 1) * jitter
    return x * scale + shift


def lr_at(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch: int = 256) -> float:
    """Top-1 accuracy of ``model`` (eval mode, on whatever device it is) on uint8 scenes."""
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(images), batch):
        x = normalise(torch.from_numpy(images[i:i + batch])).to(device)
        correct += int((model(x).argmax(1).cpu().numpy() == labels[i:i + batch]).sum())
    return correct / len(images)


def make_optimizer(recipe: dict, model: nn.Module) -> torch.optim.Optimizer:
    """The recipe's optimizer: SGD with Nesterov momentum (the shared recipe) or AdamW (the ViT recipe). No weight
    decay on biases and norms; parameters under ``recipe["slow_prefix"]`` (a pretrained trunk) learn at
    ``recipe["slow_lr_scale"]`` times the rate."""
    slow_prefix = recipe.get("slow_prefix") or "\0"
    groups = []
    for slow in (False, True):
        for decay in (True, False):
            params = [p for n, p in model.named_parameters()
                      if n.startswith(slow_prefix) == slow and (p.ndim > 1) == decay]
            if params:
                groups.append({"params": params, "weight_decay": recipe["weight_decay"] if decay else 0.0,
                               "lr_scale": recipe.get("slow_lr_scale", 1.0) if slow else 1.0})
    if str(recipe["optimizer"]).startswith("AdamW"):
        return torch.optim.AdamW(groups, lr=recipe["lr"], betas=(0.9, 0.999))
    return torch.optim.SGD(groups, lr=recipe["lr"], momentum=0.9, nesterov=True)


@dataclass
class TrainResult:
    model: nn.Module
    losses: list[float]
    val_accuracy: float
    seconds: float
    steps: int
    history: list[dict] = field(default_factory=list)
    resumed_from: int = 0


@dataclass
class _Progress:
    """Everything the loop needs to continue exactly where it stopped."""

    step: int = 0
    batch: int = 0                       # next batch index in ``order``
    order: torch.Tensor | None = None    # this epoch's permutation (None: draw a new one)
    losses: list[float] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def _save_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator, p: _Progress,
                recipe: dict) -> None:
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "generator": gen.get_state(),
             "torch_rng": torch.get_rng_state(), "step": p.step, "batch": p.batch, "order": p.order,
             "losses": p.losses, "history": p.history, "seconds": p.seconds, "recipe": repr(sorted(recipe.items()))}
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)   # atomic: a run killed while saving keeps the previous state


def _load_state(path: Path, model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator,
                recipe: dict) -> _Progress:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state["recipe"] != repr(sorted(recipe.items())):
        raise AttnvizError(f"{path} was written by another recipe; delete it or train without --resume.")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    gen.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    return _Progress(state["step"], state["batch"], state["order"], list(state["losses"]), list(state["history"]),
                     float(state["seconds"]))


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, recipe: dict,
          teacher: nn.Module | None) -> torch.Tensor:
    """Cross-entropy with label smoothing; with a teacher, mixed with the KL to its softened predictions."""
    logits = model(x)
    loss = F.cross_entropy(logits, y, label_smoothing=recipe["label_smoothing"])
    if teacher is None:
        return loss
    t, alpha = recipe["distill_temperature"], recipe["distill_alpha"]
    with torch.no_grad():
        soft = F.softmax(teacher(x) / t, dim=1)
    kd = F.kl_div(F.log_softmax(logits / t, dim=1), soft, reduction="batchmean") * t * t
    return (1 - alpha) * loss + alpha * kd


def _validate(model: nn.Module, val: synth.Scenes, p: _Progress, start: float, log: Callable[[str], None]) -> None:
    """Validation accuracy into the run's history (at every epoch's end, and every ``val_every`` steps)."""
    acc = accuracy(model, val.images, val.labels)
    p.history.append({"step": p.step, "val_accuracy": acc, "seconds": time.perf_counter() - start})
    log(f"step {p.step}: val accuracy {acc:.4f}")
    model.train()


def train_model(model: nn.Module, train: synth.Scenes, val: synth.Scenes | None, recipe: dict,
                max_steps: int | None = None, progress: bool = True, log: Callable[[str], None] = print,
                device: torch.device | None = None, state_path: Path | None = None, resume: bool = False,
                save_every: int = SAVE_EVERY, teacher: nn.Module | None = None,
                stop_after: int | None = None) -> TrainResult:
    """The recipe's loop. ``max_steps`` cuts the schedule short (tests run a few steps); ``stop_after`` stops
    the run after that many steps of this call without shortening the schedule (tests of ``resume``).
    ``state_path``: where the resumable state is written every ``save_every`` steps (and read with ``resume``).
    Batches are drawn and augmented on the CPU with the recipe's generator whatever ``device`` the model is on."""
    from tqdm import tqdm

    torch.manual_seed(recipe["torch_seed"])
    gen = torch.Generator().manual_seed(recipe["torch_seed"])
    bs = recipe["batch_size"]
    steps_per_epoch = len(train) // bs
    total = steps_per_epoch * recipe["epochs"] if max_steps is None else max_steps
    device = device or torch.device("cpu")
    model = model.to(device)
    if recipe.get("memory_format") == "channels_last":  # ~1.4x faster convolutions on CPU; same saved tensors
        model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(recipe, model)
    p = _Progress()
    if resume and state_path is not None and state_path.is_file():
        p = _load_state(state_path, model, opt, gen, recipe)
        log(f"resumed at step {p.step} of {total} from {state_path}")
    resumed_from = p.step
    images = torch.from_numpy(train.images)
    labels = torch.from_numpy(train.labels.astype(np.int64))
    start = time.perf_counter() - p.seconds
    bar = tqdm(total=total, initial=p.step, desc="train", unit="step", disable=not progress, dynamic_ncols=True)
    model.train()
    warmup = min(300, max(1, total // 10))
    while p.step < total and (stop_after is None or p.step - resumed_from < stop_after):
        if p.order is None:
            p.order, p.batch = torch.randperm(len(train), generator=gen), 0
        while p.batch < steps_per_epoch and p.step < total and \
                (stop_after is None or p.step - resumed_from < stop_after):
            idx = p.order[p.batch * bs:(p.batch + 1) * bs]
            x = augment(normalise(images[idx]), gen).to(device)
            if recipe.get("memory_format") == "channels_last":
                x = x.contiguous(memory_format=torch.channels_last)
            for group in opt.param_groups:
                group["lr"] = lr_at(p.step, total, recipe["lr"], warmup) * group["lr_scale"]
            loss = _loss(model, x, labels[idx].to(device), recipe, teacher)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            p.losses.append(loss.item())
            p.step += 1
            p.batch += 1
            bar.update(1)
            if p.step % 20 == 0:
                bar.set_postfix(loss=f"{np.mean(p.losses[-20:]):.3f}")
            if recipe.get("val_every") and val is not None and p.step % recipe["val_every"] == 0 \
                    and p.step < total and p.batch < steps_per_epoch:
                _validate(model, val, p, start, log)
            if state_path is not None and p.step % save_every == 0:
                p.seconds = time.perf_counter() - start
                _save_state(state_path, model, opt, gen, p, recipe)
        if p.batch >= steps_per_epoch:
            p.order = None
            if val is not None and p.step < total:
                _validate(model, val, p, start, log)
    bar.close()
    model.eval()
    val_acc = accuracy(model, val.images, val.labels) if val is not None and p.step >= total else float("nan")
    return TrainResult(model, p.losses, val_acc, time.perf_counter() - start, p.step, p.history, resumed_from)
