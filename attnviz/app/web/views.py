"""What the page shows for a result: the grid as responsive HTML, the tables, the status line, the attention
panel's pictures. Plain functions of the stored comparison; nothing here runs a model."""
from __future__ import annotations

import base64
import html
from typing import Sequence

import numpy as np
import pandas as pd

from attnviz.app import pipeline, render
from attnviz.app.report import dead_gate
from attnviz.core import methods as catalogue
from attnviz.errors import AttnvizError
from attnviz.results import Comparison

QUERY_VIEW_PX = 256
PREDICTION_COLUMNS = ["model", "rank", "class", "probability", "target"]   # the API's table
AGREEMENT_COLUMNS = ["model", "map", "Spearman", "top-20 % IoU", "peak distance", "same target"]
SCORE_COLUMNS = ["model", "map", "pointing game", "energy on object", "IoU"]
PAGE_PREDICTION_COLUMNS = ["model", "top-1", "probability", "next four", "target"]
CELL_JPEG_QUALITY = 88


# ---- tables ----------------------------------------------------------------------------------

def html_table(columns: Sequence[str], rows: Sequence[Sequence[str]], caption: str = "") -> str:
    """A plain table; on a narrow screen each row becomes a block with every value under its column's name."""
    head = "".join(f"<th scope='col'>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td data-label='{html.escape(c, quote=True)}'>{html.escape(str(v))}</td>"
                                    for c, v in zip(columns, row)) + "</tr>" for row in rows)
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table class='av-table'>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _names(result: pipeline.PageResult) -> dict[str, str]:
    return {e.model: e.display_name for e in result.comparison.explanations}


def predictions_frame(result: pipeline.PageResult) -> pd.DataFrame:
    """The API's predictions table: one row per model and rank."""
    rows = [{"model": r["model"], "rank": r["rank"], "class": r["label"],
             "probability": f"{r['probability']:.1%}", "target": r["target"]} for r in result.predictions]
    return pd.DataFrame(rows, columns=PREDICTION_COLUMNS)


def predictions_html(result: pipeline.PageResult) -> str:
    """Top-5 per model, one row each, under the models' display names (as in the grid)."""
    rows = []
    for e in result.comparison.explanations:
        top, rest = e.predictions[0], e.predictions[1:]
        rows.append([e.display_name, top.label, f"{top.probability:.1%}",
                     ", ".join(f"{p.label} {p.probability:.0%}" for p in rest),
                     e.target.label + (f" vs {e.contrast.label}" if e.contrast is not None else "")])
    return html_table(PAGE_PREDICTION_COLUMNS, rows, "Top-5 predictions")


def score_rows(result: pipeline.PageResult) -> list[list[str]]:
    names = _names(result)
    return [[names.get(model, model), catalogue.title(name), "hit" if s["pointing_game"] else "miss",
             f"{s['energy_pointing_game']:.1%}", f"{s['iou']:.2f}"]
            for model, per_map in result.scores.items() for name, s in per_map.items()]


def scores_html(result: pipeline.PageResult) -> str:
    rows = score_rows(result)
    if not rows:
        return ""
    return html_table(SCORE_COLUMNS, rows, f"Localisation scores against the {result.mask_source or 'mask'} "
                                           "(pointing game, energy on object, IoU)")


def agreement_rows(result: pipeline.PageResult) -> list[list[str]]:
    """What attention changed: each variant's map against the baseline row's (same method, target and layer)."""
    names = _names(result)
    rows = [[names.get(model, model), catalogue.title(method), f"{a['spearman']:.2f}", f"{a['top20_iou']:.2f}",
             f"{a['peak_distance']:.0f} px ({a['peak_distance_diag_pct']:.0f} % of the diagonal)",
             "yes" if a["same_target"] else "no (each model's top-1 differs)"]
            for (model, method), a in result.comparison.agreement.items()]
    rows += [[names.get(model, model), "—", "—", "—", "—", "not compared: " + why.replace("\n", " ")]
             for model, why in result.comparison.not_compared.items()]
    return rows


def agreement_frame(result: pipeline.PageResult) -> pd.DataFrame:
    return pd.DataFrame(agreement_rows(result), columns=AGREEMENT_COLUMNS)


def agreement_html(result: pipeline.PageResult) -> str:
    rows = agreement_rows(result)
    if not rows:
        return ""
    return html_table(AGREEMENT_COLUMNS, rows, "What attention changed: each variant's map vs the baseline's (same "
                                               "method, target and layer; the grid's last column shows the "
                                               "difference)")


# ---- the grid -----------------------------------------------------------------------------------

def _data_uri(rgb: np.ndarray, fmt: str = ".jpg") -> str:
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, CELL_JPEG_QUALITY] if fmt == ".jpg" else []
    ok, buf = cv2.imencode(fmt, cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR), params)
    mime = "jpeg" if fmt == ".jpg" else "png"
    return f"data:image/{mime};base64," + base64.b64encode(buf.tobytes()).decode("ascii") if ok else ""


def _label_html(lines: Sequence[str], name: str) -> str:
    rest = "".join(f"<br>{html.escape(line)}" for line in lines[1:])
    return f"<th scope='row' class='av-label'><b>{html.escape(name)}</b>{rest}</th>"


def _tooltip(text: str | None) -> str:
    return f" title='{html.escape(text, quote=True)}'" if text else ""


def grid_html(cells: render.GridCells) -> str:
    """The grid as a table scaled to the frame: sticky column titles, text labels (they follow the page's
    theme), a click on any picture toggles 1:1 size; below ~700 px each model becomes a card."""
    cols = "<colgroup><col class='av-label-col'>" + "<col>" * len(cells.columns) + "</colgroup>"
    head = "<th scope='col'>model</th>" + "".join(
        f"<th scope='col'>{html.escape(t)}<small>{html.escape(n)}</small></th>" for t, n in cells.columns)
    body = []
    for row in cells.rows:
        tds = "".join(
            f"<td><span class='av-cell-title'>{html.escape(t)} · {html.escape(n)}</span>"
            f"<img src='{_data_uri(img)}' width='{img.shape[1]}' height='{img.shape[0]}' "
            f"alt='{html.escape(row.display_name, quote=True)}: {html.escape(t, quote=True)}"
            f"{html.escape(' — ' + row.empty[c], quote=True) if c in row.empty else ''}'"
            f"{_tooltip(row.empty.get(c))}></td>"
            for c, ((t, n), img) in enumerate(zip(cells.columns, row.cells)))
        body.append(f"<tr data-model='{html.escape(row.model, quote=True)}'>{_label_html(row.label, row.display_name)}"
                    f"{tds}</tr>")
    bar = (f"<img src='{_data_uri(cells.colorbar, '.png')}' alt='shared colour scale' width='64' "
           f"title='{html.escape(' '.join(render.bar_title(cells)), quote=True)}'>"
           if cells.colorbar is not None else "")
    legend = "".join(f"<li>{html.escape(line)}</li>" for line in cells.legend)
    return (f"<div class='av-grid'><div class='av-scroll'><table class='av-cells'>{cols}<thead><tr>{head}</tr>"
            f"</thead><tbody>{''.join(body)}</tbody></table></div><div class='av-legend'>{bar}"
            f"<ul>{legend}<li>Where the grid is shrunk to fit the frame, click a picture to see it at full size "
            "(1:1); click again to fit it. The grid PNG is in the downloads.</li></ul></div></div>")


def page_grid(comparison: Comparison, opacity: float, shared: bool, cmap: str, dark: bool) -> str:
    return grid_html(pipeline.grid_cells(comparison, opacity=opacity, shared_scale=shared, cmap=cmap, dark=dark))


# ---- status ---------------------------------------------------------------------------------------

def result_dead_gates(result: pipeline.PageResult, model: str) -> list[dict]:
    return next((m["dead_gates"] for m in result.report["models"] if m["model"] == model), [])


def folded_note(text: str) -> str:
    """A long note as its first sentence, the rest one click away (on a phone the whole note filled the first
    screen of results)."""
    lead, sep, rest = text.partition(". ")
    if not rest:
        return text
    return f"{lead}.\n\n<details><summary>Why, and what to use instead</summary>\n\n{rest}\n\n</details>"


def plural(n: int, noun: str) -> str:
    """ "1 model", "2 models"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def status_markdown(result: pipeline.PageResult) -> str:
    c = result.comparison
    times = ", ".join(f"{e.display_name} {e.timings.get('total', 0):.0f} ms" for e in c.explanations)
    lines = [f"**{plural(len(c.explanations), 'model')}** in {c.timings.get('total', 0) / 1000:.1f} s ({times})."]
    if result.mask_source:
        lines.append(f"Localisation scored against the **{result.mask_source}** (green contour in the input column).")
    lines.extend(f"Note: {n}" for n in result.notes)
    dead = [f"{e.display_name} {d['block']}" for e in c.explanations for d in result_dead_gates(result, e.model)]
    if dead:
        lines.append(f"Dead gates (one constant weight on this image, no attention): {', '.join(dead)}.")
    return "\n\n".join(lines)


# ---- the attention panel -------------------------------------------------------------------------

def explanation_of(comparison: Comparison | None, model: str | None):
    if comparison is None or not model:
        return None
    return next((e for e in comparison.explanations if e.model == model), None)


def gallery_caption(amap) -> str:
    """Block and map, the dead-gate label when the gate is constant, then how the map was derived."""
    dead = dead_gate(amap)
    return f"{amap.label}{' — ' + dead.upper() if dead else ''} — {amap.note}"


CONCEPTS = "concepts"
CONCEPT_COUNT = 5


def concept_maps(expl) -> list:
    """Deep Feature Factorization of one model's view of the image as displayable maps (one per concept, titled
    with the classes it scores). Computed on demand: one forward of that model, NMF on the host."""
    from attnviz.api import concepts
    from attnviz.results import AttentionMap

    found = concepts(expl.model, [expl.image], CONCEPT_COUNT)
    out = []
    for i in range(found.heatmaps.shape[1]):
        top = ", ".join(f"{name} {p:.0%}" for name, p in found.top_classes(i))
        out.append(AttentionMap(found.layer, found.layer, "concepts", f"concept {i + 1}" + (f": {top}" if top else ""),
                                "spatial", found.heatmaps[0, i],
                                note=f"NMF of {found.layer}'s activations into {CONCEPT_COUNT} concepts (Deep "
                                     "Feature Factorization); the classes: the classifier on the concept"))
    return out


def attention_gallery(comparison: Comparison | None, model: str | None, scope: str, opacity: float = 0.5,
                      cmap: str = "jet", query: list[float] | None = None,
                      dark: bool = False) -> list[tuple[np.ndarray, str]]:
    """Rendered attention maps of one model: stage summaries, or every block's maps.

    Query-based maps (Non-local, criss-cross, DANet, self-attention) are drawn for ``query`` (x, y
    fractions of the image; default: the Grad-CAM peak). Nothing is re-run: the maps are in the state.
    """
    expl = explanation_of(comparison, model)
    if expl is None:
        return []
    q = tuple(query) if query else render.cam_peak(expl)
    if scope == CONCEPTS:
        try:
            maps = concept_maps(expl) if expl.image is not None else []
        except AttnvizError:   # a model the registry cannot load again (e.g. an expired upload): nothing to show
            maps = []
    else:
        maps = list(expl.stage_summaries) if scope == "stage summaries" else list(expl.attention_maps)
    if scope == "stage summaries":  # query maps, transforms and dead gates have no stage mean; show them anyway
        maps += [m for m in expl.attention_maps if m.layout in ("affinity", "affine") and
                 m.name in ("mean of heads", "2-step reach", "affinity", "position attention", "sampled region")]
        maps += [m for m in expl.attention_maps if dead_gate(m)]
    palette = render.DARK if dark else render.LIGHT
    return [(render.attention_map_image(m, expl.image, 200, opacity, cmap, query=q, palette=palette),
             gallery_caption(m)) for m in maps]


def query_view(comparison: Comparison | None, model: str | None, query: list[float] | None):
    """The model's view with the current query point marked (click it to move the query)."""
    expl = explanation_of(comparison, model)
    if expl is None or expl.image is None:
        return None
    q = tuple(query) if query else render.cam_peak(expl)
    return render.query_marker_image(expl.image, q, QUERY_VIEW_PX)
