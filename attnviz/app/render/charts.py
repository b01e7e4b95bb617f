"""Small charts for attention maps that are not pictures: channel weights, row / column profiles, matrices."""
from __future__ import annotations

import cv2
import numpy as np

from attnviz.app.render.draw import LIGHT, Palette, band_top, colorize, resize, text_image

HOT = (220, 80, 40)     # the ``highlight_top`` largest channels
BAR = (70, 120, 200)


def _binned(values: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    edges = np.linspace(0, len(values), bins + 1).astype(int)
    maxes = np.array([values[a:b].max() for a, b in zip(edges[:-1], edges[1:])])
    means = np.array([values[a:b].mean() for a, b in zip(edges[:-1], edges[1:])])
    return edges, maxes, means


def bar_chart(values: np.ndarray, width: int = 320, height: int = 120, title: str = "", vmin: float = 0.0,
              vmax: float = 1.0, highlight_top: int = 0, palette: Palette = LIGHT) -> np.ndarray:
    """Channel weights as bars on a labelled 0-1 axis; more channels than pixels are binned (bar = bin max, dark
    line = bin mean). The caption under the axis says how many channels and which bars are red (the
    ``highlight_top`` largest)."""
    values = np.asarray(values, np.float32).reshape(-1)
    im = np.full((height, width, 3), palette.paper, np.uint8)
    top_pad, left, foot = (18 if title else 6), 16, 16
    base = height - foot          # y of the axis line
    plot_h = base - top_pad
    n = len(values)
    bins = min(n, max(1, width - left - 4))
    edges, maxes, means = _binned(values, bins)
    span = max(vmax - vmin, 1e-12)
    bar_w = (width - left - 4) / bins
    top_idx = set(np.argsort(-values)[:highlight_top].tolist()) if highlight_top else set()
    for i in range(bins):
        x0 = int(left + i * bar_w)
        x1 = max(x0 + 1, int(left + (i + 1) * bar_w) - (1 if bar_w > 3 else 0))
        hmax = int(np.clip((maxes[i] - vmin) / span, 0, 1) * plot_h)
        hmean = int(np.clip((means[i] - vmin) / span, 0, 1) * plot_h)
        hot = any(edges[i] <= j < edges[i + 1] for j in top_idx)
        cv2.rectangle(im, (x0, base - hmax), (x1 - 1, base), HOT if hot else BAR, -1)
        if edges[i + 1] - edges[i] > 1:
            cv2.line(im, (x0, base - hmean), (x1 - 1, base - hmean), (20, 40, 90), 1)
    cv2.line(im, (left - 2, base), (width - 2, base), palette.axis, 1)
    cv2.line(im, (left - 2, top_pad), (left - 2, base), palette.axis, 1)
    for value, y in ((vmax, top_pad), (vmin, base - 11)):
        im[y:y + 12, :left - 3] = text_image([f"{value:g}"], left - 3, 12, 10, palette.paper, palette.ink,
                                             top=band_top(12, 10))[:, :left - 3]
    caption = f"{n} channels" + (f" · red: top {highlight_top}" if highlight_top else "")
    strip = height - base - 2
    im[base + 2:height] = text_image([caption], width, strip, 10, palette.paper, palette.ink, center=True,
                                     top=band_top(strip, 10))[:strip]
    if title:
        im[:top_pad] = text_image([title], width, top_pad, 12, palette.paper, palette.ink,
                                  top=band_top(top_pad, 12))[:top_pad]
    return im


def profile_plot(values: np.ndarray, width: int = 320, height: int = 120, title: str = "",
                 vertical: bool = False, palette: Palette = LIGHT) -> np.ndarray:
    """A line plot of a 1-D profile in [0, 1] (CA's per-row / per-column weights)."""
    values = np.asarray(values, np.float32).reshape(-1)
    im = np.full((height, width, 3), palette.paper, np.uint8)
    top_pad = 18 if title else 4
    n = len(values)
    lo, hi = float(values.min()), float(values.max())
    span = hi - lo if hi > lo else 1.0
    if vertical:  # rows run downwards: x = value, y = position
        ys = top_pad + (np.arange(n) + 0.5) / n * (height - top_pad - 4)
        xs = 6 + (values - lo) / span * (width - 12)
    else:
        xs = 6 + (np.arange(n) + 0.5) / n * (width - 12)
        ys = height - 4 - (values - lo) / span * (height - top_pad - 8)
    pts = np.stack([xs, ys], axis=1).round().astype(np.int32)
    cv2.polylines(im, [pts], False, (200, 60, 40), 2, cv2.LINE_AA)
    for p in pts:
        cv2.circle(im, tuple(int(v) for v in p), 2, palette.ink, -1)
    caption = f"{title}  [{lo:.2f}..{hi:.2f}]" if title else f"[{lo:.2f}..{hi:.2f}]"
    im[:18] = text_image([caption], width, 18, 12, palette.paper, palette.ink)
    return im


def matrix_image(values: np.ndarray, size: int = 160, cmap: str = "viridis",
                 axes: tuple[str, str] = ("", ""), palette: Palette = LIGHT) -> np.ndarray:
    """A 2-D map (e.g. Triplet's C x W plane) as an image, min-max scaled, nearest-neighbour upscaled."""
    values = np.asarray(values, np.float32)
    lo, hi = float(values.min()), float(values.max())
    img = colorize(values, cmap, lo, hi if hi > lo else lo + 1)
    pad = 16
    img = resize(img, (size - pad, size - pad), nearest=True)
    out = np.full((size, size, 3), palette.paper, np.uint8)
    out[pad:, pad:] = img
    if axes[0]:
        out[pad:, :pad] = np.rot90(text_image([f"{axes[0]} ({values.shape[0]})"], size - pad, pad, 11,
                                              palette.paper, palette.ink)).copy()
    if axes[1]:
        out[:pad, pad:] = text_image([f"{axes[1]} ({values.shape[1]})"], size - pad, pad, 11, palette.paper,
                                     palette.ink)
    return out
