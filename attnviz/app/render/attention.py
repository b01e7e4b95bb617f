"""Attention maps as pictures: the grid's attention column, the attention panel's maps, the query-point view.

Gate maps are drawn on their absolute 0-1 scale (:data:`GATE_LEGEND`), unlike the CAM columns, which are
normalised per map: a gate that is 0.9 everywhere looks uniformly hot, as it is.
"""
from __future__ import annotations

import re

import cv2
import numpy as np

from attnviz.app.render import draw
from attnviz.app.render.charts import bar_chart, matrix_image, profile_plot
from attnviz.app.render.draw import LIGHT, MASK_COLOUR, Palette, colorize, marker, overlay, resize, square, text_image
from attnviz.results import AttentionMap, Explanation

TITLE_H = 18   # the band a titled picture's title sits in, above it

GATE_LEGEND = "gate value 0–1, absolute"
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
    a spatial transformer shows its sampled region. Fused layers ("layer1+layer2") show the deepest chosen
    stage that has a map.
    """
    stages = [stage_of_layer(name) for name in expl.layer.split("+")] if expl.layer else [""]
    for stage in reversed(stages):
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


def query_marker_image(image: np.ndarray, query: tuple[float, float], size: int = 256) -> np.ndarray:
    """The image at ``size`` px with the query point (x, y fractions) marked — the page's query picker."""
    return marker(square(image, size), query)


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
    body = square(overlay(base, weights, opacity, cmap, 0.0, 1.0), size)
    return marker(body, query)


def region_image(theta: np.ndarray, image: np.ndarray | None, size: int) -> np.ndarray:
    """A spatial transformer's sampled square drawn on the input, with the warped input as an inset."""
    from attnviz.core.cam import affine_to_pixels

    base = square(image if image is not None else np.zeros((size, size, 3), np.uint8), size)
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
    out[-inset:, -inset:] = resize(warped, (inset, inset))
    return out


def titled(img: np.ndarray, title: str, font_size: int = 12, palette: Palette = LIGHT) -> np.ndarray:
    if not title:
        return img
    band = text_image([draw.fit_tail(title, img.shape[1] - 8, font_size)], img.shape[1], TITLE_H, font_size,
                      palette.paper, palette.ink, top=draw.band_top(TITLE_H, font_size))
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
            body = square(overlay(image, amap.data, opacity, cmap, 0.0, 1.0), size)
        else:
            body = square(colorize(amap.data, cmap, 0.0, 1.0), size)
    elif amap.layout == "channel":
        body = bar_chart(amap.data, size, size, vmin=0.0, vmax=1.0, highlight_top=5, palette=palette)
    elif amap.layout in ("profile_h", "profile_w"):
        body = profile_plot(amap.data, size, size, "rows" if amap.layout == "profile_h" else "columns",
                            vertical=amap.layout == "profile_h", palette=palette)
    else:
        axes = (amap.axes[0], amap.axes[1]) if len(amap.axes) >= 2 else ("", "")
        body = matrix_image(amap.data, size, "viridis", axes, palette=palette)
    return titled(body, title, palette=palette)
