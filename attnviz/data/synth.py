"""A procedural scene benchmark whose object masks are known exactly.

Each scene holds one object from :data:`CLASS_NAMES` — classes that differ only in *shape* — at a random
position, size (10–35 % of the image side), rotation, colour and fill texture, on a natural-photograph or
procedural background, with 1–4 distractors from a family that matches no class (thin strokes, scribbles,
irregular blobs, text-like marks) and, sometimes, an occluder over part of the object.

Because the object's pixels are known, attnviz can *score* heatmaps (does the heat land on the object?),
which no Grad-CAM tool can do on ordinary photographs.

Scene ``i`` of ``generate(n, seed)`` depends only on ``(seed, i)``, so data sets are reproducible, can be
generated in parallel, and every prefix of a larger set equals the smaller set.
"""
from __future__ import annotations

import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

VERSION = 1          # bump whenever a scene's pixels change (invalidates cached data sets)
IMAGE_SIZE = 128
MIN_SIZE, MAX_SIZE = 96, 128
CLASS_NAMES: tuple[str, ...] = (
    "circle", "ring", "triangle", "square", "pentagon", "hexagon",
    "star", "cross", "crescent", "arrow", "heart",
)
DIAMETER_RANGE = (0.10, 0.35)   # object's outer diameter as a fraction of the image side
OCCLUSION_PROB = 0.15
OCCLUSION_RANGE = (0.05, 0.25)  # fraction of the object's pixels an occluder covers
MIN_CONTRAST = 60.0             # |luminance(object) - luminance(background under it)|, 0..255
# Letters with no closed round bowl and no cross/arrow/triangle look-alike, for text-like distractors.
DISTRACTOR_LETTERS = "EFHKLMNSWZ"
# Photographs that scikit-image ships inside its wheel (read from disk, never via its downloader).
# Excluded on purpose: coins (circles), chessboard (squares), coffee (a ring-like cup), retina (a disc).
PHOTOS = ("astronaut.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png", "hubble_deep_field.jpg",
          "ihc.png", "grass.png", "gravel.png", "brick.png")


@dataclass(frozen=True)
class Scenes:
    """A batch of scenes with their labels and ground-truth masks."""

    images: np.ndarray   # (N, H, W, 3) uint8 RGB
    labels: np.ndarray   # (N,) int64, index into class_names
    masks: np.ndarray    # (N, H, W) bool: exactly the visible object pixels
    boxes: np.ndarray    # (N, 4) int32 x0, y0, x1, y1 of the visible mask (x1, y1 exclusive)
    class_names: tuple[str, ...]
    seed: int

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx) -> "Scenes":
        idx = np.asarray(idx) if not isinstance(idx, slice) else idx
        return Scenes(self.images[idx], self.labels[idx], self.masks[idx], self.boxes[idx], self.class_names,
                      self.seed)


# ---------------------------------------------------------------------------------------------
# Shapes: outlines in unit coordinates (outer radius 1), as lists of (K, 2) polygons; the second
# and later polygons of "ring" and "crescent" are holes / bites cut out of the first.
# ---------------------------------------------------------------------------------------------

def _regular(k: int, phase: float = -math.pi / 2) -> np.ndarray:
    t = phase + np.arange(k) * 2 * math.pi / k
    return np.stack([np.cos(t), np.sin(t)], axis=1)


def _circle(r: float = 1.0, cx: float = 0.0, cy: float = 0.0, k: int = 64) -> np.ndarray:
    t = np.arange(k) * 2 * math.pi / k
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    t = -math.pi / 2 + np.arange(2 * points) * math.pi / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _cross(arm: float = 0.34) -> np.ndarray:
    a = arm
    return np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1], [-a, a],
                     [-1, a], [-1, -a], [-a, -a]], dtype=float) / math.hypot(1, a)


def _arrow() -> np.ndarray:
    pts = np.array([[-1.0, -0.22], [0.15, -0.22], [0.15, -0.62], [1.0, 0.0], [0.15, 0.62], [0.15, 0.22],
                    [-1.0, 0.22]])
    return pts / np.abs(pts).max(axis=0)[0]


def _heart(k: int = 72) -> np.ndarray:
    t = np.arange(k) * 2 * math.pi / k
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    pts = np.stack([x, y], axis=1)
    pts -= (pts.max(axis=0) + pts.min(axis=0)) / 2
    return pts / np.linalg.norm(pts, axis=1).max()


SHAPES: dict[str, list[np.ndarray]] = {
    "circle": [_circle()],
    "ring": [_circle(), _circle(0.56)],
    "triangle": [_regular(3)],
    "square": [_regular(4, math.pi / 4)],
    "pentagon": [_regular(5)],
    "hexagon": [_regular(6, 0.0)],
    "star": [_star()],
    "cross": [_cross()],
    "crescent": [_circle(), _circle(0.82, 0.42, -0.12)],
    "arrow": [_arrow()],
    "heart": [_heart()],
}


def shape_mask(class_name: str, shape: tuple[int, int], center: tuple[float, float], diameter: float,
               angle_deg: float) -> np.ndarray:
    """Boolean mask of one object drawn without anti-aliasing (so drawn pixels == mask exactly)."""
    outlines = SHAPES[class_name]
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    canvas = np.zeros(shape, np.uint8)
    for i, outline in enumerate(outlines):
        pts = outline @ rot.T * (diameter / 2) + np.asarray(center)
        poly = np.round(pts * 16).astype(np.int32)  # 4 fractional bits: sub-pixel accurate polygon edges
        cv2.fillPoly(canvas, [poly], 1 if i == 0 else 0, lineType=cv2.LINE_8, shift=4)
    return canvas.astype(bool)


def draw_object(canvas: np.ndarray, class_name: str, center: tuple[float, float], diameter: float,
                angle_deg: float, fill: np.ndarray | tuple) -> np.ndarray:
    """Paint an object onto ``canvas`` (in place) with a flat colour or an (H, W, 3) texture; returns its mask."""
    mask = shape_mask(class_name, canvas.shape[:2], center, diameter, angle_deg)
    fill_arr = np.asarray(fill, dtype=np.uint8)
    canvas[mask] = fill_arr[mask] if fill_arr.ndim == 3 else fill_arr
    return mask


# ---------------------------------------------------------------------------------------------
# Backgrounds
# ---------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    """The bundled scikit-image photographs as RGB uint8, loaded once per process."""
    import skimage
    from PIL import Image

    folder = Path(skimage.__file__).resolve().parent / "data"
    out = []
    for name in PHOTOS:
        with Image.open(folder / name) as im:
            out.append(np.asarray(im.convert("RGB")))
    return tuple(out)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int = 3) -> np.ndarray:
    grid = rng.random((cells, cells, channels)).astype(np.float32)
    return cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC).reshape(size, size, channels)


def _photo_background(rng: np.random.Generator, size: int) -> np.ndarray:
    photo = _photos()[int(rng.integers(len(_photos())))]
    h, w = photo.shape[:2]
    side = int(rng.integers(max(24, min(h, w) // 6), min(h, w) + 1))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = cv2.resize(photo[y:y + side, x:x + side], (size, size), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    img = crop.astype(np.float32)
    if np.ptp(img.reshape(-1, 3), axis=0).max() < 1 or rng.random() < 0.3:  # grey photos get a tint
        img = _luminance(img)[..., None] * (0.6 + 0.4 * rng.random(3)).astype(np.float32)
    flat = rng.uniform(40, 215, 3).astype(np.float32)
    keep = rng.uniform(0.35, 0.6)  # lower the photo's contrast so the object stays the salient thing
    img = keep * img + (1 - keep) * flat
    return cv2.GaussianBlur(img, (3, 3), 0.8)


def _procedural_background(rng: np.random.Generator, size: int) -> np.ndarray:
    kind = int(rng.integers(4))
    base = rng.uniform(40, 215, 3).astype(np.float32)
    amp = rng.uniform(20, 55)
    if kind == 0:  # smooth colour noise
        img = base + (_smooth_noise(rng, size, int(rng.integers(3, 9))) - 0.5) * 2 * amp
    elif kind == 1:  # linear gradient between two colours
        other = rng.uniform(40, 215, 3).astype(np.float32)
        a = rng.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
        t = np.clip((np.cos(a) * xx + np.sin(a) * yy + 1) / 2, 0, 1)[..., None]
        img = base * (1 - t) + other * t
    elif kind == 2:  # low-contrast plaid
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        period = rng.uniform(6, 20)
        a = rng.uniform(0, math.pi)
        u = np.cos(a) * xx + np.sin(a) * yy
        v = -np.sin(a) * xx + np.cos(a) * yy
        pattern = (np.sin(2 * math.pi * u / period) + np.sin(2 * math.pi * v / (period * 1.3))) / 4
        img = base + pattern[..., None] * amp * (0.5 + rng.random(3).astype(np.float32))
    else:  # fine grain over coarse blotches
        img = base + (_smooth_noise(rng, size, 4) - 0.5) * amp + (rng.random((size, size, 1)) - 0.5) * amp * 0.6
    return img.astype(np.float32)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    return _photo_background(rng, size) if rng.random() < 0.5 else _procedural_background(rng, size)


# ---------------------------------------------------------------------------------------------
# Object colour and texture
# ---------------------------------------------------------------------------------------------

def _fill_colour(rng: np.random.Generator, bg_luma: float) -> np.ndarray:
    """A random saturated colour whose luminance differs from the background's by at least MIN_CONTRAST."""
    hue = rng.uniform(0, 180)
    sat = rng.uniform(90, 255)
    candidates = [v for v in (rng.uniform(20, 120), rng.uniform(150, 255))]
    rng.shuffle(candidates)
    for value in candidates + [0.0, 255.0]:
        hsv = np.array([[[hue, sat, value]]], np.float32)
        rgb = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
        if abs(_luminance(rgb) - bg_luma) >= MIN_CONTRAST:
            return rgb
    return np.array([255.0, 255.0, 255.0]) if bg_luma < 128 else np.zeros(3)


def _texture(rng: np.random.Generator, size: int, colour: np.ndarray, bg_luma: float) -> np.ndarray:
    """Fill texture around ``colour``; its internal contrast stays below the object/background contrast."""
    kind = int(rng.integers(5))
    direction = 1.0 if _luminance(colour) >= bg_luma else -1.0  # vary *away* from the background
    delta = direction * rng.uniform(18, 32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if kind == 0:      # solid
        t = np.zeros((size, size), np.float32)
    elif kind == 1:    # stripes
        a = rng.uniform(0, math.pi)
        t = (np.sin((np.cos(a) * xx + np.sin(a) * yy) * 2 * math.pi / rng.uniform(3, 7)) > 0).astype(np.float32)
    elif kind == 2:    # checker
        p = int(rng.integers(2, 5))
        t = (((xx // p) + (yy // p)) % 2).astype(np.float32)
    elif kind == 3:    # dots
        p = int(rng.integers(4, 7))
        t = (((xx % p) < 2) & ((yy % p) < 2)).astype(np.float32)
    else:              # two-tone gradient
        a = rng.uniform(0, 2 * math.pi)
        t = ((np.cos(a) * xx + np.sin(a) * yy) / size + 1) / 2
    tex = colour[None, None, :] + t[..., None] * delta
    return np.clip(tex, 0, 255)


# ---------------------------------------------------------------------------------------------
# Distractors (never confusable with a class) and occluders
# ---------------------------------------------------------------------------------------------

def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _smooth_curve(rng: np.random.Generator, size: int, n_ctrl: int, spread: float) -> np.ndarray:
    start = rng.uniform(0, size, 2)
    steps = rng.normal(0, spread, (n_ctrl, 2))
    ctrl = start + np.cumsum(steps, axis=0)
    t = np.linspace(0, 1, n_ctrl)
    tt = np.linspace(0, 1, n_ctrl * 8)
    return np.stack([np.interp(tt, t, ctrl[:, 0]), np.interp(tt, t, ctrl[:, 1])], axis=1)


def _blob_polygon(rng: np.random.Generator, center: np.ndarray, radius: float) -> np.ndarray:
    """A strongly non-convex random outline: radii jump between 0.3 and 1.0 over 9-13 lobes."""
    k = int(rng.integers(9, 14))
    t = np.sort(rng.uniform(0, 2 * math.pi, k))
    r = radius * np.where(np.arange(k) % 2 == 0, rng.uniform(0.75, 1.0, k), rng.uniform(0.25, 0.45, k))
    return np.stack([center[0] + r * np.cos(t), center[1] + r * np.sin(t)], axis=1)


def _draw_distractor(rng: np.random.Generator, layer: np.ndarray, kind: int, size: int, big: bool = False) -> None:
    """Draw one distractor into ``layer`` (uint8 mask canvas, 1 = covered)."""
    if kind == 0:    # thin stroke: a short random polyline
        pts = rng.uniform(0, size, (int(rng.integers(2, 4)), 2))
        cv2.polylines(layer, [np.round(pts).astype(np.int32)], False, 1, int(rng.integers(4, 8)) if big
                      else int(rng.integers(1, 3)))
    elif kind == 1:  # scribble: a smooth wandering curve
        pts = _smooth_curve(rng, size, int(rng.integers(5, 9)), size * 0.08)
        cv2.polylines(layer, [np.round(pts).astype(np.int32)], False, 1, int(rng.integers(4, 8)) if big
                      else int(rng.integers(1, 3)))
    elif kind == 2:  # irregular blob, smaller than the smallest object unless it is an occluder
        radius = size * (rng.uniform(0.08, 0.14) if big else rng.uniform(0.015, 0.03))
        pts = _blob_polygon(rng, rng.uniform(0, size, 2), radius)
        cv2.fillPoly(layer, [np.round(pts).astype(np.int32)], 1)
    else:            # text-like mark
        text = "".join(rng.choice(list(DISTRACTOR_LETTERS), int(rng.integers(1, 4))))
        scale = rng.uniform(0.25, 0.45) * size / 128
        org = (int(rng.integers(0, size - 10)), int(rng.integers(10, size)))
        cv2.putText(layer, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, 1, 1, cv2.LINE_8)


def _paint(img: np.ndarray, layer: np.ndarray, colour: tuple[int, int, int]) -> None:
    img[layer.astype(bool)] = colour


# ---------------------------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------------------------

def label_for(seed: int, index: int) -> int:
    """Labels cycle through the classes (balanced in every block of len(CLASS_NAMES)), offset per seed."""
    return (index + seed) % len(CLASS_NAMES)


@dataclass(frozen=True)
class SceneParts:
    """A scene and how it was built, so tests can check distractors and occluders directly."""

    image: np.ndarray            # (H, W, 3) uint8
    label: int
    visible: np.ndarray          # (H, W) bool: object pixels left visible
    whole: np.ndarray            # (H, W) bool: the object before occlusion
    distractors: tuple[np.ndarray, ...]  # (H, W) bool per distractor
    occluder: np.ndarray | None  # (H, W) bool, or None


def compose_scene(seed: int, index: int, size: int = IMAGE_SIZE) -> SceneParts:
    """Build scene ``index`` of data set ``seed``; every random draw comes from ``(seed, index, VERSION)``."""
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"scene size must be between {MIN_SIZE} and {MAX_SIZE} px, got {size}")
    rng = np.random.default_rng([seed, index, VERSION])
    label = label_for(seed, index)
    img = _background(rng, size)

    diameter = rng.uniform(*DIAMETER_RANGE) * size
    r = diameter / 2
    center = (rng.uniform(r + 1, size - r - 2), rng.uniform(r + 1, size - r - 2))
    angle = rng.uniform(0, 360)
    mask = shape_mask(CLASS_NAMES[label], (size, size), center, diameter, angle)

    # distractors: anywhere except on (or touching) the object
    keep_out = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    distractors: list[np.ndarray] = []
    attempts = 0
    wanted = int(rng.integers(1, 5))
    while len(distractors) < wanted and attempts < 12:
        attempts += 1
        layer = np.zeros((size, size), np.uint8)
        _draw_distractor(rng, layer, int(rng.integers(4)), size)
        if layer.any() and not (layer.astype(bool) & keep_out).any():
            _paint(img, layer, _random_colour(rng))
            distractors.append(layer.astype(bool))

    bg_luma = float(_luminance(img[mask]).mean()) if mask.any() else 128.0
    colour = _fill_colour(rng, bg_luma)
    img[mask] = _texture(rng, size, colour, bg_luma)[mask]

    visible, occluder = mask, None
    if rng.random() < OCCLUSION_PROB:
        area = mask.sum()
        for _ in range(20):
            layer = np.zeros((size, size), np.uint8)
            kind = int(rng.choice([0, 2]))  # a thick stroke or a blob
            _draw_distractor(rng, layer, kind, size, big=True)
            covered = (layer.astype(bool) & mask).sum() / max(1, area)
            if OCCLUSION_RANGE[0] <= covered <= OCCLUSION_RANGE[1]:
                _paint(img, layer, _random_colour(rng))
                occluder = layer.astype(bool)
                visible = mask & ~occluder
                break
    image = np.clip(img, 0, 255).astype(np.uint8)
    return SceneParts(image, label, visible, mask, tuple(distractors), occluder)


def render_scene(seed: int, index: int, size: int = IMAGE_SIZE) -> tuple[np.ndarray, int, np.ndarray]:
    """Scene ``index`` of data set ``seed``: (image (H,W,3) uint8, label, visible mask (H,W) bool)."""
    parts = compose_scene(seed, index, size)
    return parts.image, parts.label, parts.visible


def _box(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return np.zeros(4, np.int32)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.int32)


def _render_range(args: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    seed, start, stop, size = args
    images = np.empty((stop - start, size, size, 3), np.uint8)
    labels = np.empty(stop - start, np.int64)
    masks = np.empty((stop - start, size, size), bool)
    for j, i in enumerate(range(start, stop)):
        images[j], labels[j], masks[j] = render_scene(seed, i, size)
    return images, labels, masks


def generate(n: int, seed: int, size: int = IMAGE_SIZE, *, progress: bool = False, workers: int | None = None) -> Scenes:
    """``n`` scenes of data set ``seed``; ``workers`` > 1 renders in parallel with identical results."""
    if n < 0:
        raise ValueError("n must be >= 0")
    workers = workers if workers is not None else (min(2, os.cpu_count() or 1) if n >= 2000 else 1)
    chunk = 250
    ranges = [(seed, s, min(n, s + chunk), size) for s in range(0, n, chunk)]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc=f"scenes (seed {seed})", unit="scene", dynamic_ncols=True)
    parts = []
    if workers > 1 and len(ranges) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for part in pool.map(_render_range, ranges):
                parts.append(part)
                if bar:
                    bar.update(len(part[1]))
    else:
        for r in ranges:
            parts.append(_render_range(r))
            if bar:
                bar.update(len(parts[-1][1]))
    if bar:
        bar.close()
    if parts:
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        masks = np.concatenate([p[2] for p in parts])
    else:
        images = np.empty((0, size, size, 3), np.uint8)
        labels = np.empty(0, np.int64)
        masks = np.empty((0, size, size), bool)
    boxes = np.stack([_box(m) for m in masks]) if n else np.empty((0, 4), np.int32)
    return Scenes(images, labels, masks, boxes, CLASS_NAMES, seed)
