"""The one request path the web page, its API and the command line share.

``run(request)`` decodes the upload, compares the chosen models, renders the grid, scores localisation
when a mask is known, and returns plain data (:class:`PageResult`). The Gradio handlers in
:mod:`attnviz.app.web.handlers` and the batch command in :mod:`attnviz.app.batch` only translate inputs and outputs.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Sequence

import numpy as np

from attnviz.app import render
from attnviz.app.report import prediction_rows, report_dict
from attnviz.core import methods as catalogue
from attnviz.core.methods import DEFAULT_METHODS, check_methods
from attnviz.core.specs import ModelSpec
from attnviz.data.examples import EXAMPLES_DIR
from attnviz.data.images import ImageSource, decode_image, image_notes, load_mask
from attnviz.errors import AttnvizError, LimitExceededError
from attnviz.metrics.localisation import box_mask, score_comparison
from attnviz.results import Comparison
from attnviz.zoo import registry as zoo

if TYPE_CHECKING:
    from attnviz.core.engine import ProgressFn

# One request with all 13 bundled models (Grad-CAM + Grad-CAM++) took 0.5-14 s warm (medians 2.4-7.5 s) on
# 2 busy shared cores (benchmarks/compare_all.py, BENCHMARKS.md), far inside REQUEST_TIMEOUT_S; 16 leaves
# room for the bundled ViT and a few more.
MAX_MODELS_PER_REQUEST = int(os.environ.get("ATTNVIZ_MAX_MODELS", "16"))
MAX_SLOW_MODELS = int(os.environ.get("ATTNVIZ_MAX_SLOW_MODELS", "2"))
REQUEST_TIMEOUT_S = float(os.environ.get("ATTNVIZ_REQUEST_TIMEOUT_S", "300"))

# Shown with the results (page: #ood-note; CLI and API: the report's "warnings") when a bundled-zoo model
# sees an input that is not a benchmark scene. The class list is the bundled model cards' (a test checks).
OOD_NOTE = ("The bundled models know only 11 drawn shapes (circle, ring, triangle, square, pentagon, hexagon, "
            "star, cross, crescent, arrow, heart) on synthetic scenes. This input is not such a scene, so their "
            "answer is always one of these shapes and its percentage says nothing about what the picture shows. "
            "Their heatmaps still show which shape-like parts (outlines, corners, round or pointed blobs, strong "
            "contrast) drove that answer. For photos, use ImageNet models (`attnviz weights download --set "
            "imagenet`; a running page sees them after a restart) or your own checkpoint (`--arch` and "
            "`--checkpoint` on the command line, \"Your own checkpoint\" on the page).")


@dataclass
class Request:
    image: ImageSource
    models: Sequence[str | ModelSpec]                # registry names, or specs (a page session's checkpoints)
    methods: Sequence[str] = DEFAULT_METHODS
    target: str | int | None = None
    layer: str | Sequence[str] | None = None        # several names: fused layers
    opacity: float = 0.5
    shared_scale: bool = False
    cmap: str = "jet"
    box: tuple[int, int, int, int] | None = None   # (x0, y0, x1, y1) in upload pixels
    mask: np.ndarray | None = None                 # explicit ground-truth mask (CLI --mask)
    source: str = ""
    device: str | None = None                      # None: ATTNVIZ_DEVICE, else "auto" (attnviz.core.devices)
    amp: bool = False                              # float16 autocast (CUDA only; float32 elsewhere)
    contrast: str | int | None = None              # "target versus this class"
    eigen_smooth: bool = False
    aug_smooth: bool = False
    refine: bool = False                           # RefineCAM: the layers' maps multiplied
    sess: int = 0                                  # SESS: scales (0: off)


@dataclass
class PageResult:
    comparison: Comparison
    grid: np.ndarray
    predictions: list[dict]
    scores: dict[str, dict[str, dict[str, float]]]
    report: dict
    mask_source: str = ""                           # "benchmark scene", "drawn box", "mask file", ""
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)   # about the whole result, e.g. [OOD_NOTE]


def image_digest(image: np.ndarray) -> str:
    """Content hash of decoded pixels: recognises a bundled scene however it was uploaded."""
    return hashlib.sha256(np.ascontiguousarray(image).tobytes() + str(image.shape).encode()).hexdigest()


@lru_cache(maxsize=1)
def known_scene_masks() -> dict[str, np.ndarray]:
    """Masks of the bundled example scenes, keyed by the decoded image's digest."""
    out: dict[str, np.ndarray] = {}
    if not EXAMPLES_DIR.is_dir():
        return out
    for mask_path in sorted(EXAMPLES_DIR.glob("*_mask.png")):
        image_path = mask_path.with_name(mask_path.name.replace("_mask.png", ".png"))
        if image_path.is_file():
            out[image_digest(decode_image(image_path))] = load_mask(mask_path)
    return out


def resolve_specs(models: Sequence[str | ModelSpec]) -> list[ModelSpec]:
    """Specs for names (registry) and specs (kept as they are); an unknown name is a readable error."""
    return [m if isinstance(m, ModelSpec) else zoo.get_spec(m) for m in models]


def shared_layers(specs: Sequence[ModelSpec]) -> list[str]:
    """CAM layers every one of ``specs`` offers, in the first spec's order (the page's layer choices)."""
    if not specs:
        return []
    common = set(specs[0].layers).intersection(*(s.layers for s in specs[1:]))
    return [layer for layer in specs[0].layers if layer in common]


def out_of_domain_warnings(specs: Sequence[ModelSpec], benchmark_input: bool) -> list[str]:
    """[OOD_NOTE] when a bundled-zoo model is shown something other than a benchmark scene."""
    return [OOD_NOTE] if not benchmark_input and any(s.source == "bundled zoo" for s in specs) else []


def grid_cells(comparison: Comparison, *, opacity: float = 0.5, shared_scale: bool = False, cmap: str = "jet",
               dark: bool = False) -> render.GridCells:
    """Every cell of a stored comparison's grid (with the "vs baseline" column when a baseline row is there):
    display settings change the pictures, no model runs."""
    if cmap not in render.COLORMAPS:
        raise AttnvizError(f"Unknown colour map {cmap!r}; choose from {', '.join(render.COLORMAPS)}.")
    extra = render.vs_baseline_column(comparison)  # "what attention changed", when a baseline row is there
    return render.grid_cells(comparison, opacity=float(opacity), cmap=cmap, shared_scale=shared_scale,
                             palette=render.DARK if dark else render.LIGHT, extra_columns=[extra] if extra else [])


def render_grid(comparison: Comparison, *, opacity: float = 0.5, shared_scale: bool = False, cmap: str = "jet",
                dark: bool = False) -> np.ndarray:
    """The side-by-side grid of a stored comparison as one picture (the PNG of the CLI and the downloads)."""
    return render.compose(grid_cells(comparison, opacity=opacity, shared_scale=shared_scale, cmap=cmap, dark=dark))


def check_limits(models: Sequence[str | ModelSpec], methods: Sequence[str]) -> None:
    if len(models) > MAX_MODELS_PER_REQUEST:  # read at call time: tests and the page may lower it
        raise LimitExceededError(f"{len(models)} models were selected; the limit is {MAX_MODELS_PER_REQUEST} "
                                 f"per request.")
    slow = [m for m in methods if catalogue.get(m).kind == catalogue.SLOW]
    if slow and len(models) > MAX_SLOW_MODELS:
        raise LimitExceededError(f"{', '.join(slow)} run hundreds of forward passes per model; choose at most "
                                 f"{MAX_SLOW_MODELS} models with them, or drop them.")


def compare(*args, **kwargs) -> Comparison:
    """:func:`attnviz.api.compare`, imported by the first comparison: the engine brings torch and the networks,
    which the page does not need to answer its first request."""
    from attnviz import api

    return api.compare(*args, **kwargs)


def run(request: Request, progress: ProgressFn | None = None, comparison: Comparison | None = None) -> PageResult:
    """Decode, compare, render, score, report.

    ``comparison``: the models' rows for this request's image, already computed — the batch command runs a chunk
    of images per model pass, then finishes each image here, so its files are the page's.
    """
    models = [m for m in request.models if m]
    if not models:
        raise AttnvizError("Choose at least one model.")
    methods = check_methods(request.methods)
    check_limits(models, methods)
    specs = resolve_specs(models)
    image = decode_image(request.image) if comparison is None else comparison.image
    mask, mask_source = request.mask, "mask file" if request.mask is not None else ""
    if mask is not None and mask.shape != image.shape[:2]:
        raise AttnvizError(f"The mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                           f"{image.shape[1]}x{image.shape[0]}.")
    if mask is None and request.box is not None:
        mask, mask_source = box_mask(request.box, image.shape[:2]), "drawn box"
    known = known_scene_masks().get(image_digest(image))
    # A benchmark scene: a bundled example (recognised by its pixels) or an image that comes with its mask.
    benchmark_input = known is not None or request.mask is not None
    if mask is None and known is not None:
        mask, mask_source = known, "benchmark scene"
    if comparison is None:
        comparison = compare(specs, image, methods, request.target, request.layer, progress=progress, mask=mask,
                             timeout_s=REQUEST_TIMEOUT_S, device=request.device, contrast=request.contrast,
                             eigen_smooth=request.eigen_smooth, aug_smooth=request.aug_smooth, amp=request.amp,
                             refine=request.refine, sess=request.sess)
    else:
        comparison.mask = mask
    grid = render_grid(comparison, opacity=request.opacity, cmap=request.cmap, shared_scale=request.shared_scale)
    scores = score_comparison(comparison)
    warnings = out_of_domain_warnings(specs, benchmark_input)
    report = report_dict(comparison, scores, request.source, warnings)
    report["mask_source"] = mask_source
    notes = sorted({w for e in comparison.explanations for w in e.warnings}) + image_notes(request.image, image)
    return PageResult(comparison, grid, prediction_rows(comparison), scores, report, mask_source, notes, warnings)
