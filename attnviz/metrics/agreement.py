"""What attention changed: how a variant's heatmap agrees with the baseline's for the same image and method.

Three numbers per (variant, method), each answering a question a reader of the SE / CBAM / CA papers asks:
  spearman      — do the two maps rank the pixels alike? (Spearman rank correlation over all pixels)
  top20_iou     — do they pick the same region? (IoU of the pixels each map puts in its top 20 %)
  peak_distance — do they point at the same place? (distance between the maxima, in pixels of the model's view,
                  as % of the view's side — what ``attnviz eval`` reports — and, for a comparison, as % of its
                  diagonal, which never exceeds 100 % and is what the page and the grid show)
plus the difference map (variant minus baseline, both min-max normalised) the page draws with a diverging
colour map on a shared scale.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from attnviz.results import Comparison, Explanation

TOP_FRACTION = 0.2


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps' pixels (average ranks for ties); 0 when either is constant."""
    from scipy.stats import rankdata

    ra = rankdata(np.asarray(a, np.float64).ravel())
    rb = rankdata(np.asarray(b, np.float64).ravel())
    ra -= ra.mean()
    rb -= rb.mean()
    denom = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else 0.0


def unit(a: np.ndarray) -> np.ndarray:
    """Min-max to [0, 1] (all zeros for a constant map)."""
    a = np.asarray(a, np.float64)
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def top_region(a: np.ndarray, fraction: float = TOP_FRACTION) -> np.ndarray:
    """The ``fraction`` of pixels with the highest values (ties broken by raster order, so exactly that many)."""
    flat = np.asarray(a, np.float64).ravel()
    k = max(1, int(round(fraction * flat.size)))
    keep = np.zeros(flat.size, bool)
    keep[np.argsort(-flat, kind="stable")[:k]] = True
    return keep.reshape(np.shape(a))


def top_iou(a: np.ndarray, b: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    ra, rb = top_region(a, fraction), top_region(b, fraction)
    return float((ra & rb).sum() / max(1, (ra | rb).sum()))


def peak(a: np.ndarray) -> tuple[int, int]:
    """(y, x) of the first maximum."""
    y, x = np.unravel_index(int(np.argmax(a)), np.shape(a))
    return int(y), int(x)


def _same_size(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if a.shape == shape:
        return a
    import cv2

    return cv2.resize(a.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def map_agreement(variant: np.ndarray, baseline: np.ndarray) -> dict[str, float]:
    """The three agreement numbers of two maps of one image (the variant is resized to the baseline's size)."""
    variant = _same_size(np.asarray(variant, np.float32), baseline.shape)
    (vy, vx), (by, bx) = peak(variant), peak(baseline)
    distance = float(np.hypot(vy - by, vx - bx))
    return {"spearman": spearman(variant, baseline), "top20_iou": top_iou(variant, baseline),
            "peak_distance": distance, "peak_distance_pct": 100.0 * distance / max(baseline.shape)}


def diagonal_pct(distance: float, shape: tuple[int, ...]) -> float:
    """A peak distance as % of the map's diagonal (corner pixel to corner pixel): 100 % for opposite corners,
    never more, whatever the map's aspect."""
    return 100.0 * distance / max(1.0, float(np.hypot(shape[0] - 1, shape[1] - 1)))


def difference_map(variant: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """Variant minus baseline, both min-max normalised: in [-1, 1], positive where the variant looks more."""
    variant = _same_size(np.asarray(variant, np.float32), baseline.shape)
    return (unit(variant) - unit(baseline)).astype(np.float32)


def baseline_row(explanations: list[Explanation]) -> Explanation | None:
    """The comparison's reference: the first model without attention ("none")."""
    return next((e for e in explanations if e.attention == "none"), None)


LABELS_DIFFER = "it predicts other classes\nthan the baseline"


def different_labels(c: Comparison, label_sets: Mapping[str, Sequence[str]] | None) -> dict[str, str]:
    """Variant models whose class list differs from the baseline row's: model -> why there is no comparison.

    A map "for class k" means nothing across two label sets (an ImageNet checkpoint beside the shape baseline)."""
    base = baseline_row(c.explanations)
    if base is None or not label_sets or base.model not in label_sets:
        return {}
    ref = tuple(label_sets[base.model])
    return {e.model: LABELS_DIFFER for e in c.explanations
            if e is not base and e.model in label_sets and tuple(label_sets[e.model]) != ref}


def comparison_agreement(c: Comparison, label_sets: Mapping[str, Sequence[str]] | None = None
                         ) -> dict[tuple[str, str], dict[str, float]]:
    """(variant, method) -> agreement with the baseline row's map of that method; empty without a baseline.

    ``label_sets`` (model -> class names): variants with other classes than the baseline are left out and
    recorded in ``c.not_compared``."""
    base = baseline_row(c.explanations)
    if base is None:
        return {}
    c.not_compared = different_labels(c, label_sets)
    out: dict[tuple[str, str], dict[str, float]] = {}
    for e in c.explanations:
        if e is base or e.model in c.not_compared:
            continue
        for method, cam in e.cams.items():
            if method in base.cams:
                numbers = map_agreement(cam.heatmap, base.cams[method].heatmap)
                numbers["peak_distance_diag_pct"] = diagonal_pct(numbers["peak_distance"],
                                                                 base.cams[method].heatmap.shape)
                numbers["same_target"] = float(e.target.label == base.target.label)
                out[(e.model, method)] = numbers
    return out
