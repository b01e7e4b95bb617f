"""Scores for saliency maps: localisation against a known mask, and faithfulness to the model.

Localisation (needs the object's true mask):
  pointing game          — does the map's maximum fall on the object (within ``tolerance`` px)?
  energy pointing game   — share of the map's total mass that lies on the object
  IoU                    — overlap of the map thresholded at ``threshold`` x its max with the mask
Faithfulness (needs the model):
  deletion AUC  — remove the most salient pixels first: a faithful map makes the score fall fast (low is good)
  insertion AUC — reveal the most salient pixels first on a blurred image: the score should rise fast (high is good)
  ROAD          — pytorch-grad-cam's ROADCombined (noisy linear imputation), higher is better
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


@torch.no_grad()
def perturbation_curves(model: nn.Module, x: torch.Tensor, saliency: np.ndarray | Sequence[np.ndarray], target: int,
                        steps: int = 16, blur_sigma: float = 5.0) -> tuple[np.ndarray, np.ndarray]:
    """Target-class probabilities along the deletion and insertion paths (``steps + 1`` points each).

    ``x`` is the normalised (1, 3, H, W) input. Deletion replaces pixels with 0 (the dataset mean colour
    after normalisation); insertion starts from a Gaussian-blurred copy of ``x`` and pastes pixels back.
    Several maps (a sequence, or a stacked (M, H, W) array) are evaluated in one batched forward and give
    (M, steps + 1) curves; one (H, W) map gives 1-D curves.
    """
    single = isinstance(saliency, np.ndarray) and saliency.ndim == 2
    maps = [saliency] if single else list(saliency)
    _, _, h, w = x.shape
    k = int(2 * round(3 * blur_sigma) + 1)
    blurred = torch.from_numpy(cv2.GaussianBlur(x[0].permute(1, 2, 0).numpy(), (k, k), blur_sigma)).permute(2, 0, 1)[None]
    counts = [round(i * h * w / steps) for i in range(steps + 1)]
    batches = []
    for s in maps:
        order = torch.from_numpy(_saliency_order(_resize_to(s, (h, w))))
        revealed = torch.zeros(steps + 1, h * w)
        for i, c in enumerate(counts):
            revealed[i, order[:c]] = 1.0
        revealed = revealed.view(steps + 1, 1, h, w)
        batches += [x * (1 - revealed), blurred * (1 - revealed) + x * revealed]
    probs = torch.softmax(model(torch.cat(batches)), dim=1)[:, target].numpy().reshape(len(maps), 2, steps + 1)
    deletion, insertion = probs[:, 0], probs[:, 1]
    return (deletion[0], insertion[0]) if single else (deletion, insertion)


@dataclass(frozen=True)
class Faithfulness:
    deletion_auc: float
    insertion_auc: float


def faithfulness(model: nn.Module, x: torch.Tensor, saliency: np.ndarray, target: int, steps: int = 16) -> Faithfulness:
    deletion, insertion = perturbation_curves(model, x, saliency, target, steps)
    return Faithfulness(_auc(deletion), _auc(insertion))


def faithfulness_many(model: nn.Module, x: torch.Tensor, saliencies: Sequence[np.ndarray], target: int,
                      steps: int = 16) -> list[Faithfulness]:
    """:func:`faithfulness` for several maps of one image, in one batched forward."""
    deletion, insertion = perturbation_curves(model, x, list(saliencies), target, steps)
    return [Faithfulness(_auc(d), _auc(i)) for d, i in zip(deletion, insertion)]


def road_scores(model: nn.Module, x: torch.Tensor, saliencies: Sequence[np.ndarray], target: int,
                percentiles: tuple[int, ...] = (20, 40, 60, 80)) -> np.ndarray:
    """pytorch-grad-cam's ROADCombined for several maps of one image, any sizes (higher = more faithful)."""
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    maps = np.stack([_resize_to(s, tuple(x.shape[-2:])) for s in saliencies]).astype(np.float32)
    inputs = x.repeat(len(maps), 1, 1, 1)
    metric = ROADCombined(percentiles=list(percentiles))
    with torch.no_grad():
        scores = metric(inputs, maps, [ClassifierOutputSoftmaxTarget(target)] * len(maps), model)
    return np.asarray(scores, dtype=np.float64).reshape(-1)
