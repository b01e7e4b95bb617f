"""Rendering: heatmap overlays, side-by-side grids, channel bar charts, profiles, colour bars.

Pure functions from numpy arrays (and the plain result dataclasses) to RGB uint8 images, built with
OpenCV and Pillow's built-in font (no font files, no network), so the page, the CLI and reports draw
exactly the same pictures.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from attnviz.core.methods import title as method_title
from attnviz.results import AttentionMap, Comparison, Explanation

COLORMAPS: dict[str, int] = {
    "jet": cv2.COLORMAP_JET,
    "turbo": cv2.COLORMAP_TURBO,
    "inferno": cv2.COLORMAP_INFERNO,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "magma": cv2.COLORMAP_MAGMA,
}
WHITE = (255, 255, 255)
INK = (30, 30, 30)


@dataclass(frozen=True)
class Palette:
    """Colours of everything that is not data (background, text, placeholders, bars)."""

    paper: tuple[int, int, int] = WHITE
    ink: tuple[int, int, int] = INK
    muted_paper: tuple[int, int, int] = (240, 240, 240)
    muted_ink: tuple[int, int, int] = (120, 120, 120)
    axis: tuple[int, int, int] = (0, 0, 0)


LIGHT = Palette()
# The page in dark mode: the same pictures on the page's own dark background (downloads stay LIGHT).
DARK = Palette(paper=(11, 15, 25), ink=(229, 231, 235), muted_paper=(31, 41, 55), muted_ink=(156, 163, 175),
               axis=(209, 213, 219))
MASK_COLOUR = (0, 255, 0)
HEADER_H = 28          # grid: height of the column-title row
LABEL_W = 190          # grid: width of the row-label column
COLORBAR_W = 64        # grid: width of the colour-bar column (shared scale only)
GAP = 4                # grid: padding between cells


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def text_image(lines: Sequence[str], width: int, height: int, font_size: int = 14,
               background: tuple[int, int, int] = WHITE, colour: tuple[int, int, int] = INK,
               center: bool = False) -> np.ndarray:
    """Lines of text on a flat background, clipped to the box (used for labels and placeholders)."""
    im = Image.new("RGB", (max(1, width), max(1, height)), background)
    draw = ImageDraw.Draw(im)
    font = _font(font_size)
    y = 4
    for line in lines:
        w = draw.textlength(line, font=font)
        x = (width - w) / 2 if center else 6
        draw.text((x, y), line, fill=colour, font=font)
        y += font_size + 4
    return np.asarray(im).copy()


def colorize(values: np.ndarray, cmap: str = "jet", vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """Map values to RGB with an OpenCV colour map (OpenCV returns BGR; this returns RGB). NaN -> black."""
    values = np.asarray(values, dtype=np.float32)
    nan = ~np.isfinite(values)
    span = vmax - vmin
    scaled = np.zeros_like(values) if span <= 0 else (np.clip(np.nan_to_num(values, nan=vmin), vmin, vmax) - vmin) / span
    rgb = cv2.cvtColor(cv2.applyColorMap(np.round(scaled * 255).astype(np.uint8), COLORMAPS[cmap]), cv2.COLOR_BGR2RGB)
    rgb[nan] = 0
    return rgb


def _as_rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]


def _resize(arr: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resize to (height, width)."""
    if arr.shape[:2] == size:
        return arr
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(arr, (size[1], size[0]), interpolation=interp)


def overlay(image: np.ndarray, heat: np.ndarray, opacity: float = 0.5, cmap: str = "jet",
            vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """Blend a colour-mapped heat map over an image: (1 - opacity) * image + opacity * colour."""
    base = _as_rgb(np.asarray(image, dtype=np.uint8))
    colour = colorize(_resize(np.asarray(heat, np.float32), base.shape[:2]), cmap, vmin, vmax)
    if opacity <= 0:
        return base.copy()
    if opacity >= 1:
        return colour
    return cv2.addWeighted(base, 1.0 - opacity, colour, opacity, 0.0)


def shared_vmax(comparison: Comparison, method: str) -> float:
    """The largest raw CAM value of ``method`` over every model: one colour scale for the whole column."""
    top = max((float(e.cams[method].raw.max()) for e in comparison.explanations if method in e.cams), default=0.0)
    return top if top > 0 else 1.0


def _square(image: np.ndarray, size: int) -> np.ndarray:
    return _resize(_as_rgb(image), (size, size))


def cam_cell(expl: Explanation, method: str, *, opacity: float = 0.5, cmap: str = "jet",
             shared_vmax: float | None = None, size: int | None = None) -> np.ndarray:
    """One CAM overlaid on the model's view; per-map [0, 1] scale, or raw values on a shared scale."""
    cam = expl.cams[method]
    base = expl.image if expl.image is not None else np.zeros(cam.heatmap.shape + (3,), np.uint8)
    out = overlay(base, cam.heatmap, opacity, cmap) if shared_vmax is None else \
        overlay(base, cam.raw, opacity, cmap, 0.0, shared_vmax)
    return _square(out, size) if size else out


_AFTER_STAGE = re.compile(r"^[a-z_]+?(\d+)$")   # heads named after their stage: cc3, danet3, nl2, bam1


def stage_of_layer(layer: str) -> str:
    """The stage a CAM layer belongs to, in the recorder's terms: "layer2.1" -> "layer2", "cc3" -> "layer3"."""
    head = layer.split(".")[0] if layer else ""
    found = _AFTER_STAGE.match(head)
    return f"layer{found.group(1)}" if found and not head.startswith("layer") else head


def primary_attention(expl: Explanation) -> AttentionMap | None:
    """The map that stands for the module in the grid, at the stage of the chosen CAM layer.

    At that stage: the spatial stage summary, else the channel one (SE / ECA). A module that has no map
    at that stage (Non-local sits after layer2 only) shows its deepest spatial, else channel, summary;
    a spatial transformer shows its sampled region.
    """
    stage = stage_of_layer(expl.layer)
    for layout in ("spatial", "channel"):
        same = [s for s in expl.stage_summaries if s.layout == layout and s.stage == stage]
        if same:
            return same[-1]
    for layout in ("spatial", "channel"):
        found = [s for s in expl.stage_summaries if s.layout == layout]
        if found:
            return found[-1]
    return next((m for m in expl.attention_maps if m.layout == "affine"), None)


def attention_cell(expl: Explanation, size: int, opacity: float = 0.5, cmap: str = "jet",
                   palette: Palette = LIGHT) -> np.ndarray:
    """The grid's attention column: the module's own map, or a placeholder for a baseline."""
    amap = primary_attention(expl)
    if amap is None:
        return text_image(["no attention module"], size, size, 13, palette.muted_paper, palette.muted_ink,
                          center=True)
    return attention_map_image(amap, expl.image, size, opacity, cmap, title=f"{amap.stage} {amap.name.split(' ')[0]}",
                               palette=palette)


def cam_peak(expl: Explanation) -> tuple[float, float]:
    """The default query point: the first CAM's maximum, as (x, y) fractions of the image."""
    if not expl.cams:
        return 0.5, 0.5
    heat = next(iter(expl.cams.values())).heatmap
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return (x + 0.5) / heat.shape[1], (y + 0.5) / heat.shape[0]


def _marker(img: np.ndarray, xy: tuple[float, float], colour=(255, 255, 255)) -> np.ndarray:
    x, y = int(xy[0] * img.shape[1]), int(xy[1] * img.shape[0])
    out = img.copy()
    cv2.drawMarker(out, (x, y), (0, 0, 0), cv2.MARKER_CROSS, 15, 4)
    cv2.drawMarker(out, (x, y), colour, cv2.MARKER_CROSS, 13, 2)
    return out


def query_marker_image(image: np.ndarray, query: tuple[float, float], size: int = 256) -> np.ndarray:
    """The image at ``size`` px with the query point (x, y fractions) marked — the page's query picker."""
    return _marker(_square(image, size), query)


def affinity_image(amap: AttentionMap, image: np.ndarray | None, query: tuple[float, float], size: int,
                   opacity: float, cmap: str) -> np.ndarray:
    """One query position's weights over the key positions, overlaid, with the query marked."""
    hq, wq = amap.data.shape[:2]
    qx = min(wq - 1, int(query[0] * wq))
    qy = min(hq - 1, int(query[1] * hq))
    weights = amap.data[qy, qx]
    top = float(weights.max())
    weights = weights / top if top > 0 else weights
    base = image if image is not None else np.zeros((size, size, 3), np.uint8)
    body = _square(overlay(base, weights, opacity, cmap, 0.0, 1.0), size)
    return _marker(body, query)


def region_image(theta: np.ndarray, image: np.ndarray | None, size: int) -> np.ndarray:
    """A spatial transformer's sampled square drawn on the input, with the warped input as an inset."""
    from attnviz.core.cam import affine_to_pixels

    base = _square(image if image is not None else np.zeros((size, size, 3), np.uint8), size)
    m = affine_to_pixels(theta, size, size)
    corners = np.array([[0, 0], [size - 1, 0], [size - 1, size - 1], [0, size - 1]], np.float64)
    quad = (corners @ m[:, :2].T + m[:, 2]).round().astype(np.int32)
    out = base.copy()
    cv2.polylines(out, [quad], True, (0, 0, 0), 3)
    cv2.polylines(out, [quad], True, MASK_COLOUR, 1)
    warped = cv2.warpAffine(base, m, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderMode=cv2.BORDER_REPLICATE)
    inset = max(16, size // 3)
    out[-inset - 2:, -inset - 2:] = 255
    out[-inset:, -inset:] = _resize(warped, (inset, inset))
    return out


def bar_chart(values: np.ndarray, width: int = 320, height: int = 120, title: str = "", vmin: float = 0.0,
              vmax: float = 1.0, highlight_top: int = 0, palette: Palette = LIGHT) -> np.ndarray:
    """Channel weights as bars; more channels than pixels are binned (bar = bin max, dark line = bin mean)."""
    values = np.asarray(values, np.float32).reshape(-1)
    im = np.full((height, width, 3), palette.paper, np.uint8)
    top_pad = 18 if title else 4
    plot_h = height - top_pad - 4
    n = len(values)
    bins = min(n, max(1, width - 8))
    edges = np.linspace(0, n, bins + 1).astype(int)
    maxes = np.array([values[a:b].max() for a, b in zip(edges[:-1], edges[1:])])
    means = np.array([values[a:b].mean() for a, b in zip(edges[:-1], edges[1:])])
    span = max(vmax - vmin, 1e-12)
    bar_w = (width - 8) / bins
    top_idx = set(np.argsort(-values)[:highlight_top].tolist()) if highlight_top else set()
    for i in range(bins):
        x0 = int(4 + i * bar_w)
        x1 = max(x0 + 1, int(4 + (i + 1) * bar_w) - (1 if bar_w > 3 else 0))
        hmax = int(np.clip((maxes[i] - vmin) / span, 0, 1) * plot_h)
        hmean = int(np.clip((means[i] - vmin) / span, 0, 1) * plot_h)
        hot = any(edges[i] <= j < edges[i + 1] for j in top_idx)
        colour = (220, 80, 40) if hot else (70, 120, 200)
        cv2.rectangle(im, (x0, height - 4 - hmax), (x1 - 1, height - 4), colour, -1)
        if edges[i + 1] - edges[i] > 1:
            cv2.line(im, (x0, height - 4 - hmean), (x1 - 1, height - 4 - hmean), (20, 40, 90), 1)
    cv2.line(im, (2, height - 4), (width - 2, height - 4), palette.axis, 1)
    if title:
        im[:top_pad] = text_image([title], width, top_pad, 12, palette.paper, palette.ink)[:top_pad]
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
    img = _resize(img, (size - pad, size - pad), nearest=True)
    out = np.full((size, size, 3), palette.paper, np.uint8)
    out[pad:, pad:] = img
    if axes[0]:
        out[pad:, :pad] = np.rot90(text_image([f"{axes[0]} ({values.shape[0]})"], size - pad, pad, 11,
                                              palette.paper, palette.ink)).copy()
    if axes[1]:
        out[:pad, pad:] = text_image([f"{axes[1]} ({values.shape[1]})"], size - pad, pad, 11, palette.paper,
                                     palette.ink)
    return out


def _titled(img: np.ndarray, title: str, font: int = 12, palette: Palette = LIGHT) -> np.ndarray:
    if not title:
        return img
    band = text_image([title if len(title) <= 44 else "…" + title[-43:]], img.shape[1], 18, font, palette.paper,
                      palette.ink)
    return np.concatenate([band, img], axis=0)


def attention_map_image(amap: AttentionMap, image: np.ndarray | None, size: int = 200, opacity: float = 0.5,
                        cmap: str = "jet", title: str | None = None,
                        query: tuple[float, float] = (0.5, 0.5), palette: Palette = LIGHT) -> np.ndarray:
    """Draw one attention map according to its layout; the title is the map's label unless given.

    ``query`` (x, y fractions of the image) picks the query position of "affinity" maps.
    """
    title = amap.label if title is None else title
    if amap.layout == "affinity":
        body = affinity_image(amap, image, query, size, opacity, cmap)
    elif amap.layout == "affine":
        body = region_image(amap.data, image, size)
    elif amap.layout == "spatial":
        if image is not None:
            body = _square(overlay(image, amap.data, opacity, cmap, 0.0, 1.0), size)
        else:
            body = _square(colorize(amap.data, cmap, 0.0, 1.0), size)
    elif amap.layout == "channel":
        body = bar_chart(amap.data, size, size, vmin=0.0, vmax=1.0, highlight_top=5, palette=palette)
    elif amap.layout in ("profile_h", "profile_w"):
        body = profile_plot(amap.data, size, size, "rows" if amap.layout == "profile_h" else "columns",
                            vertical=amap.layout == "profile_h", palette=palette)
    else:
        axes = (amap.axes[0], amap.axes[1]) if len(amap.axes) >= 2 else ("", "")
        body = matrix_image(amap.data, size, "viridis", axes, palette=palette)
    return _titled(body, title, palette=palette)


def colorbar(cmap: str, vmin: float, vmax: float, height: int = 160, width: int = COLORBAR_W,
             palette: Palette = LIGHT) -> np.ndarray:
    """A vertical colour bar with its top, middle and bottom values written beside it."""
    ramp = np.linspace(1, 0, max(2, height - 16))[:, None].repeat(14, axis=1)
    bar = colorize(ramp, cmap, 0, 1)
    out = np.full((height, width, 3), palette.paper, np.uint8)
    out[8:8 + bar.shape[0], 4:18] = bar
    for frac in (0.0, 0.5, 1.0):
        value = vmax - frac * (vmax - vmin)
        y = int(8 + frac * (bar.shape[0] - 1))
        label = text_image([f"{value:.3g}"], width - 20, 14, 10, palette.paper, palette.ink)
        top = int(np.clip(y - 7, 0, height - 14))
        out[top:top + 14, 20:width] = label
    return out


def _draw_mask_contour(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = image.copy()
    m = _resize(mask.astype(np.uint8), image.shape[:2], nearest=True)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, MASK_COLOUR, 1)
    return out


# An extra grid column: its title and how to draw one row's cell (explanation, comparison, cell size, palette).
ExtraColumn = tuple[str, Callable[[Explanation, Comparison, int, Palette], np.ndarray]]


# Diverging colours for "variant minus baseline" maps on the shared scale [-1, 1]: blue where the baseline looks
# more, near-white where they agree, red where the variant looks more.
DIVERGING = ((-1.0, (59, 76, 192)), (0.0, (242, 242, 242)), (1.0, (180, 4, 38)))


def diverging_colours(values: np.ndarray) -> np.ndarray:
    """(H, W) values in [-1, 1] -> (H, W, 3) uint8 on :data:`DIVERGING`."""
    v = np.clip(np.asarray(values, np.float64), -1.0, 1.0)
    stops = [p for p, _ in DIVERGING]
    return np.stack([np.interp(v, stops, [c[k] for _, c in DIVERGING]) for k in range(3)], axis=-1).round().astype(
        np.uint8)


def difference_cell(diff: np.ndarray, view: np.ndarray | None, size: int, numbers: dict[str, float] | None,
                    palette: Palette = LIGHT) -> np.ndarray:
    """A variant-minus-baseline map over the model's view (faint), with its agreement numbers underneath."""
    strip = 18 if numbers else 0
    side = size - strip
    colour = diverging_colours(_resize(np.asarray(diff, np.float32), (side, side)))
    if view is not None:
        grey = cv2.cvtColor(cv2.cvtColor(_square(view, side), cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
        colour = cv2.addWeighted(grey, 0.25, colour, 0.75, 0.0)
    if not numbers:
        return colour
    out = np.empty((size, size, 3), np.uint8)
    out[:] = palette.paper
    left = (size - side) // 2
    out[:side, left:left + side] = colour
    caption = f"rho {numbers['spearman']:.2f}  IoU {numbers['top20_iou']:.2f}  d {numbers['peak_distance_pct']:.0f}%"
    out[side:] = text_image([caption], size, strip, 11, palette.paper, palette.ink, center=True)
    return out


def vs_baseline_column(comparison: Comparison, method: str | None = None) -> ExtraColumn | None:
    """The "vs baseline" column: each variant's map of ``method`` (default: the first) minus the baseline row's.
    None when the comparison has no attention-free row to compare with, or nothing else."""
    from attnviz.metrics.agreement import baseline_row, difference_map

    base = baseline_row(comparison.explanations)
    method = method or (comparison.methods[0] if comparison.methods else None)
    if base is None or len(comparison.explanations) < 2 or method not in base.cams:
        return None

    def draw(expl: Explanation, comp: Comparison, cell: int, palette: Palette) -> np.ndarray:
        if expl is base:  # the reference row carries the legend of the diverging scale
            legend = text_image(["reference row", "", "variant minus baseline", "(both scaled to [0, 1])", "",
                                 "red: the variant looks more", "blue: the baseline looks more"], cell, cell - 22, 11,
                                palette.muted_paper, palette.muted_ink, center=True)
            bar = diverging_colours(np.tile(np.linspace(-1, 1, cell - 16), (14, 1)))
            foot = np.empty((22, cell, 3), np.uint8)
            foot[:] = palette.muted_paper
            foot[2:16, 8:cell - 8] = bar
            return np.concatenate([legend, foot], axis=0)
        if method not in expl.cams:
            return text_image(["not computed"], cell, cell, 12, palette.muted_paper, palette.muted_ink, center=True)
        diff = difference_map(expl.cams[method].heatmap, base.cams[method].heatmap)
        return difference_cell(diff, expl.image, cell, comp.agreement.get((expl.model, method)), palette)

    return (f"vs baseline: {method_title(method)}", draw)


def grid_shape(n_models: int, n_methods: int, cell: int = 160, include_attention: bool = True,
               shared_scale: bool = False, extra_columns: int = 0) -> tuple[int, int]:
    """(height, width) of :func:`grid` for a layout, so callers and tests can rely on it."""
    cols = 1 + n_methods + (1 if include_attention else 0) + extra_columns
    width = LABEL_W + cols * (cell + GAP) + GAP + (COLORBAR_W + GAP if shared_scale else 0)
    height = HEADER_H + n_models * (cell + GAP) + GAP
    return height, width


def input_cell(expl: Explanation, comparison: Comparison, cell: int) -> np.ndarray:
    """The model's view of the input, with the known object's outline when there is one."""
    base = expl.image if expl.image is not None else comparison.image
    first = _square(base, cell)
    if comparison.mask is not None and expl.image is not None:
        from attnviz.metrics.localisation import mask_for_view

        view_mask = mask_for_view(comparison.mask, comparison.image.shape[:2], expl.image.shape[0],
                                  expl.view_resize or expl.image.shape[0])
        first = _draw_mask_contour(first, view_mask)
    return first


def row_label(expl: Explanation) -> list[str]:
    top = expl.top1
    return [expl.display_name[:24], f"top-1: {top.label} {top.probability:.0%}"[:28],
            f"target: {expl.target.label}"[:28], f"layer: {expl.layer}"[:28]]


def grid(comparison: Comparison, *, methods: Sequence[str] | None = None, opacity: float = 0.5,
         cmap: str = "jet", shared_scale: bool = False, include_attention: bool = True,
         cell: int = 160, palette: Palette = LIGHT, extra_columns: Sequence[ExtraColumn] = ()) -> np.ndarray:
    """Rows = models; columns = input, one overlay per method, the module's own map, any ``extra_columns``
    (+ a colour bar on a shared scale). Pure: re-rendering a stored comparison runs no model."""
    methods = list(methods or comparison.methods)
    height, width = grid_shape(len(comparison.explanations), len(methods), cell, include_attention, shared_scale,
                               len(extra_columns))
    canvas = np.full((height, width, 3), palette.paper, np.uint8)
    titles = (["input"] + [method_title(m) for m in methods] +
              (["attention module"] if include_attention else []) + [t for t, _ in extra_columns])
    for c, title in enumerate(titles):
        x = LABEL_W + GAP + c * (cell + GAP)
        canvas[:HEADER_H, x:x + cell] = text_image([title], cell, HEADER_H, 14, palette.paper, palette.ink,
                                                   center=True)
    vmaxes = {m: shared_vmax(comparison, m) for m in methods} if shared_scale else {}
    for r, expl in enumerate(comparison.explanations):
        y = HEADER_H + GAP + r * (cell + GAP)
        canvas[y:y + cell, :LABEL_W] = text_image(row_label(expl), LABEL_W, cell, 13, palette.paper, palette.ink)
        cells = [input_cell(expl, comparison, cell)]
        for m in methods:
            cells.append(cam_cell(expl, m, opacity=opacity, cmap=cmap, shared_vmax=vmaxes.get(m), size=cell)
                         if m in expl.cams else text_image(["not computed"], cell, cell, 12, palette.muted_paper,
                                                           palette.muted_ink, center=True))
        if include_attention:
            cells.append(_square(attention_cell(expl, cell, opacity, cmap, palette), cell))
        cells.extend(_square(draw(expl, comparison, cell, palette), cell) for _, draw in extra_columns)
        for c, img in enumerate(cells):
            x = LABEL_W + GAP + c * (cell + GAP)
            canvas[y:y + cell, x:x + cell] = img
    if shared_scale and methods:
        x = width - COLORBAR_W - GAP
        top = max(vmaxes.values())
        canvas[HEADER_H:HEADER_H + min(cell, height - HEADER_H), x:x + COLORBAR_W] = \
            colorbar(cmap, 0.0, top, min(cell, height - HEADER_H), COLORBAR_W, palette)
        canvas[:HEADER_H, x:x + COLORBAR_W] = text_image(["shared"], COLORBAR_W, HEADER_H, 12, palette.paper,
                                                         palette.ink, center=True)
    return canvas


def picker_image(image: np.ndarray, side: int = 384) -> tuple[np.ndarray, float]:
    """The upload drawn with its longer side at ``side`` px (tiny scenes scaled up, sharp), for clicking
    an object box; returns the picture and its scale (picture px per upload px)."""
    h, w = image.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    return _resize(_as_rgb(image), size, nearest=scale >= 2).copy(), scale


def mark_picker(picture: np.ndarray, scale: float, box: Sequence[int] | None = None,
                first: Sequence[int] | None = None) -> np.ndarray:
    """The box picker with the object box (upload pixels, x0 y0 x1 y1) or its first corner marked."""
    out = picture.copy()
    if box is not None:
        x0, y0, x1, y1 = (int(round(v * scale)) for v in box)
        cv2.rectangle(out, (x0, y0), (x1, y1), (0, 0, 0), 3)
        cv2.rectangle(out, (x0, y0), (x1, y1), MASK_COLOUR, 1)
    if first is not None:
        out = _marker(out, ((first[0] + 0.5) * scale / out.shape[1], (first[1] + 0.5) * scale / out.shape[0]),
                      MASK_COLOUR)
    return out
