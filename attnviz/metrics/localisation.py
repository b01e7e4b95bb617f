"""Localisation scores for a comparison when the object's mask is known (benchmark scene or drawn box)."""
from __future__ import annotations

import cv2
import numpy as np

from attnviz.metrics import scores as metrics
from attnviz.results import Comparison, Explanation

OWN_MAP = "attention"  # the key under which a model's own (stage-summary) spatial map is scored


def mask_for_view(mask: np.ndarray, image_shape: tuple[int, int], view_size: int, resize_size: int,
                  interpolation: str = "bilinear") -> np.ndarray:
    """Apply the model's resize + centre crop to a full-image mask, so it lines up with the model's view.

    The geometry is :meth:`ModelSpec.model_view`'s: a spec that resamples like timm (``interpolation``
    "bicubic") truncates the long side and rounds the crop offset, the others round the side and floor it.
    """
    h, w = image_shape
    if interpolation == "bicubic":
        new_w, new_h = (int(resize_size * w / h), resize_size) if h <= w else (resize_size, int(resize_size * h / w))
    else:
        scale = resize_size / min(h, w)
        new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    m = cv2.resize(mask.astype(np.uint8), (new_w, new_h), interpolation=cv2.INTER_NEAREST)
    if new_h < view_size or new_w < view_size:   # the view pads by edge replication here
        m = cv2.copyMakeBorder(m, 0, max(0, view_size - new_h), 0, max(0, view_size - new_w), cv2.BORDER_REPLICATE)
        new_h, new_w = m.shape
    if interpolation == "bicubic":
        top, left = int(round((new_h - view_size) / 2.0)), int(round((new_w - view_size) / 2.0))
    else:
        top, left = max(0, (new_h - view_size) // 2), max(0, (new_w - view_size) // 2)
    return m[top:top + view_size, left:left + view_size].astype(bool)


def box_mask(box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    """A boolean mask of ``shape`` that is True inside the (x0, y0, x1, y1) box (corners in any order)."""
    x0, y0, x1, y1 = box
    x0, x1 = sorted((int(x0), int(x1)))
    y0, y1 = sorted((int(y0), int(y1)))
    m = np.zeros(shape, bool)
    m[max(0, y0):min(shape[0], y1 + 1), max(0, x0):min(shape[1], x1 + 1)] = True
    return m


def own_spatial_map(e: Explanation) -> np.ndarray | None:
    """The module's own spatial map at the CAM layer's stage (or the deepest available), if it has one."""
    spatial = [s for s in e.stage_summaries if s.layout == "spatial"]
    if not spatial:
        return None
    same_stage = [s for s in spatial if s.stage == e.layer.split(".")[0]]
    return (same_stage or spatial)[-1].data


def score_explanation(e: Explanation, mask_view: np.ndarray) -> dict[str, dict[str, float]]:
    """Per map (each CAM method, plus the module's own map): pointing game, energy pointing game, IoU."""
    maps = {m: c.heatmap for m, c in e.cams.items()}
    own = own_spatial_map(e)
    if own is not None:
        maps[OWN_MAP] = own
    return {name: {"pointing_game": float(metrics.pointing_game(s, mask_view)),
                   "energy_pointing_game": metrics.energy_pointing_game(s, mask_view),
                   "iou": metrics.iou(s, mask_view)} for name, s in maps.items()}


def score_comparison(c: Comparison) -> dict[str, dict[str, dict[str, float]]]:
    """Scores for every model of a comparison whose ``mask`` is set (empty when it is not)."""
    if c.mask is None:
        return {}
    out = {}
    for e in c.explanations:
        if e.image is None:
            continue
        view_mask = mask_for_view(c.mask, c.image.shape[:2], e.image.shape[0], e.view_resize or e.image.shape[0])
        if view_mask.any():
            out[e.model] = score_explanation(e, view_mask)
    return out
