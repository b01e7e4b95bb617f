"""Drawing primitives: palettes, text boxes, colour maps, overlays, markers, colour bars.

Pure functions from numpy arrays to RGB uint8 images, built with OpenCV and Pillow's built-in font (no font
files, no network), so the page, the command line and reports draw exactly the same pictures.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

COLORMAPS: dict[str, int] = {
    "jet": cv2.COLORMAP_JET,
    "turbo": cv2.COLORMAP_TURBO,
    "inferno": cv2.COLORMAP_INFERNO,
    "viridis": cv2.COLORMAP_VIRIDIS,
    "magma": cv2.COLORMAP_MAGMA,
}
WHITE = (255, 255, 255)
INK = (30, 30, 30)
MASK_COLOUR = (0, 255, 0)
COLORBAR_W = 64        # width of a vertical colour bar with its values


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


@lru_cache(maxsize=16)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


# Stand-ins for characters Pillow's built-in font (Aileron) has no glyph for: it would draw its missing-glyph box
# ("0–1" came out as "0[]1" in every saved grid). The page's HTML keeps the real characters.
STAND_INS = {"\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2192": "->", "\u2190": "<-", "\u2264": "<=",
             "\u2265": ">=", "\u00d7": "x", "\u03c1": "rho", "\u2248": "~", "\u2018": "'", "\u2019": "'",
             "\u201c": '"', "\u201d": '"'}
_NO_GLYPH = "\U000F0000"   # a private-use code point: no font draws it, so it renders as the missing-glyph box


def _mask_signature(face, text: str) -> tuple:
    mask = face.getmask(text)
    return mask.size, bytes(mask)


@lru_cache(maxsize=512)
def has_glyph(char: str, size: int = 14) -> bool:
    """Whether the built-in font draws ``char`` as itself, not as its missing-glyph box."""
    face = font(size)
    return char.isspace() or _mask_signature(face, char) != _mask_signature(face, _NO_GLYPH)


def drawable(text: str, size: int = 14) -> str:
    """``text`` with every character the font lacks replaced by its stand-in (else "?")."""
    if text.isascii():
        return text
    return "".join(c if c.isascii() or has_glyph(c, size) else STAND_INS.get(c, "?") for c in text)


def text_image(lines: Sequence[str], width: int, height: int, font_size: int = 14,
               background: tuple[int, int, int] = WHITE, colour: tuple[int, int, int] = INK,
               center: bool = False, top: int = 4) -> np.ndarray:
    """Lines of text on a flat background, clipped to the box (used for labels and placeholders). ``top``: where
    the first line starts; a one-line band as short as ``font_size + 3`` needs a small one, or the descenders
    (g, p, y) are cut off (:func:`band_top` gives it)."""
    im = Image.new("RGB", (max(1, width), max(1, height)), background)
    draw = ImageDraw.Draw(im)
    face = font(font_size)
    y = top
    for line in lines:
        line = drawable(line, font_size)
        w = draw.textlength(line, font=face)
        x = (width - w) / 2 if center else 6
        draw.text((x, y), line, fill=colour, font=face)
        y += font_size + 4
    return np.asarray(im).copy()


def band_top(height: int, font_size: int) -> int:
    """Where a one-line band ``height`` px tall starts its text so the whole line, descenders included, is in it
    (centred; at least 0, at most the usual 4)."""
    ascent, descent = font(font_size).getmetrics()
    return int(max(0, min(4, (height - ascent - descent) // 2)))


def fit_tail(text: str, width: int, font_size: int) -> str:
    """``text`` shortened from the front with "…" until it fits ``width`` pixels (the end of a layer name is the
    part that tells two maps apart)."""
    face = font(font_size)
    text = drawable(text, font_size)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    if draw.textlength(text, font=face) <= width:
        return text
    while text and draw.textlength("…" + text, font=face) > width:
        text = text[1:]
    return "…" + text


def fit_text(text: str, width: int, font_size: int) -> str:
    """``text`` shortened with "…" until it fits ``width`` pixels at ``font_size``."""
    face = font(font_size)
    text = drawable(text, font_size)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    if draw.textlength(text, font=face) <= width:
        return text
    while text and draw.textlength(text + "…", font=face) > width:
        text = text[:-1]
    return text + "…"


def colorize(values: np.ndarray, cmap: str = "jet", vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """Map values to RGB with an OpenCV colour map (OpenCV returns BGR; this returns RGB). NaN -> black."""
    values = np.asarray(values, dtype=np.float32)
    nan = ~np.isfinite(values)
    span = vmax - vmin
    scaled = np.zeros_like(values) if span <= 0 else (np.clip(np.nan_to_num(values, nan=vmin), vmin, vmax) - vmin) / span
    rgb = cv2.cvtColor(cv2.applyColorMap(np.round(scaled * 255).astype(np.uint8), COLORMAPS[cmap]), cv2.COLOR_BGR2RGB)
    rgb[nan] = 0
    return rgb


def as_rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]


def resize(arr: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resize to (height, width)."""
    if arr.shape[:2] == size:
        return arr
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(arr, (size[1], size[0]), interpolation=interp)


def square(image: np.ndarray, size: int) -> np.ndarray:
    return resize(as_rgb(image), (size, size))


def overlay(image: np.ndarray, heat: np.ndarray, opacity: float = 0.5, cmap: str = "jet",
            vmin: float = 0.0, vmax: float = 1.0) -> np.ndarray:
    """Blend a colour-mapped heat map over an image: (1 - opacity) * image + opacity * colour."""
    base = as_rgb(np.asarray(image, dtype=np.uint8))
    colour = colorize(resize(np.asarray(heat, np.float32), base.shape[:2]), cmap, vmin, vmax)
    if opacity <= 0:
        return base.copy()
    if opacity >= 1:
        return colour
    return cv2.addWeighted(base, 1.0 - opacity, colour, opacity, 0.0)


def marker(img: np.ndarray, xy: tuple[float, float], colour=(255, 255, 255)) -> np.ndarray:
    """A cross at (x, y) fractions of the picture, outlined in black so it shows on any colour."""
    x, y = int(xy[0] * img.shape[1]), int(xy[1] * img.shape[0])
    out = img.copy()
    cv2.drawMarker(out, (x, y), (0, 0, 0), cv2.MARKER_CROSS, 15, 4)
    cv2.drawMarker(out, (x, y), colour, cv2.MARKER_CROSS, 13, 2)
    return out


def draw_mask_contour(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = image.copy()
    m = resize(mask.astype(np.uint8), image.shape[:2], nearest=True)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, MASK_COLOUR, 1)
    return out


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


# Diverging colours for "variant minus baseline" maps on the shared scale [-1, 1]: blue where the baseline looks
# more, near-white where they agree, red where the variant looks more.
DIVERGING = ((-1.0, (59, 76, 192)), (0.0, (242, 242, 242)), (1.0, (180, 4, 38)))


def diverging_colours(values: np.ndarray, centre: tuple[int, int, int] | None = None) -> np.ndarray:
    """(H, W) values in [-1, 1] -> (H, W, 3) uint8 on :data:`DIVERGING`; ``centre`` replaces its near-white middle
    (the dark page's own background, so "no change" is not a bright grey patch in dark mode)."""
    v = np.clip(np.asarray(values, np.float64), -1.0, 1.0)
    scale = [(p, centre if (p == 0.0 and centre is not None) else c) for p, c in DIVERGING]
    stops = [p for p, _ in scale]
    return np.stack([np.interp(v, stops, [c[k] for _, c in scale]) for k in range(3)], axis=-1).round().astype(
        np.uint8)
