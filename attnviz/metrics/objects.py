"""Where a map or an attention module's gate lies relative to a known object — the measurements behind the papers'
claims that the localisation scores (:mod:`attnviz.metrics.scores`) do not give.

Each function takes plain arrays (a map or gate output, the object's boolean mask at the model's input size) and
returns the number together with its chance level where one exists, so a claim can be tested against "what a map
that knows nothing about the object would score":

* :func:`coverage_at_object_area` — share of the object inside the map's top region of the object's own size;
* :func:`profile_peak_hit` — does a 1-D gate profile (Coordinate Attention's height or width gate) peak on one of
  the object's rows / columns, and how often would a random row or column;
* :func:`query_mass_on_object` — for query positions on the object (and off it), the share of their attention
  weights that lands on the object, and the object's share of the key positions (uniform attention's mass);
* :func:`window_on_object` — a spatial transformer's sampled window against the object (scale, coverage, IoU);
* :func:`class_decoding_hits` — how class-specific a set of feature vectors is: leave-one-out nearest class
  centroid, per image, with chance 1 / classes.
"""
from __future__ import annotations

import cv2
import numpy as np

from attnviz.metrics.scores import _resize_to

OBJECT_CELL = 0.5   # a feature-map cell belongs to the object when at least half of its pixels do


def cell_shares(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The fraction of each cell of an ``shape`` grid laid over ``mask`` that is object (area average)."""
    return cv2.resize(mask.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_AREA)


def coverage_at_object_area(saliency: np.ndarray, mask: np.ndarray) -> float | None:
    """Share of the object's pixels among the map's ``|object|`` most salient pixels (ties in raster order).

    The region has the object's size, so a map cannot raise its coverage by spreading over the whole image: a
    map that is exactly the object scores 1, its complement 0, and a map with no information scores about the
    object's share of the image. None when the mask is empty.
    """
    k = int(mask.sum())
    if k == 0:
        return None
    s = np.asarray(_resize_to(np.asarray(saliency, np.float32), mask.shape), np.float64)
    top = np.argsort(-s.ravel(), kind="stable")[:k]
    return float(mask.ravel()[top].mean())


def _lines_with_object(mask: np.ndarray, length: int, axis: int) -> np.ndarray:
    """For ``length`` equal bands across the rows (axis 0) or columns (axis 1): does the band hold object pixels?"""
    size = mask.shape[axis]
    edges = np.round(np.linspace(0, size, length + 1)).astype(int)
    along = mask.any(axis=1 - axis)
    return np.array([along[a:max(b, a + 1)].any() for a, b in zip(edges[:-1], edges[1:])])


def profile_peak_hit(profile: np.ndarray, mask: np.ndarray, axis: int) -> tuple[float, float] | None:
    """``(hit, chance)``: 1.0 when the profile's maximum is on a row (``axis`` 0) or column (1) that holds object
    pixels, else 0.0; chance is the share of such rows / columns. A flat profile has no peak and scores its
    chance (a channel-only gate such as SE's is flat along every axis). None when the mask is empty."""
    profile = np.asarray(profile, np.float64).reshape(-1)
    lines = _lines_with_object(mask, len(profile), axis)
    if not lines.any():
        return None
    chance = float(lines.mean())
    if np.ptp(profile) <= 1e-7:
        return chance, chance
    return float(lines[int(np.argmax(profile))]), chance


def query_mass_on_object(affinity: np.ndarray, mask: np.ndarray) -> dict[str, float] | None:
    """Where the attention of an (Hq, Wq, Hk, Wk) affinity lands relative to the object: ``object_queries``, the
    mean over query cells on the object of the share of their weights on object key cells; ``background_queries``,
    the same for query cells off the object (None when every query cell is object); ``key_share``, the share of
    key cells that are object (what uniform attention puts there). None when no query cell or no key cell is
    object, or every key cell is. Attention that ignores its query gives both query groups the same mass."""
    hq, wq, hk, wk = affinity.shape
    queries = (cell_shares(mask, (hq, wq)) >= OBJECT_CELL).ravel()
    keys = (cell_shares(mask, (hk, wk)) >= OBJECT_CELL).ravel()
    if not queries.any() or not keys.any() or keys.all():
        return None
    weights = np.maximum(np.asarray(affinity, np.float64), 0).reshape(hq * wq, hk * wk)
    totals = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        on_object = weights[:, keys].sum(axis=1) / totals
    fg, bg = on_object[queries & (totals > 0)], on_object[~queries & (totals > 0)]
    if not len(fg):
        return None
    return {"object_queries": float(fg.mean()), "background_queries": float(bg.mean()) if len(bg) else None,
            "key_share": float(keys.mean())}


def window_on_object(region: np.ndarray, mask: np.ndarray) -> dict[str, float] | None:
    """A sampled window (bool, the input's pixels it reads) against the object: ``scale`` (side of the window over
    the image's, sqrt of its area share), ``coverage`` (share of the object inside it), ``iou`` with the object
    and ``magnification``: the object's share of the window over its share of the image — 1 without a zoom,
    1 / scale² for a smaller window that keeps the whole object, below 1 for a window beside it. None when the
    mask or the window is empty."""
    area, window = int(mask.sum()), int(region.sum())
    if area == 0 or window == 0:
        return None
    both = int(np.logical_and(region, mask).sum())
    union = int(np.logical_or(region, mask).sum())
    return {"scale": float(np.sqrt(region.mean())), "coverage": both / area, "iou": both / union,
            "magnification": float((both / window) / mask.mean())}


def class_decoding_hits(features: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
    """Per image: 1.0 when its feature vector is strictly nearer its own class's centroid (computed without it)
    than any other class's, else 0.0; NaN for an image alone in its class. Features are z-scored per dimension
    first (a constant dimension is dropped), so every channel counts alike. Returns the hits and the chance
    level, 1 / (number of classes).

    Features that carry no class information decode at about chance; features that separate the classes at 1.
    """
    x = np.asarray(features, np.float64)
    y = np.asarray(labels)
    spread = x.std(axis=0)
    x = (x[:, spread > 1e-12] - x[:, spread > 1e-12].mean(axis=0)) / spread[spread > 1e-12]
    classes = np.unique(y)
    hits = np.full(len(y), np.nan)
    if len(classes) < 2:
        return hits, 1.0
    sums = np.stack([x[y == c].sum(axis=0) for c in classes])
    counts = np.array([(y == c).sum() for c in classes])
    for i in range(len(y)):
        own = int(np.searchsorted(classes, y[i]))
        if counts[own] < 2:
            continue
        centroids = sums / counts[:, None]
        centroids[own] = (sums[own] - x[i]) / (counts[own] - 1)
        d = ((centroids - x[i]) ** 2).sum(axis=1)
        others = np.delete(d, own)
        hits[i] = float(d[own] < others.min())
    return hits, 1.0 / len(classes)
