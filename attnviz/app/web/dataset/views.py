"""What the Data set tab shows: the progress line, the table of means, CIs and paired differences, the findings,
and the "where they disagree" picks and rows. Every number is read from the job's results.json (the dict
:func:`attnviz.evaluation.run.run_eval` returns); nothing here scores anything."""
from __future__ import annotations

import html
from typing import Sequence

import numpy as np

from attnviz.app.render.attention import titled
from attnviz.app.render.draw import LIGHT, Palette, draw_mask_contour, overlay, square
from attnviz.app.render.grid import difference_cell
from attnviz.app.web.views import html_table
from attnviz.evaluation.findings import findings
from attnviz.evaluation.hooks import EvalProgress
from attnviz.evaluation.results_markdown import _title, fmt_ci
from attnviz.evaluation.scoring import REGION
from attnviz.metrics.agreement import difference_map

LOCALISATION = (("pointing_game", "PG %", True), ("energy_pointing_game", "EPG %", True), ("iou", "IoU", False))
PERTURBATION = (("deletion_auc", "Del ↓", False), ("insertion_auc", "Ins ↑", False), ("road", "ROAD ↑", False))
MARK = " ◆"          # the paired difference's CI excludes 0 (as in results.md)
ROW_CELL = 128


def _eta(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def progress_markdown(p: EvalProgress | None, models: int, label: str) -> str:
    """"48 / 100 images · model pass 3 / 5 (se) · 9.6 images/s · about 6 s left"."""
    if p is None:
        return f"Starting: loading {models} model(s) and the images of {label} …"
    fraction = p.step / max(1, p.steps)
    rate = p.images_total * fraction / p.seconds if p.seconds > 0 else 0.0
    left = p.seconds * (1 - fraction) / fraction if fraction > 0 else 0.0
    return (f"**Scoring {label}:** {p.images_done} / {p.images_total} images finished by every model · model pass "
            f"{p.step} / {p.steps} ({html.escape(p.model)}) · {rate:.1f} images/s · about {_eta(left)} left")


def done_markdown(result: dict, notes: Sequence[str] = ()) -> str:
    """"**Done:** 24 images in 19 s." or "**Stopped:** 96 of 500 images were finished by every model in 3 s; the
    table is over those.", then what was skipped and the notes."""
    stopped = result.get("stopped")
    took = f" in {result['seconds']:.0f} s"
    head = (f"**Stopped:** {stopped['images_done']} of {stopped['images_total']} images were finished by every "
            f"model{took}; the table is over those" if stopped else f"**Done:** {result['n']} images{took}")
    skipped = result.get("skipped") or []
    tail = f" · {len(skipped)} file(s) skipped (listed below and in results.md)" if skipped else ""
    return head + f"{tail}." + "".join(f"\n\n{n}" for n in notes)


def _metrics(result: dict) -> tuple:
    return LOCALISATION + (PERTURBATION if not result.get("localisation_only") else ())


def results_table(result: dict) -> str:
    """One row per model x map: each metric's mean [95 % CI] and, under it, the paired difference from the
    reference model; accuracy with its CI on a model's first row; Spearman agreement with the reference's map."""
    metrics = _metrics(result)
    ref = result.get("reference")
    columns = ["model", "map", "accuracy %"] + [label for _, label, _ in metrics] + ["Spearman vs ref."]
    rows = []
    for row in result["models"]:
        acc = {"mean": row.get("accuracy"), "ci95": row.get("accuracy_ci95"), "n": row.get("accuracy_n", 0)}
        acc_diff = (row.get("vs_baseline") or {}).get("accuracy")
        first = True
        for m, stats in row["maps"].items():
            if m == REGION:
                continue
            cells = [row["display_name"], _title(m), (fmt_ci(acc, True) + _diff(acc_diff, True)) if first else ""]
            for key, _, pct in metrics:
                diff = (row.get("vs_baseline") or {}).get(m, {}).get(key)
                cells.append(fmt_ci(stats.get(key), pct) + _diff(diff, pct))
            agree = row.get("agreement", {}).get(m, {}).get("spearman")
            cells.append(fmt_ci(agree, digits=2) if agree else ("reference" if row["model"] == ref else "–"))
            rows.append(cells)
            first = False
    caption = (f"Mean [95 % bootstrap CI] over {result['n']} images; Δ = paired difference from "
               f"{_display(result, ref)} on the same images, {MARK.strip()} where its CI excludes 0."
               if ref else f"Mean [95 % bootstrap CI] over {result['n']} images (no reference model: pick the "
                           "baseline for paired differences).")
    return f"<div class='av-dataset-table'>{html_table(columns, rows, caption)}</div>"


def _diff(d: dict | None, pct: bool) -> str:
    if not d:
        return ""
    return f" · Δ {fmt_ci(d, pct, signed=True)}" + (MARK if d.get("excludes_zero") else "")


def _display(result: dict, name: str | None) -> str:
    return next((r["display_name"] for r in result["models"] if r["model"] == name), name or "")


def findings_markdown(result: dict) -> str:
    """results.md's "What the numbers say" sentences for this run (attnviz.evaluation.findings)."""
    found = findings(result)
    if not found:
        return ("**What the numbers say:** no difference from the reference clears its 95 % CI on these "
                f"{result['n']} images (or it comes from a model with one training run: see the table).")
    return "**What the numbers say** (differences whose 95 % CI excludes 0):\n\n" + "\n".join(f"* {s}" for s in found)


def skipped_markdown(result: dict, limit: int = 20) -> str:
    skipped = result.get("skipped") or []
    if not skipped:
        return ""
    lines = [f"* `{s['image']}`" + (f" ({s['model']})" if s.get("model") else "") + f": {s['reason']}"
             for s in skipped[:limit]]
    more = [f"* … and {len(skipped) - limit} more (results.md lists them)"] if len(skipped) > limit else []
    return f"**Skipped ({len(skipped)})**\n\n" + "\n".join(lines + more)


# ---- where they disagree -------------------------------------------------------------------------------

def variants(result: dict) -> list[tuple[str, str]]:
    """(label, name) of the models compared with the reference (those with agreement values)."""
    return [(r["display_name"], r["model"]) for r in result["models"]
            if r["model"] != result.get("reference") and r["per_image"].get("agreement")]


def disagreements(result: dict, variant: str, method: str, k: int) -> list[dict]:
    """The ``k`` images where ``variant``'s ``method`` map agrees least with the reference's (lowest Spearman),
    each with its index, id, Spearman and EPG difference (variant − reference), from the per-image values."""
    rows = {r["model"]: r for r in result["models"]}
    row, ref = rows.get(variant), rows.get(result.get("reference"))
    if row is None or ref is None:
        return []
    rho = row["per_image"].get("agreement", {}).get(method, {}).get("spearman") or []
    mine = row["per_image"]["values"].get(method, {}).get("energy_pointing_game") or []
    theirs = ref["per_image"]["values"].get(method, {}).get("energy_pointing_game") or []
    picked = sorted((v, i) for i, v in enumerate(rho) if v is not None)[:k]
    out = []
    for v, i in picked:
        epg = (mine[i] - theirs[i]) if i < len(mine) and i < len(theirs) and None not in (mine[i], theirs[i]) \
            else None
        out.append({"index": i, "id": result["ids"][i], "spearman": v, "epg_difference": epg})
    return out


def disagreement_row(image: np.ndarray, mask: np.ndarray | None, reference_map: np.ndarray, variant_map: np.ndarray,
                     names: tuple[str, str], pick: dict, palette: Palette = LIGHT) -> np.ndarray:
    """One grid row: the input (object outlined), the reference's map, the variant's map, their difference; titles
    and gaps in ``palette`` (the dark page's own colours in dark mode)."""
    size = ROW_CELL
    view = square(image, size)
    if mask is not None:
        view = draw_mask_contour(view, mask)
    cells = [titled(view, "input", palette=palette),
             titled(square(overlay(image, reference_map), size), names[0], palette=palette),
             titled(square(overlay(image, variant_map), size), names[1], palette=palette),
             titled(difference_cell(difference_map(variant_map, reference_map), image, size, None, palette),
                    f"difference, rho {pick['spearman']:.2f}", palette=palette)]
    gap = np.empty((cells[0].shape[0], 4, 3), np.uint8)
    gap[:] = palette.paper
    parts = []
    for c in cells:
        parts += [c, gap]
    return np.concatenate(parts[:-1], axis=1)


def disagreement_caption(pick: dict) -> str:
    epg = pick["epg_difference"]
    extra = f", EPG difference {epg * 100:+.1f} points" if epg is not None else ""
    return f"{pick['id']}: Spearman {pick['spearman']:.2f}{extra}"
