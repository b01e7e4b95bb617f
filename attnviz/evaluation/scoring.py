"""Scoring one chunk of images for one model: the maps (one ``explain_batch``), then every metric of every map.

What ``attnviz eval`` computes per image and model, kept apart from the command (data, sharding, files) so the
per-image numbers have one definition:

* the maps: each CAM method's heatmap for the image's *true* class, plus the attention module's own spatial
  map (:func:`attnviz.metrics.localisation.own_spatial_map`);
* localisation (when the image has a mask or boxes): pointing game, energy pointing game, IoU;
* faithfulness: deletion / insertion AUC for every map, ROAD for :data:`ROAD_MAPS` on the images asked for,
  each batched across all images and maps of the chunk (:mod:`attnviz.metrics.scores`);
* agreement with the reference model's map of the same method and target (:func:`attnviz.metrics.agreement.map_agreement`).

Two methods can give bit-identical maps for an image (HiResCAM = Grad-CAM when the CAM layer feeds global
average pooling and the classifier directly). Such a map is scored once and its numbers are copied; the
:class:`ScoringCount` says how many maps were requested and how many were actually scored.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from attnviz.api import explain_batch
from attnviz.core.specs import LoadedModel
from attnviz.metrics import scores as metrics
from attnviz.metrics.agreement import map_agreement
from attnviz.metrics.localisation import OWN_MAP, mask_for_view, own_spatial_map

ROAD_MAPS = ("gradcam", "gradcam++", "layercam", OWN_MAP)  # ROAD's imputation is costly; XGrad/HiRes ~ Grad-CAM here
REGION = "stn_region"
LOCALISATION = ("pointing_game", "energy_pointing_game", "iou")


@dataclass
class ScoringCount:
    """How much de-duplication saved: maps (and ROAD scores) requested vs computed, and which pairs were equal."""

    maps_requested: int = 0
    maps_scored: int = 0
    road_requested: int = 0
    road_scored: int = 0
    identical: Counter = field(default_factory=Counter)   # "hirescam = gradcam" -> model-image pairs

    def add(self, other: "ScoringCount") -> None:
        self.maps_requested += other.maps_requested
        self.maps_scored += other.maps_scored
        self.road_requested += other.road_requested
        self.road_scored += other.road_scored
        self.identical.update(other.identical)

    def to_json(self) -> dict:
        return {"maps_requested": self.maps_requested, "maps_scored": self.maps_scored,
                "road_requested": self.road_requested, "road_scored": self.road_scored,
                "identical": dict(sorted(self.identical.items()))}


def region_mask(theta: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The input pixels inside a spatial transformer's sampled square."""
    import cv2

    from attnviz.core.cam import affine_to_pixels

    h, w = shape
    m = affine_to_pixels(theta, h, w)
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
    quad = np.round((corners @ m[:, :2].T + m[:, 2]) * 16).astype(np.int32)
    canvas = np.zeros(shape, np.uint8)
    cv2.fillPoly(canvas, [quad], 1, shift=4)
    return canvas.astype(bool)


def identical_to(maps: dict[str, np.ndarray]) -> dict[str, str]:
    """For every map, the first map (in order) that is bit-identical to it (itself when none is)."""
    alias: dict[str, str] = {}
    firsts: list[str] = []
    for name, m in maps.items():
        alias[name] = next((f for f in firsts if maps[f].shape == m.shape and np.array_equal(maps[f], m)), name)
        if alias[name] == name:
            firsts.append(name)
    return alias


def localisation(saliency: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    return {"pointing_game": float(metrics.pointing_game(saliency, mask)),
            "energy_pointing_game": metrics.energy_pointing_game(saliency, mask),
            "iou": metrics.iou(saliency, mask)}


@dataclass
class ImageScores:
    """One model on one image: whether its top-1 was the true class, every map's numbers, its agreement."""

    correct: bool
    values: dict[str, dict[str, float]]
    agreement: dict[str, dict[str, float]]


def _image_scores(e, label: int, maps: dict[str, np.ndarray], alias: dict[str, str], mask: np.ndarray | None,
                  unique: list[str], road_unique: list[str], faith: list[metrics.Faithfulness],
                  road_values: np.ndarray, with_road: bool, faithfulness: bool, methods: Sequence[str],
                  reference: dict[str, np.ndarray] | None, count: ScoringCount) -> ImageScores:
    """One image's numbers: each distinct map scored once, its identical maps given the same numbers (ROAD only
    for :data:`ROAD_MAPS`), the spatial transformer's region, agreement with the reference's maps."""
    scored: dict[str, dict[str, float]] = {}
    for k, name in enumerate(unique):
        entry = localisation(maps[name], mask) if mask is not None else {}
        if faithfulness:
            entry.update(deletion_auc=faith[k].deletion_auc, insertion_auc=faith[k].insertion_auc)
        scored[name] = entry
    for k, name in enumerate(road_unique):
        scored[name]["road"] = float(road_values[k])
    values: dict[str, dict[str, float]] = {}
    theta = next((a.data for a in e.attention_maps if a.layout == "affine"), None)
    if theta is not None and mask is not None:  # spatial transformer: does the sampled square cover the object?
        region = region_mask(theta, mask.shape)
        values[REGION] = {"iou": float((region & mask).sum() / max(1, (region | mask).sum())),
                          "coverage": float((region & mask).sum() / max(1, mask.sum())),
                          "area": float(region.mean())}
    for name in maps:
        entry = {k: v for k, v in scored[alias[name]].items() if k != "road"}
        if with_road and name in ROAD_MAPS:
            entry["road"] = scored[alias[name]]["road"]
        values[name] = entry
        if alias[name] != name:
            count.identical[f"{name} = {alias[name]}"] += 1
    count.maps_requested += len(maps)
    count.maps_scored += len(unique)
    if with_road:
        count.road_requested += sum(n in ROAD_MAPS for n in maps)
        count.road_scored += len(road_unique)
    agreement = {}
    if reference:
        agreement = {m: map_agreement(maps[m], reference[m]) for m in methods if m in reference}
    return ImageScores(e.top1.index == label, values, agreement)


def score_chunk(loaded: LoadedModel, images: Sequence[np.ndarray], labels: Sequence[int],
                masks: Sequence[np.ndarray | None], methods: Sequence[str], *, road: Sequence[bool],
                seeds: Sequence[int], batch_size: int, reference: Sequence[dict[str, np.ndarray]] | None = None,
                faithfulness: bool = True, count: ScoringCount | None = None, road_imputer: str = "torch",
                ) -> tuple[list[ImageScores], list[dict[str, np.ndarray]]]:
    """Score ``images`` (uint8 RGB, any size; the model's resize + crop applies) for their true ``labels``.

    ``masks[i]``: the object's bool mask at the image's own size, or None (then no localisation). ``road[i]``:
    whether image ``i`` also gets ROAD, with imputation noise from ``seeds[i]`` (``attnviz eval`` uses a CRC-32
    of the image's pixels, so the noise does not depend on order, batch or shard). ``reference[i]``: the
    reference model's CAMs of image ``i`` (agreement is computed against them). ``road_imputer``: see
    :func:`attnviz.metrics.scores.road_scores_batch`. Returns the scores and each
    image's CAMs (to serve as the reference for the next models).
    """
    count = count if count is not None else ScoringCount()
    spec = loaded.spec
    labels = [int(v) for v in labels]
    explanations = explain_batch(loaded, list(images), methods, targets=labels, batch_size=batch_size,
                                 device=loaded.device, class_names=spec.class_names)
    per_image_maps, aliases, views, cams = [], [], [], []
    for image, mask, e in zip(images, masks, explanations):
        maps = {m: e.cams[m].heatmap for m in methods}
        cams.append(dict(maps))
        own = own_spatial_map(e)
        if own is not None:
            maps[OWN_MAP] = own
        per_image_maps.append(maps)
        aliases.append(identical_to(maps))
        side = e.image.shape[0]
        views.append(None if mask is None else mask_for_view(mask, image.shape[:2], side, e.view_resize or side,
                                                             getattr(spec, "interpolation", "bilinear")))

    unique = [[n for n, a in alias.items() if a == n] for alias in aliases]
    # ROAD for the maps of ROAD_MAPS, computed once per distinct map (the first of its identical group)
    road_unique = [[n for n in names if any(aliases[i].get(r) == n for r in ROAD_MAPS)]
                   if road[i] and faithfulness else [] for i, names in enumerate(unique)]
    faith: list[list[metrics.Faithfulness]] = [[] for _ in images]
    road_values: list[np.ndarray] = [np.zeros(0) for _ in images]
    if faithfulness:
        x = spec.normalise(np.stack([e.image for e in explanations]))
        with loaded.lock:
            faith = metrics.faithfulness_batch(loaded.model, x, [[maps[n] for n in names] for maps, names in
                                                                 zip(per_image_maps, unique)], labels)
            if any(road_unique):
                road_values = metrics.road_scores_batch(
                    loaded.model, x, [[per_image_maps[i][n] for n in names] for i, names in enumerate(road_unique)],
                    labels, seeds=seeds, imputer=road_imputer)

    out = [_image_scores(e, labels[i], per_image_maps[i], aliases[i], views[i], unique[i], road_unique[i],
                         faith[i], road_values[i], road[i] and faithfulness, faithfulness, methods,
                         reference[i] if reference is not None else None, count)
           for i, e in enumerate(explanations)]
    return out, cams
