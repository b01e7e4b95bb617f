"""What ``attnviz eval`` writes: statistics from the stored per-image values, results.md and results.png.

Everything here is computed from ``results.json`` alone (its per-image values), so a reader can recompute
every number and ``--update`` can recompute the tables after adding a model:

* every metric of every map: mean, 95 % percentile-bootstrap CI over images (:mod:`attnviz.evaluation.stats`, 1,000
  resamples, fixed seed), n and standard error;
* "vs baseline": per variant, map and metric the paired difference from the reference model (the bundled
  baseline) on the images both scored, with its CI and whether the CI excludes 0;
* agreement of each variant's map with the baseline's (same image, method and target), averaged with CIs;
* across training seeds: mean ± sd over the bundled model and its replicates (``<name>_seed<S>``).

Sentences in results.md that state a finding are generated from these numbers and carry them.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from attnviz.evaluation.results_markdown import _title, results_markdown
from attnviz.evaluation.scoring import REGION

# ---- statistics -----------------------------------------------------------------------------------------



















# ---- files --------------------------------------------------------------------------------------------------

def dumps(obj, indent: int = 1, level: int = 0) -> str:
    """JSON like ``json.dumps(indent=1)``, but a list of plain values stays on one line (per-image arrays)."""
    pad, inner = " " * (indent * level), " " * (indent * (level + 1))
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{inner}{json.dumps(str(k))}: {dumps(v, indent, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, (list, tuple)):
        if all(not isinstance(v, (dict, list, tuple)) for v in obj):
            return json.dumps(list(obj), separators=(", ", ": "))
        return "[\n" + ",\n".join(inner + dumps(v, indent, level + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj)


def read_sanity(path: Path) -> tuple[dict[tuple[str, str], float], set[str]] | None:
    """From ``sanity.json``: ``{(model, map): Spearman at the last step}`` of the maps it flags
    ``keeps_structure`` (empty: checked, none flagged) and the models it covered; None when there is no
    readable ``sanity.json`` (not checked)."""
    if not path.is_file():
        return None
    try:
        rows = json.loads(path.read_text()).get("models", [])
        flags = {(row["model"], key): float(entry["spearman"][-1]) for row in rows
                 for key, entry in row.get("maps", {}).items() if entry.get("keeps_structure")}
        return flags, {row["model"] for row in rows}
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None


def read_sanity_flags(path: Path) -> dict[tuple[str, str], float] | None:
    """The flagged maps of :func:`read_sanity` (None: not checked)."""
    sanity = read_sanity(path)
    return None if sanity is None else sanity[0]


def per_image_csv(result: dict) -> str:
    """One row per image, model and map: whether the model was right, every metric, and the map's agreement
    with the reference model's map of the same method (empty where there is none) — results.json's per-image
    values, flat, for a spreadsheet."""
    rows = result["models"] + result.get("replicates", [])
    metrics = list(dict.fromkeys(k for r in rows for v in r["per_image"]["values"].values() for k in v))
    agreement = list(dict.fromkeys(k for r in rows for v in r["per_image"].get("agreement", {}).values() for k in v))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image", "model", "map", "correct"] + metrics + [f"agreement_{k}" for k in agreement])
    for row in rows:
        per = row["per_image"]
        for m, values in per["values"].items():
            agree = per.get("agreement", {}).get(m, {})
            for j, image in enumerate(result["ids"]):
                cells = [values.get(k, [None] * len(result["ids"]))[j] for k in metrics]
                agreed = [agree.get(k, [None] * len(result["ids"]))[j] for k in agreement]
                if all(c is None for c in cells):
                    continue
                writer.writerow([image, row["model"], m, per["correct"][j]]
                                + ["" if c is None else c for c in cells + agreed])
    return buffer.getvalue()


OUTPUT_FILES = ("results.json", "results.md", "results.png", "forest.png", "per_image.csv")   # write_outputs' files
FOREST_METRICS = (("pointing_game", "Pointing game"), ("energy_pointing_game", "Energy pointing game"), ("iou", "IoU"))


def write_outputs(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(dumps(result) + "\n")
    (out / "per_image.csv").write_text(per_image_csv(result))
    flags, checked = read_sanity(out / "sanity.json") or (None, set())
    (out / "results.md").write_text(results_markdown(result, flags, checked))
    plot_results(result, out / "results.png")
    plot_forest(result, out / "forest.png")


# ---- results.md -------------------------------------------------------------------------------------------





































def plot_results(result: dict, path: Path) -> None:
    """Grouped bars with 95 % CI error bars: energy pointing game and insertion AUC per model, one bar per map."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = result["models"]
    maps = list(dict.fromkeys(m for r in rows for m in r["maps"] if m != REGION))
    fig = Figure(figsize=(11, 6.5), dpi=100)
    FigureCanvasAgg(fig)
    for k, (key, title) in enumerate((("energy_pointing_game", "Energy pointing game (higher is better)"),
                                      ("insertion_auc", "Insertion AUC (higher is better)"))):
        ax = fig.add_subplot(2, 1, k + 1)
        width = 0.8 / max(1, len(maps))
        for j, m in enumerate(maps):
            xs, ys, lo, hi = [], [], [], []
            for i, r in enumerate(rows):
                stat = r["maps"].get(m, {}).get(key)
                if stat:
                    xs.append(i + (j - len(maps) / 2 + 0.5) * width)
                    ys.append(stat["mean"])
                    ci = stat.get("ci95") or [stat["mean"], stat["mean"]]
                    lo.append(max(0.0, stat["mean"] - ci[0]))
                    hi.append(max(0.0, ci[1] - stat["mean"]))
            if xs:
                ax.bar(xs, ys, width, yerr=[lo, hi], label=_title(m), capsize=2, error_kw={"linewidth": 0.8})
        ax.set_xticks(range(len(rows)), [r["display_name"] for r in rows], fontsize=8)
        ax.set_title(title, fontsize=11)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    if maps:
        fig.axes[0].legend(ncol=min(6, len(maps)), fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)


def plot_forest(result: dict, path: Path) -> None:
    """A forest plot: one row per model x map, its mean with the 95 % CI as a bar, one panel per localisation
    metric, and the reference model's value for that map as a dashed line through the map's rows."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = result["models"]
    maps = list(dict.fromkeys(m for r in rows for m in r["maps"] if m != REGION))
    ref = next((r for r in rows if r["model"] == result.get("reference")), None)
    lines = [(m, r) for m in maps for r in rows if m in r["maps"]]
    fig = Figure(figsize=(11, 1.2 + 0.28 * max(1, len(lines))), dpi=100)
    FigureCanvasAgg(fig)
    for k, (key, title) in enumerate(FOREST_METRICS):
        ax = fig.add_subplot(1, len(FOREST_METRICS), k + 1)
        for y, (m, r) in enumerate(lines):
            stat = r["maps"][m].get(key)
            if not stat:
                continue
            lo, hi = stat.get("ci95") or [stat["mean"], stat["mean"]]
            colour = "#555555" if ref is not None and r is ref else "#1f77b4"
            ax.plot([lo, hi], [y, y], color=colour, linewidth=2)
            ax.plot([stat["mean"]], [y], "o", color=colour, markersize=4)
        for m in maps:
            ys = [y for y, (mm, _) in enumerate(lines) if mm == m]
            stat = (ref or {}).get("maps", {}).get(m, {}).get(key)
            if stat and ys:
                ax.plot([stat["mean"]] * 2, [min(ys) - 0.4, max(ys) + 0.4], "--", color="#d62728", linewidth=1)
        ax.set_yticks(range(len(lines)), [f"{r['display_name']} · {_title(m)}" for m, r in lines] if k == 0
                      else [""] * len(lines), fontsize=8)
        ax.set_ylim(len(lines) - 0.5, -0.5)
        ax.set_xlim(0, 1)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    fig.suptitle(f"Mean and 95 % bootstrap CI over {result['n']} images; dashed: "
                 f"{(ref or {}).get('display_name', 'no reference')}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
