"""Scores for saliency maps: localisation against a known mask, and faithfulness to the model.

Localisation (needs the object's true mask):
  pointing game          — does the map's maximum fall on the object (within ``tolerance`` px)?
  energy pointing game   — share of the map's total mass that lies on the object
  IoU                    — overlap of the map thresholded at ``threshold`` x its max with the mask
Faithfulness (needs the model):
  deletion AUC  — remove the most salient pixels first: a faithful map makes the score fall fast (low is good)
  insertion AUC — reveal the most salient pixels first on a blurred image: the score should rise fast (high is good)
  ROAD          — pytorch-grad-cam's ROADCombined (noisy linear imputation, solved by attnviz.metrics.imputation:
                  an exact sparse solve on the CPU, batched CG on an accelerator), higher is better
The faithfulness scores take several images with several maps each (``*_batch``) and run all their perturbed
copies through the model in batches of at most :data:`FORWARD_BATCH`; the one-image functions are that batch
of one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch
from torch import nn


def _resize_to(saliency: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if saliency.shape != shape:
        saliency = cv2.resize(saliency.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return saliency


def pointing_game(saliency: np.ndarray, mask: np.ndarray, tolerance: int = 0) -> bool:
    """True if the map's maximum lies on the mask or within ``tolerance`` pixels of it (first max on ties)."""
    saliency = _resize_to(saliency, mask.shape)
    y, x = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
    if tolerance <= 0:
        return bool(mask[y, x])
    y0, y1 = max(0, y - tolerance), min(mask.shape[0], y + tolerance + 1)
    x0, x1 = max(0, x - tolerance), min(mask.shape[1], x + tolerance + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    near = (yy - y) ** 2 + (xx - x) ** 2 <= tolerance ** 2
    return bool(mask[y0:y1, x0:x1][near].any())


def energy_pointing_game(saliency: np.ndarray, mask: np.ndarray) -> float:
    """Fraction of the (non-negative) map's total energy inside the mask; 0 for an all-zero map."""
    saliency = np.maximum(_resize_to(saliency, mask.shape), 0).astype(np.float64)
    total = saliency.sum()
    return float(saliency[mask].sum() / total) if total > 0 else 0.0


def iou(saliency: np.ndarray, mask: np.ndarray, threshold: float = 0.5) -> float:
    """IoU between {saliency >= threshold * max} and the mask (0 when the map is all zero)."""
    saliency = _resize_to(saliency, mask.shape)
    top = saliency.max()
    if top <= 0:
        return 0.0
    region = saliency >= threshold * top
    union = np.logical_or(region, mask).sum()
    return float(np.logical_and(region, mask).sum() / union) if union else 0.0


def _auc(values: np.ndarray) -> float:
    """Area under a curve sampled at equally spaced fractions 0..1 (trapezoid rule)."""
    return float(np.trapezoid(values, dx=1.0 / (len(values) - 1)))


def _saliency_order(saliency: np.ndarray) -> np.ndarray:
    """Pixel indices, most salient first; ties broken by raster order so results are deterministic."""
    return np.argsort(-saliency.ravel(), kind="stable")


FORWARD_BATCH = 64   # perturbed inputs per forward: bounds memory; on 2 CPU cores 16-64 ran fastest at 128 px


def _device_of(model: nn.Module) -> torch.device:
    tensor = next(iter(model.parameters()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


class _Forwards:
    """Collects perturbed inputs with a key and runs them through the model ``max_batch`` at a time.

    Inputs are built lazily by the callers (on the model's device, or moved there per batch) and forwarded as
    soon as a batch is full, so memory stays at about ``max_batch`` inputs however many images and maps a chunk
    holds. Each input's class probability (softmax, for the target of the image it was made from) stays on the
    device until :meth:`finish` copies all of them to the host at once, where they are stored under their keys.
    """

    def __init__(self, model: nn.Module, max_batch: int) -> None:
        self.model, self.max_batch = model, max(1, int(max_batch))
        self.device = _device_of(model)
        self.pending: list[tuple[object, torch.Tensor, int]] = []   # key, (k, 3, H, W) inputs, target
        self.count = 0
        self.done: list[tuple[list[tuple[object, int]], torch.Tensor]] = []   # (key, rows) per batch, its probs

    def add(self, key: object, inputs: torch.Tensor, target: int) -> None:
        self.pending.append((key, inputs, target))
        self.count += inputs.shape[0]
        while self.count >= self.max_batch:
            self._run(self.max_batch)

    def finish(self) -> dict[object, np.ndarray]:
        while self.count:
            self._run(self.count)
        probs: dict[object, np.ndarray] = {}
        if not self.done:
            return probs
        picked = torch.cat([p for _, p in self.done]).cpu().numpy()   # the one device->host copy
        at = 0
        for owners, _ in self.done:
            for key, use in owners:
                part = picked[at:at + use]
                probs[key] = part if key not in probs else np.concatenate([probs[key], part])
                at += use
        return probs

    def _run(self, size: int) -> None:
        """Forward the first ``size`` pending inputs (splitting an entry when a batch ends inside it)."""
        parts, owners, wanted, taken = [], [], [], 0
        while taken < size:
            key, inputs, target = self.pending[0]
            use = min(size - taken, inputs.shape[0])
            parts.append(inputs[:use].to(self.device))
            owners.append((key, use))
            wanted.extend([target] * use)
            if use == inputs.shape[0]:
                self.pending.pop(0)
            else:
                self.pending[0] = (key, inputs[use:], target)
            taken += use
        self.count -= taken
        targets = torch.tensor(wanted, device=self.device)
        probs = torch.softmax(self.model(torch.cat(parts)).float(), dim=1)
        self.done.append((owners, probs[torch.arange(len(targets), device=self.device), targets]))


def _blurred(x: torch.Tensor, blur_sigma: float) -> torch.Tensor:
    """The insertion path's start: a Gaussian-blurred copy of one normalised (3, H, W) image (on the host, once
    per image; the perturbed inputs made from it are built on the model's device)."""
    k = int(2 * round(3 * blur_sigma) + 1)
    return torch.from_numpy(cv2.GaussianBlur(x.permute(1, 2, 0).numpy(), (k, k), blur_sigma)).permute(2, 0, 1)


def _ranks(maps: torch.Tensor) -> torch.Tensor:
    """(M, H*W) maps -> each pixel's rank, most salient first, ties by raster order (as :func:`_saliency_order`)."""
    order = torch.argsort(-maps, dim=1, stable=True)
    positions = torch.arange(maps.shape[1], device=maps.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


@torch.no_grad()
def perturbation_curves_batch(model: nn.Module, x: torch.Tensor, saliencies: Sequence[Sequence[np.ndarray]],
                              targets: Sequence[int], steps: int = 16, blur_sigma: float = 5.0,
                              max_batch: int = FORWARD_BATCH) -> list[tuple[np.ndarray, np.ndarray]]:
    """Deletion and insertion curves for several maps of each of several images, batched across all of them.

    ``x``: normalised (B, 3, H, W) inputs; ``saliencies[i]``: the maps of image ``i`` (any sizes, resized to
    H x W); ``targets[i]``: its class. Returns, per image, ``(deletion, insertion)`` arrays of shape
    (maps, steps + 1): the target-class probability after 0, 1/steps, ..., all pixels are removed (set to 0,
    the dataset mean after normalisation) or revealed on a blurred copy. The path's end points are the same
    input for every map of an image (the image itself, its blurred copy) or of every image (the all-zero
    input), so each is run once; the model sees every other perturbed input exactly once, ``max_batch`` at
    a time. The perturbed inputs are built on the model's device (the maps go there in one copy, the
    probabilities come back in one).
    """
    x_host = x.detach().float().cpu()
    b, _, h, w = x_host.shape
    if len(saliencies) != b or len(targets) != b:
        raise ValueError(f"{b} images need {b} map lists and targets, got {len(saliencies)} and {len(targets)}")
    runner = _Forwards(model, max_batch)
    device = runner.device
    inner = torch.tensor([round(i * h * w / steps) for i in range(steps + 1)], device=device)[1:-1]
    resized = [np.asarray(_resize_to(np.asarray(s), (h, w)), np.float64).ravel() for maps in saliencies for s in maps]
    ranks = _ranks(torch.from_numpy(np.stack(resized)).to(device)) if resized else None
    images = x_host.to(device)
    blurred = torch.stack([_blurred(x_host[i], blur_sigma) for i in range(b)]).to(device)
    at = 0
    for i in range(b):
        target = int(targets[i])
        runner.add(("ends", i), torch.stack([images[i], blurred[i], torch.zeros_like(images[i])]), target)
        for j in range(len(saliencies[i])):
            revealed = (ranks[at][None, :] < inner[:, None]).float().view(-1, 1, h, w)  # type: ignore[index]
            paths = torch.cat([images[i] * (1 - revealed), blurred[i] * (1 - revealed) + images[i] * revealed])
            runner.add(("path", i, j), paths, target)
            at += 1
    probs = runner.finish()
    out = []
    inner_steps = steps - 1
    for i in range(b):
        p_x, p_blur, p_zero = probs[("ends", i)]
        deletion = np.empty((len(saliencies[i]), steps + 1), np.float32)
        insertion = np.empty_like(deletion)
        for j in range(len(saliencies[i])):
            path = probs[("path", i, j)]
            deletion[j] = np.concatenate([[p_x], path[:inner_steps], [p_zero]])
            insertion[j] = np.concatenate([[p_blur], path[inner_steps:], [p_x]])
        out.append((deletion, insertion))
    return out


def perturbation_curves(model: nn.Module, x: torch.Tensor, saliency: np.ndarray | Sequence[np.ndarray], target: int,
                        steps: int = 16, blur_sigma: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`perturbation_curves_batch` for one image ``x`` (1, 3, H, W): one (H, W) map gives 1-D curves,
    several maps (a sequence or a stacked (M, H, W) array) give (M, steps + 1) curves."""
    single = isinstance(saliency, np.ndarray) and saliency.ndim == 2
    maps = [saliency] if single else list(saliency)
    deletion, insertion = perturbation_curves_batch(model, x, [maps], [target], steps, blur_sigma)[0]
    return (deletion[0], insertion[0]) if single else (deletion, insertion)


@dataclass(frozen=True)
class Faithfulness:
    deletion_auc: float
    insertion_auc: float


def faithfulness_batch(model: nn.Module, x: torch.Tensor, saliencies: Sequence[Sequence[np.ndarray]],
                       targets: Sequence[int], steps: int = 16, max_batch: int = FORWARD_BATCH,
                       ) -> list[list[Faithfulness]]:
    """Deletion / insertion AUCs of every map of every image (see :func:`perturbation_curves_batch`)."""
    curves = perturbation_curves_batch(model, x, saliencies, targets, steps, max_batch=max_batch)
    return [[Faithfulness(_auc(d), _auc(i)) for d, i in zip(deletion, insertion)] for deletion, insertion in curves]


def faithfulness(model: nn.Module, x: torch.Tensor, saliency: np.ndarray, target: int, steps: int = 16) -> Faithfulness:
    return faithfulness_batch(model, x, [[saliency]], [target], steps)[0][0]


def faithfulness_many(model: nn.Module, x: torch.Tensor, saliencies: Sequence[np.ndarray], target: int,
                      steps: int = 16) -> list[Faithfulness]:
    """:func:`faithfulness` for several maps of one image, in one batched forward."""
    return faithfulness_batch(model, x, [list(saliencies)], [target], steps)[0]


ROAD_PERCENTILES = (20, 40, 60, 80)


ROAD_IMPUTERS = ("torch", "library")   # attnviz.metrics.imputation (default) / pytorch-grad-cam's, the reference


def _library_imputations(x: torch.Tensor, cam: torch.Tensor, percentiles: Sequence[int]) -> torch.Tensor:
    """The reference: pytorch-grad-cam's own removal and ``NoisyLinearImputer``, one sparse solve each."""
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer, RemoveLeastRelevantFirst, RemoveMostRelevantFirst

    return torch.stack([remove(p, NoisyLinearImputer())(x, cam)
                        for remove in (RemoveLeastRelevantFirst, RemoveMostRelevantFirst) for p in percentiles])


@torch.no_grad()
def road_scores_batch(model: nn.Module, x: torch.Tensor, saliencies: Sequence[Sequence[np.ndarray]],
                      targets: Sequence[int], percentiles: Sequence[int] = ROAD_PERCENTILES,
                      seeds: Sequence[int | None] | None = None, max_batch: int = FORWARD_BATCH,
                      imputer: str = "torch") -> list[np.ndarray]:
    """pytorch-grad-cam's ROADCombined for several maps of each of several images (higher = more faithful).

    Each map's inputs are made in the order ``ROADCombined`` makes them (least relevant first at every
    percentile, then most relevant first), with the library's removal rule and noisy linear imputation:
    ``imputer="torch"`` solves the imputations of up to :data:`~attnviz.metrics.imputation.SOLVE_BATCH` maps'
    inputs at once (:mod:`attnviz.metrics.imputation`: exact on the CPU, CG on an accelerator, within 1e-5 of
    the library's direct solve), ``"library"`` runs pytorch-grad-cam's ``NoisyLinearImputer`` per input on the host. The model
    sees every input in batches of ``max_batch``. The imputation noise comes from torch's global generator in
    the library's draw order: with ``seeds[i]`` set, every map of image ``i`` starts from
    ``torch.manual_seed(seeds[i])`` (the caller's generator state is restored), so a score does not depend on
    which other images or maps share the batch, and a map gets what ``ROADCombined`` gives for it alone after
    that seed. Without a seed the noise continues the global stream. Returns per image its maps' scores.
    """
    from attnviz.metrics.imputation import SOLVE_BATCH, imputation_noise, noisy_linear_impute, removal_masks

    if imputer not in ROAD_IMPUTERS:
        raise ValueError(f"imputer must be one of {ROAD_IMPUTERS}, not {imputer!r}")
    x = x.detach().float().cpu()
    b, channels, h, w = x.shape
    seeds = list(seeds) if seeds is not None else [None] * b
    runner = _Forwards(model, max_batch)
    on_device = x.to(runner.device)
    pending: list[tuple[tuple, int, int, torch.Tensor, torch.Tensor]] = []   # key, target, image, removed, noise

    def impute_pending() -> None:
        if not pending:
            return
        images = torch.cat([on_device[i].expand(len(removed), -1, -1, -1) for _, _, i, removed, _ in pending])
        filled = noisy_linear_impute(images, torch.cat([r for *_, r, _ in pending]).to(runner.device),
                                     torch.cat([n for *_, n in pending]), batch=SOLVE_BATCH)
        at = 0
        for key, target, _, removed, _ in pending:
            runner.add(key, filled[at:at + len(removed)], target)
            at += len(removed)
        pending.clear()

    for i in range(b):
        target = int(targets[i])
        runner.add(("base", i), x[i:i + 1], target)
        for j, s in enumerate(saliencies[i]):
            cam = np.ascontiguousarray(_resize_to(np.asarray(s), (h, w)), dtype=np.float32)
            with torch.random.fork_rng(devices=[], enabled=seeds[i] is not None):
                if seeds[i] is not None:
                    torch.manual_seed(int(seeds[i]))
                if imputer == "library":
                    runner.add(("road", i, j), _library_imputations(x[i], torch.from_numpy(cam), percentiles), target)
                    continue
                removed = removal_masks(cam, percentiles)
                noise = imputation_noise(removed, channels)
            pending.append((("road", i, j), target, i, removed, noise))
            if sum(len(p[3]) for p in pending) >= SOLVE_BATCH:
                impute_pending()
    impute_pending()
    probs = runner.finish()
    out = []
    k = len(percentiles)
    for i in range(b):
        base = np.float32(probs[("base", i)][0])
        scores = np.empty(len(saliencies[i]), np.float64)
        for j in range(len(saliencies[i])):
            after = np.float32(probs[("road", i, j)])
            # ROADCombined's arithmetic, in its float32: per-percentile differences, mean, (LeRF - MoRF) / 2
            lerf = np.mean(np.float32([after[q] - base for q in range(k)]), axis=0)
            morf = np.mean(np.float32([after[k + q] - base for q in range(k)]), axis=0)
            scores[j] = float((lerf - morf) / 2)
        out.append(scores)
    return out


def road_scores(model: nn.Module, x: torch.Tensor, saliencies: Sequence[np.ndarray], target: int,
                percentiles: tuple[int, ...] = ROAD_PERCENTILES, seed: int | None = None,
                imputer: str = "torch") -> np.ndarray:
    """:func:`road_scores_batch` for several maps of one image ``x`` (1, 3, H, W)."""
    return road_scores_batch(model, x, [list(saliencies)], [target], percentiles, [seed], imputer=imputer)[0]
