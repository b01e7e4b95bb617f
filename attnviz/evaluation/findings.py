""""What the numbers say": the short list of findings that opens results.md, each one sentence computed from
results.json, with its 95 % CI, whether its sign holds in every training seed, and how many runs stand behind it.

Only differences whose CI excludes 0 become findings; models trained with another recipe (the ViT) are left
out of the comparisons with the CNNs (their maps are comparable, their scores are not).
"""
from __future__ import annotations

from attnviz.evaluation.summary import paired, same_sign
from attnviz.metrics.localisation import OWN_MAP

METRIC_NAMES = {"pointing_game": "pointing game", "energy_pointing_game": "energy pointing game (EPG)",
                "iou": "IoU"}
PERCENT = {"pointing_game", "energy_pointing_game"}   # shown in points; IoU as a fraction


def _value(v: float, metric: str) -> str:
    return f"{v * 100:+.1f}" if metric in PERCENT else f"{v:+.3f}"


def _ci(stat: dict, metric: str) -> str:
    lo, hi = stat["ci95"]
    return f"{_value(stat['mean'], metric)} [{_value(lo, metric)}, {_value(hi, metric)}]"


def _unit(metric: str) -> str:
    return " points" if metric in PERCENT else ""


def _runs(sign: float, per_seed: list[float] | None, runs: int) -> str:
    """"k/k runs" when the sign holds in every training run, "sign varies over k runs", or "1 run"."""
    if not per_seed or runs < 2:
        return "1 run"
    holds = same_sign(per_seed) and (per_seed[0] > 0) == (sign > 0)
    return f"same sign in {runs}/{runs} runs" if holds else f"sign varies over {runs} runs"


def shared_recipe(row: dict) -> bool:
    """Trained with the CNNs' shared recipe (every bundled CNN; not the ViT)."""
    return row.get("recipe", "shared") == "shared"


def _item(row: dict, stat: dict, metric: str, runs: str) -> str:
    return f"{row['display_name']} {_ci(stat, metric)} ({runs})"


def own_map_findings(result: dict) -> list[str]:
    """The attention modules' own spatial maps against the same model's Grad-CAM (paired EPG), by direction."""
    seeds = {e["model"]: e for e in result.get("across_seeds", [])}
    less, more = [], []
    for row in result["models"]:
        values = row["per_image"]["values"]
        if "energy_pointing_game" not in values.get(OWN_MAP, {}) or "gradcam" not in values:
            continue
        diff = paired(values[OWN_MAP]["energy_pointing_game"], values["gradcam"]["energy_pointing_game"])
        if not diff or not diff.get("excludes_zero"):
            continue
        entry = seeds.get(row["model"], {})
        per_seed = entry.get("own_minus_gradcam", {}).get("energy_pointing_game")
        item = _item(row, diff, "energy_pointing_game", _runs(diff["mean"], per_seed, len(entry.get("runs", []))))
        (more if diff["mean"] > 0 else less).append(item)
    n = result["n"]
    out = []
    if less:
        out.append(f"These modules' own attention maps put less of their mass on the object than the same model's "
                   f"Grad-CAM (own − Grad-CAM EPG, points, paired over {n} images): {'; '.join(less)}.")
    if more:
        out.append(f"These put more of it there than their Grad-CAM: {'; '.join(more)}.")
    return out


def vs_baseline_findings(result: dict, method: str = "gradcam") -> list[str]:
    """Grad-CAM pointing game, EPG and IoU of each shared-recipe variant with training-seed replicates minus the
    baseline's, where the CI excludes 0; one sentence per metric, and a count of the single-run models' cells."""
    seeds = {e["model"]: e for e in result.get("across_seeds", []) if len(e.get("runs", [])) > 1}
    out, single = [], 0
    for metric, name in METRIC_NAMES.items():
        items = []
        for row in result["models"]:
            d = row.get("vs_baseline", {}).get(method, {}).get(metric)
            if not shared_recipe(row) or row["model"] == result.get("reference") or not d or not d["excludes_zero"]:
                continue
            if row["model"] not in seeds:
                single += 1
                continue
            entry = seeds[row["model"]]
            by_seed = entry.get("minus_reference_by_seed", {}).get(method, {}).get(metric) or {}
            per_seed = [by_seed[str(s)] for s in entry["seeds"] if str(s) in by_seed] or None
            items.append(_item(row, d, metric, _runs(d["mean"], per_seed, len(per_seed or []))))
        if items:
            out.append(f"Grad-CAM's {name} against the baseline's (variant − baseline{_unit(metric)}, paired over "
                       f"{result['n']} images): {'; '.join(items)}.")
    if single:
        out.append(f"{single} more such Grad-CAM cells belong to models with one training run (tables below).")
    return out


def accuracy_finding(result: dict) -> list[str]:
    """How far apart the variants' accuracies are, next to how far one model's runs are apart."""
    rows = [r for r in result["models"] if shared_recipe(r) and r.get("accuracy") is not None]
    seeds = [e for e in result.get("across_seeds", []) if len(e.get("runs", [])) > 1]
    if len(rows) < 2 or not seeds:
        return []
    lo, hi = min(r["accuracy"] for r in rows), max(r["accuracy"] for r in rows)
    spread = max(max(e["accuracy"]["values"]) - min(e["accuracy"]["values"]) for e in seeds)
    runs = max(len(e["runs"]) for e in seeds)
    widest = max((r["accuracy_ci95"][1] - r["accuracy_ci95"][0]) / 2 for r in rows if r.get("accuracy_ci95"))
    return [f"Accuracy does not separate the attention types here: on these {result['n']} images the "
            f"shared-recipe models lie within {(hi - lo) * 100:.1f} points of each other "
            f"({lo * 100:.1f}–{hi * 100:.1f} %, each with a 95 % CI up to ±{widest * 100:.1f} points wide), and one "
            f"model's training runs differ by up to {spread * 100:.1f} points ({runs} runs per replicated model)."]


def findings(result: dict) -> list[str]:
    return own_map_findings(result) + vs_baseline_findings(result) + accuracy_finding(result)


def findings_section(result: dict) -> list[str]:
    """The markdown lines of "What the numbers say" (nothing when no difference clears its CI)."""
    found = findings(result)
    if not found:
        return []
    lines = ["## What the numbers say", "",
             "Differences whose 95 % CI excludes 0, computed from `results.json` (a finding per line, "
             "with no correction for the number of comparisons; the tables below hold every cell):", ""]
    lines += [f"* {sentence}" for sentence in found]
    other = [r["display_name"] for r in result["models"] if not shared_recipe(r)]
    if other:
        lines += ["", f"{', '.join(other)}: trained with a different recipe — compare its maps, not its scores, "
                  "with the CNNs'; it is left out of the comparisons with the baseline above (its own map vs its own Grad-CAM is a within-model comparison and stays)."]
    return lines + [""]

