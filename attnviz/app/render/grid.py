"""The side-by-side grid: rows = models; columns = input, one overlay per CAM method, the attention module's own
map, "vs baseline" (+ a colour bar on a shared scale), with a legend under it.

:func:`grid_cells` draws every cell and says what each column and row is; :func:`compose` lays them out as one
picture (the PNG the command line and the downloads write). The page builds its responsive grid from the same
cells, so both show the same pictures.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from attnviz.app.render.attention import GATE_LEGEND, attention_cell
from attnviz.app.render.draw import (
    COLORBAR_W,
    LIGHT,
    Palette,
    band_top,
    colorbar,
    diverging_colours,
    draw_mask_contour,
    fit_text,
    overlay,
    resize,
    square,
    text_image,
)
from attnviz.core.methods import title as method_title
from attnviz.results import Comparison, Explanation

HEADER_H = 40          # height of the column-title row (title + note)
LABEL_W = 190          # width of the row-label column
GAP = 4                # padding between cells
LEGEND_FONT = 12
LEGEND_LINE = LEGEND_FONT + 5

# An extra grid column: its title and how to draw one row's cell (explanation, comparison, cell size, palette).
ExtraColumn = tuple[str, Callable[[Explanation, Comparison, int, Palette], np.ndarray]]


@dataclass
class GridRow:
    model: str
    display_name: str
    label: list[str]                  # the row label's lines (name, top-1, target, compared with, layer, smoothing)
    cells: list[np.ndarray]           # one (cell, cell, 3) picture per column
    empty: dict[int, str] = field(default_factory=dict)   # column -> why that cell has no map ("n/a: ...")


@dataclass
class GridCells:
    columns: list[tuple[str, str]]    # (title, note) per column
    rows: list[GridRow]
    legend: list[str]                 # what the colours mean, one sentence per line
    colorbar: np.ndarray | None = None                # the shared scale's bar (shared colour scale only)
    cell: int = 160
    palette: Palette = field(default_factory=lambda: LIGHT)
    bar_methods: int = 1                              # how many columns the shared bar serves (its title says so)


def shared_vmax(comparison: Comparison, method: str) -> float:
    """The largest raw CAM value of ``method`` over every model: one colour scale for the whole column."""
    top = max((float(e.cams[method].raw.max()) for e in comparison.explanations if method in e.cams), default=0.0)
    return top if top > 0 else 1.0


def cam_cell(expl: Explanation, method: str, *, opacity: float = 0.5, cmap: str = "jet",
             shared_vmax: float | None = None, size: int | None = None) -> np.ndarray:
    """One CAM overlaid on the model's view; per-map [0, 1] scale, or raw values on a shared scale."""
    cam = expl.cams[method]
    base = expl.image if expl.image is not None else np.zeros(cam.heatmap.shape + (3,), np.uint8)
    out = overlay(base, cam.heatmap, opacity, cmap) if shared_vmax is None else \
        overlay(base, cam.raw, opacity, cmap, 0.0, shared_vmax)
    return square(out, size) if size else out


def difference_cell(diff: np.ndarray, view: np.ndarray | None, size: int, numbers: dict[str, float] | None,
                    palette: Palette = LIGHT) -> np.ndarray:
    """A variant-minus-baseline map over the model's view (faint), as large as the grid's other cells, with its
    agreement numbers on a band across its bottom (the map shows through it faintly)."""
    import cv2

    colour = diverging_colours(resize(np.asarray(diff, np.float32), (size, size)), _centre(palette))
    if view is not None:
        grey = cv2.cvtColor(cv2.cvtColor(square(view, size), cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
        colour = cv2.addWeighted(grey, 0.25, colour, 0.75, 0.0)
    if not numbers:
        return colour
    strip = 18
    caption = (f"rho {numbers['spearman']:.2f}  IoU {numbers['top20_iou']:.2f}  "
               f"d {numbers['peak_distance_diag_pct']:.0f}%")
    band = text_image([caption], size, strip, 11, palette.paper, palette.ink, center=True, top=band_top(strip, 11))
    out = colour.copy()
    out[size - strip:] = cv2.addWeighted(band, 0.8, colour[size - strip:], 0.2, 0.0)
    return out


def _centre(palette: Palette) -> tuple[int, int, int] | None:
    """The diverging scale's "no change" colour: the standard near-white, or the dark page's muted paper."""
    return None if palette == LIGHT else palette.muted_paper


def _reference_legend(cell: int, palette: Palette) -> np.ndarray:
    legend = text_image(["reference row", "", "variant minus baseline", "(both scaled to [0, 1])", "",
                         "red: the variant looks more", "blue: the baseline looks more"], cell, cell - 22, 11,
                        palette.muted_paper, palette.muted_ink, center=True)
    bar = diverging_colours(np.tile(np.linspace(-1, 1, cell - 16), (14, 1)), _centre(palette))
    foot = np.empty((22, cell, 3), np.uint8)
    foot[:] = palette.muted_paper
    foot[2:16, 8:cell - 8] = bar
    return np.concatenate([legend, foot], axis=0)


def vs_baseline_column(comparison: Comparison, method: str | None = None) -> ExtraColumn | None:
    """The "vs baseline" column: each variant's map of ``method`` (default: the first) minus the baseline row's.
    None when the comparison has no attention-free row to compare with, or nothing else. A model whose class
    list differs from the baseline's gets no difference (its cell says why)."""
    from attnviz.metrics.agreement import baseline_row, difference_map

    base = baseline_row(comparison.explanations)
    if method is None and base is not None:   # the first method the baseline computes (not a ViT's rollout)
        method = next((m for m in comparison.methods if m in base.cams), None)
    if base is None or len(comparison.explanations) < 2 or method not in base.cams:
        return None

    def draw(expl: Explanation, comp: Comparison, cell: int, palette: Palette) -> np.ndarray:
        if expl is base:  # the reference row carries the legend of the diverging scale
            return _reference_legend(cell, palette)
        why = comp.not_compared.get(expl.model)
        if why:
            return text_image(["no difference map:", *why.split("\n")], cell, cell, 11, palette.muted_paper,
                              palette.muted_ink, center=True)
        if method not in expl.cams:
            return empty_cell(expl, method, cell, palette)
        diff = difference_map(expl.cams[method].heatmap, base.cams[method].heatmap)
        return difference_cell(diff, expl.image, cell, comp.agreement.get((expl.model, method)), palette)

    return (f"vs baseline: {method_title(method)}", draw)


def empty_cell(expl: Explanation, method: str, cell: int, palette: Palette = LIGHT) -> np.ndarray:
    """The cell of a method this row has no map of: "n/a" and why (rollout on a CNN), or "not computed"."""
    why = expl.unavailable.get(method)
    if not why:
        return text_image(["not computed"], cell, cell, 12, palette.muted_paper, palette.muted_ink, center=True)
    return text_image(["n/a", "", *_wrapped([why], cell, 11)], cell, cell, 11, palette.muted_paper,
                      palette.muted_ink, center=True)


def empty_cell_reason(expl: Explanation, method: str) -> str:
    """What :func:`empty_cell` says, as text (the page's alt text and tooltip)."""
    why = expl.unavailable.get(method)
    return f"n/a: {why}" if why else "not computed"


def input_cell(expl: Explanation, comparison: Comparison, cell: int) -> np.ndarray:
    """The model's view of the input, with the known object's outline when there is one."""
    base = expl.image if expl.image is not None else comparison.image
    first = square(base, cell)
    if comparison.mask is not None and expl.image is not None:
        from attnviz.metrics.localisation import mask_for_view

        view_mask = mask_for_view(comparison.mask, comparison.image.shape[:2], expl.image.shape[0],
                                  expl.view_resize or expl.image.shape[0])
        first = draw_mask_contour(first, view_mask)
    return first


def smoothing_of(expl: Explanation) -> str:
    """"eigen + aug", "eigen", "aug", "refine", "sess", ... or "" (pytorch-grad-cam's eigen_smooth / aug_smooth and
    its RefineCAM / SESS)."""
    kinds = [k for k in ("eigen", "aug") if expl.options.get(f"{k}_smooth")]
    return " + ".join(kinds + [k for k in ("refine", "sess") if expl.options.get(k)])


def row_label(expl: Explanation) -> list[str]:
    """Name, top-1, the explained target, the compared-with class, the layer and the smoothing of one row
    (whole lines: :func:`compose` shortens them to the label column)."""
    top = expl.top1
    lines = [expl.display_name, f"top-1: {top.label} {top.probability:.0%}",
             f"target: {expl.target.label} {expl.target.probability:.0%}"]
    if expl.contrast is not None:
        lines.append(f"compared with: {expl.contrast.label}")
    lines.append(f"layer: {expl.layer}")
    smooth = smoothing_of(expl)
    if smooth:
        lines.append(f"smoothing: {smooth}")
    return lines


def legend_lines(include_attention: bool, vs_baseline: bool, shared_scale: bool) -> list[str]:
    """What the grid's colours mean (written under the PNG and the page's grid)."""
    lines = ["CAM columns: " + ("raw values on one colour scale per method, shared by every model (each column's "
                               "range under its title; the bar on the right)." if shared_scale
                               else "each map scaled to its own 0–1 (red = that map's maximum).")]
    if include_attention:
        lines.append(f"attention module: the module's own map at the CAM layer's stage, {GATE_LEGEND} (not "
                     "scaled per map).")
        lines.append("Channel gates (SE, ECA, ...): one bar per channel, height = gate value on the 0–1 axis; "
                     "red bars = the 5 largest.")
    if vs_baseline:
        lines.append("vs baseline: variant minus baseline map; rho = Spearman, IoU = top-20 % IoU, d = peak "
                     "distance as % of the diagonal.")
    return lines


def _columns(methods: Sequence[str], include_attention: bool, extra_columns: Sequence[ExtraColumn],
             vmaxes: dict[str, float]) -> list[tuple[str, str]]:
    def scale(m: str) -> str:   # on a shared scale each column says its own top value (one bar serves them all)
        return f"shared, 0–{vmaxes[m]:.3g}" if m in vmaxes else "each map 0–1"

    return ([("input", "model's view")] + [(method_title(m), scale(m)) for m in methods] +
            ([("attention module", GATE_LEGEND)] if include_attention else []) +
            [(t.split(": ", 1)[0], t.split(": ", 1)[1] if ": " in t else "") for t, _ in extra_columns])


def grid_cells(comparison: Comparison, *, methods: Sequence[str] | None = None, opacity: float = 0.5,
               cmap: str = "jet", shared_scale: bool = False, include_attention: bool = True, cell: int = 160,
               palette: Palette = LIGHT, extra_columns: Sequence[ExtraColumn] = ()) -> GridCells:
    """Every cell of the grid, with the column titles, row labels and legend (pure: no model runs)."""
    methods = list(methods or comparison.methods)
    vmaxes = {m: shared_vmax(comparison, m) for m in methods} if shared_scale else {}
    rows = []
    for expl in comparison.explanations:
        cells = [input_cell(expl, comparison, cell)]
        why: dict[int, str] = {}
        for m in methods:
            if m not in expl.cams:
                why[len(cells)] = empty_cell_reason(expl, m)
            cells.append(cam_cell(expl, m, opacity=opacity, cmap=cmap, shared_vmax=vmaxes.get(m), size=cell)
                         if m in expl.cams else empty_cell(expl, m, cell, palette))
        if include_attention:
            cells.append(square(attention_cell(expl, cell, opacity, cmap, palette), cell))
        cells.extend(square(draw(expl, comparison, cell, palette), cell) for _, draw in extra_columns)
        rows.append(GridRow(expl.model, expl.display_name, row_label(expl), cells, why))
    bar = None
    if shared_scale and methods:   # one method: its values; several: a fraction of each column's top value
        top = vmaxes[methods[0]] if len(methods) == 1 else 1.0
        bar = colorbar(cmap, 0.0, top, cell, COLORBAR_W, palette)
    vs = any(t.startswith("vs baseline") for t, _ in extra_columns)
    return GridCells(_columns(methods, include_attention, extra_columns, vmaxes), rows,
                     legend_lines(include_attention, vs, shared_scale), bar, cell, palette, len(methods))


def _wrapped(lines: Sequence[str], width: int, size: int = LEGEND_FONT) -> list[str]:
    from attnviz.app.render.draw import drawable, font

    face = font(size)
    out: list[str] = []
    for line in lines:
        line = drawable(line, size)   # measured as it will be drawn
        current = ""
        for word in line.split(" "):
            trial = f"{current} {word}".strip()
            if current and face.getlength(trial) > width - 12:
                out.append(current)
                current = word
            else:
                current = trial
        out.append(current)
    return out


def grid_shape(n_models: int, n_methods: int, cell: int = 160, include_attention: bool = True,
               shared_scale: bool = False, extra_columns: int = 0) -> tuple[int, int]:
    """(height, width) of :func:`grid` for a layout (the legend's line count included), so callers and tests
    can rely on it."""
    cols = 1 + n_methods + (1 if include_attention else 0) + extra_columns
    width = LABEL_W + cols * (cell + GAP) + GAP + (COLORBAR_W + GAP if shared_scale else 0)
    legend = _wrapped(legend_lines(include_attention, extra_columns > 0, shared_scale), width)
    height = HEADER_H + n_models * (cell + GAP) + GAP + len(legend) * LEGEND_LINE + 8
    return height, width


def bar_title(cells: GridCells) -> list[str]:
    """The shared bar's title: its values are the column's own with one method, a fraction of each column's top
    value (written under each title) with several."""
    return ["shared"] if cells.bar_methods <= 1 else ["shared", "x col. max"]


def compose(cells: GridCells) -> np.ndarray:
    """The cells laid out as one picture: titles, row labels, cells, the colour bar, the legend."""
    cell, palette = cells.cell, cells.palette
    n_cols = len(cells.columns)
    width = LABEL_W + n_cols * (cell + GAP) + GAP + (COLORBAR_W + GAP if cells.colorbar is not None else 0)
    legend = _wrapped(cells.legend, width)
    body_h = HEADER_H + len(cells.rows) * (cell + GAP) + GAP
    canvas = np.full((body_h + len(legend) * LEGEND_LINE + 8, width, 3), palette.paper, np.uint8)
    for c, (title, note) in enumerate(cells.columns):
        x = LABEL_W + GAP + c * (cell + GAP)
        canvas[:22, x:x + cell] = text_image([fit_text(title, cell - 4, 14)], cell, 22, 14, palette.paper,
                                             palette.ink, center=True)
        canvas[22:HEADER_H, x:x + cell] = text_image([fit_text(note, cell - 4, 11)], cell, HEADER_H - 22, 11,
                                                     palette.paper, palette.muted_ink, center=True)
    for r, row in enumerate(cells.rows):
        y = HEADER_H + GAP + r * (cell + GAP)
        label = [fit_text(line, LABEL_W - 10, 13) for line in row.label]
        canvas[y:y + cell, :LABEL_W] = text_image(label, LABEL_W, cell, 13, palette.paper, palette.ink)
        for c, img in enumerate(row.cells):
            x = LABEL_W + GAP + c * (cell + GAP)
            canvas[y:y + cell, x:x + cell] = img
    if cells.colorbar is not None:
        x = width - COLORBAR_W - GAP
        h = min(cell, body_h - HEADER_H)
        canvas[HEADER_H:HEADER_H + h, x:x + COLORBAR_W] = cells.colorbar[:h]
        canvas[:HEADER_H, x:x + COLORBAR_W] = text_image(bar_title(cells), COLORBAR_W, HEADER_H, 12,
                                                         palette.paper, palette.ink, center=True)
    canvas[body_h:] = text_image(legend, width, canvas.shape[0] - body_h, LEGEND_FONT, palette.paper,
                                 palette.ink)
    return canvas


def grid(comparison: Comparison, *, methods: Sequence[str] | None = None, opacity: float = 0.5,
         cmap: str = "jet", shared_scale: bool = False, include_attention: bool = True,
         cell: int = 160, palette: Palette = LIGHT, extra_columns: Sequence[ExtraColumn] = ()) -> np.ndarray:
    """Rows = models; columns = input, one overlay per method, the module's own map, any ``extra_columns``
    (+ a colour bar on a shared scale), legend underneath. Pure: re-rendering a stored comparison runs no model."""
    return compose(grid_cells(comparison, methods=methods, opacity=opacity, cmap=cmap, shared_scale=shared_scale,
                              include_attention=include_attention, cell=cell, palette=palette,
                              extra_columns=extra_columns))
