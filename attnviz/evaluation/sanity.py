"""``attnviz sanity``: do the maps depend on what the model learnt? The command, sanity.md and sanity.png.

The checks themselves (cascading randomisation, random target, Spearman / SSIM) are
:mod:`attnviz.evaluation.sanity_checks`; this module runs them over models and scenes and reports.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from attnviz.core.devices import resolve_device, use_threads
from attnviz.core.methods import check_methods
from attnviz.errors import AttnvizError
from attnviz.evaluation.sanity_checks import DEFAULT_N, FLAG_RULE, FLAG_SPEARMAN, RANDOMISATION_SEED, sanity_model
from attnviz.metrics.localisation import OWN_MAP


def _title(key: str) -> str:
    from attnviz.core.methods import title

    return "attention (own map)" if key == OWN_MAP else title(key)


def _range(values: list[float]) -> str:
    return f"{np.mean(values):.2f} (models {min(values):.2f} to {max(values):.2f})"


@dataclass
class _MapAcrossModels:
    """One map's per-model numbers: Spearman with the classifier alone random (``first``), with every layer
    random (``last``), with a random target (``target``), and how many models flag it."""
    models: int
    first: list[float]
    last: list[float]
    target: list[float]
    kept: int
    blind: int


def _across_models(rows: list[dict], key: str) -> _MapAcrossModels:
    have = [r for r in rows if key in r["maps"]]
    targets = [r["random_target"][key] for r in have if key in r.get("random_target", {})]
    return _MapAcrossModels(len(have), [r["maps"][key]["spearman"][0] for r in have],
                            [r["maps"][key]["spearman"][-1] for r in have], [t["spearman"] for t in targets],
                            sum(r["maps"][key]["keeps_structure"] for r in have),
                            sum(t["class_insensitive"] for t in targets))


def sanity_findings(result: dict) -> list[str]:
    """What the tables say across models, each sentence computed from the numbers it quotes (mean over models of
    each model's mean over images; the range over models beside it)."""
    rows = result["models"]
    maps = {key: _across_models(rows, key) for key in dict.fromkeys(k for r in rows for k in r["maps"])}
    lines = ["## Across the models", "",
             "Mean Spearman correlation between the original map and the randomised one, averaged over the "
             f"{len(rows)} models (range over models in brackets), after the classifier alone is re-initialised and "
             "with every layer random; and between the true-class map and a random other class's:", "",
             "| map | classifier random | every layer random | random target | keeps structure | class-insensitive |",
             "|---|---|---|---|---|---|"]
    for key, a in maps.items():
        lines.append(f"| {_title(key)} ({a.models} model{'' if a.models == 1 else 's'}) | {_range(a.first)} | {_range(a.last)} | "
                     f"{_range(a.target) if a.target else '–'} | {a.kept} | {a.blind if a.target else '–'} |")
    flagged = [f"{r['model']}/{k}" for r in rows for k, e in r["maps"].items() if e["keeps_structure"]]
    lines += ["", "The last two columns count the models whose map is flagged (rules above).", ""] + _found(maps)
    lines += [f"Maps that keep their structure with every layer random (mean Spearman > {FLAG_SPEARMAN}): "
              f"{', '.join(flagged) if flagged else 'none'}. A map whose correlation with the trained model's map "
              "stays high after randomisation reflects the input (edges, the object's outline) rather than what the "
              "model learnt; a map that does not change with the classifier or the target class (Spearman 1.00 in "
              "those columns) cannot explain a class.", ""]
    return lines


def _found(maps: dict[str, _MapAcrossModels]) -> list[str]:
    """One computed sentence per map: where its correlation ends with every layer random, and how it reacts to
    re-initialising the classifier alone and to a random target class."""
    out = ["What it found (means over the models that have the map):", ""]
    for key, a in maps.items():
        first, last = float(np.mean(a.first)), float(np.mean(a.last))
        fate = "falls towards 0" if abs(last) < 0.3 else ("stays high" if last > FLAG_SPEARMAN else "drops")
        sentence = (f"* {_title(key)}: with every layer random its correlation {fate} ({last:.2f}); with only the "
                    f"classifier re-initialised it is {first:.2f}")
        target = float(np.mean(a.target)) if a.target else None
        if target is not None:
            sentence += f", and a random target class gives {target:.2f}"
        if first > 0.99:
            blind = target is not None and target > 0.99
            sentence += " — it does not use the classifier" + (" or the class" if blind else "")
        out.append(sentence + ".")
    return out + [""]


def sanity_markdown(result: dict) -> str:
    """The per-model tables (Spearman / SSIM per map and step, the random-target test) after a summary across
    models whose every number is computed here from ``result``."""
    lines = [
        "# Sanity checks: cascading randomisation and random target",
        "",
        f"Produced by `{result['command']}` ({result['n']} benchmark scenes, data seed {result['seed']}; maps for "
        f"{result['target']}; randomisation seed {result['randomisation_seed']}; "
        f"{result['seconds'] / 60:.1f} min). Method: Adebayo et al. 2018, \"Sanity Checks for Saliency Maps\"; "
        "details in `attnviz/evaluation/sanity_checks.py`.",
        "",
        "Each cell: mean Spearman rank correlation / mean SSIM between the original map and the map after "
        "re-initialising every layer group up to and including the column's (classifier first, stem last; "
        "the last column = every layer random). Values near 1 mean the map did not change.",
        "",
        f"Flags: {result['flag_rule']}. ⚑ marks a flagged map.",
        "",
        "![Spearman correlation per randomisation step](sanity.png)",
        "",
    ] + sanity_findings(result)
    for row in result["models"]:
        steps = row["steps"]
        lines += [f"## {row.get('display_name', row['model'])}", "",
                  "| map | " + " | ".join(f"`{s}`" for s in steps) + " |",
                  "|---" * (len(steps) + 1) + "|"]
        for key, entry in row["maps"].items():
            cells = [f"{r:.2f} / {s:.2f}" for r, s in zip(entry["spearman"], entry["ssim"])]
            flag = " ⚑" if entry["keeps_structure"] else ""
            lines.append(f"| {_title(key)}{flag} | " + " | ".join(cells) + " |")
        lines += ["", "Random target (map for a random other class vs the true class):", "",
                  "| map | Spearman | SSIM |", "|---|---|---|"]
        for key, s in row["random_target"].items():
            flag = " ⚑" if s["class_insensitive"] else ""
            lines.append(f"| {_title(key)}{flag} | {s['spearman']:.2f} | {s['ssim']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def plot_sanity(result: dict, path: Path) -> None:
    """One panel per model: mean Spearman (solid) and SSIM (dashed) per randomisation step, one colour per map."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = result["models"]
    keys = list(dict.fromkeys(key for row in rows for key in row["maps"]))   # one colour per map across panels
    cols = min(3, len(rows))
    grid_rows = (len(rows) + cols - 1) // cols
    ncol = max(1, min(len(keys), int(5.2 * cols // 1.75)))   # as many legend entries per line as the width holds
    legend_h = 0.22 * -(-len(keys) // ncol) + 0.3             # inches: one line per ncol entries
    fig = Figure(figsize=(5.2 * cols, 3.8 * grid_rows + legend_h), dpi=100)
    FigureCanvasAgg(fig)
    handles = {}
    for i, row in enumerate(rows):
        ax = fig.add_subplot(grid_rows, cols, i + 1)
        xs = np.arange(len(row["steps"]))
        for key, entry in row["maps"].items():
            own = key == OWN_MAP        # eleven maps, ten default colours: the attention map is drawn black and thick
            colour = "black" if own else f"C{keys.index(key) % 10}"
            handles[key], = ax.plot(xs, entry["spearman"], "-o", color=colour, markersize=3,
                                    linewidth=2 if own else 1.5)
            ax.plot(xs, entry["ssim"], "--", color=colour, linewidth=0.8)
        ax.axhline(FLAG_SPEARMAN, color="grey", linewidth=0.6, linestyle=":")
        ax.set_xticks(xs, row["steps"], rotation=60, fontsize=7)
        ax.set_ylim(-0.3, 1.05)
        ax.set_title(row.get("display_name", row["model"]), fontsize=10)
        ax.grid(alpha=0.3)
        if i % cols == 0:
            ax.set_ylabel("Spearman (solid), SSIM (dashed)", fontsize=8)
    fig.legend([handles[k] for k in keys], [_title(k) for k in keys], loc="upper center", ncol=ncol,
               fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - legend_h / fig.get_figheight()))
    fig.savefig(path)


def run_sanity(models: Sequence[str] | None = None, n: int = DEFAULT_N, seed: int | None = None,
               methods: Sequence[str] | None = None, out: Path = Path("attnviz-sanity"), progress: bool = True,
               device: str | None = None, command: str | None = None, threads: int | None = None) -> dict:
    """Sanity checks for bundled models on ``n`` benchmark scenes (eval data seed, true class); writes
    ``out/sanity.json``, ``out/sanity.md`` and ``out/sanity.png``."""
    from attnviz.api import check_applicable
    from attnviz.core import methods as catalogue
    from attnviz.data import synth
    from attnviz.data.scenes import EVAL_SEED, cached_scenes
    from attnviz.zoo import registry as zoo

    use_threads(threads)                 # default: torch's own (every core)
    if n < 1:
        raise AttnvizError("--n must be at least 1.")
    names = list(models) if models else zoo.bundled()
    methods = check_methods(methods or catalogue.names(catalogue.ONE_PASS))
    seed = EVAL_SEED if seed is None else seed
    resolve_device(device)                 # an absent device is one clear line before any model loads
    loaded = [zoo.load(name, "cpu") for name in names]    # copies are randomised on the CPU copy's side
    for m in loaded:
        if tuple(m.spec.class_names) != tuple(synth.CLASS_NAMES):
            raise AttnvizError(f"{m.spec.name} was not trained on the benchmark's classes; `attnviz sanity` "
                               "runs on benchmark scenes (use attnviz.evaluation.sanity_checks.sanity_model for other data).")
    # a method no model can compute is a contradiction, told now; one only some can (LeGrad on a CNN) is left out
    # of the others' rows
    missing = check_applicable(loaded, methods)
    scenes = cached_scenes(n, seed, synth.IMAGE_SIZE, progress=progress)
    start = time.perf_counter()
    rows = []
    for m, unavailable in zip(loaded, missing):
        x = m.spec.preprocess(scenes.images)
        rows.append(sanity_model(m, x, [int(v) for v in scenes.labels], [k for k in methods if k not in unavailable],
                                 layer=m.spec.default_layer, class_names=m.spec.class_names, name=m.spec.name,
                                 progress=progress, device=device))
        rows[-1]["display_name"] = m.spec.display_name
        rows[-1]["unavailable"] = unavailable
    result = {"command": command or (f"attnviz sanity --n {n}" + (f" --seed {seed}" if seed != EVAL_SEED else "")
                                     + (f" --models {','.join(models)}" if models else "")),
              "n": n, "seed": seed, "target": "the true class", "methods": list(methods),
              "randomisation_seed": RANDOMISATION_SEED, "flag_rule": FLAG_RULE,
              "seconds": round(time.perf_counter() - start, 1), "models": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "sanity.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "sanity.md").write_text(sanity_markdown(result))
    plot_sanity(result, out / "sanity.png")
    return result
