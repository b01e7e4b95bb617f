"""Statistics of ``attnviz eval`` computed from the stored per-image values of results.json.

Every metric: mean, 95 % percentile-bootstrap CI over images, n and standard error; paired differences from the
reference model; the across-seed summary. ``--update`` recomputes all of it from the JSON alone.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from attnviz.evaluation import stats
from attnviz.evaluation.scoring import REGION
from attnviz.metrics.localisation import OWN_MAP

SEED_METRICS = ("pointing_game", "energy_pointing_game", "iou")


def summary(values: Sequence[float | None]) -> dict | None:
    """``{"mean", "ci95": [lo, hi], "n", "sem"}`` of the non-missing values (None when there are none)."""
    arr = np.asarray([v for v in values if v is not None], np.float64)
    if arr.size == 0:
        return None
    out = stats.mean_ci(arr).to_json()
    out["sem"] = float(arr.std(ddof=1) / np.sqrt(arr.size)) if arr.size > 1 else 0.0
    return out


def paired(variant: Sequence[float | None], baseline: Sequence[float | None]) -> dict | None:
    """Paired difference ``variant - baseline`` over the images where both have a value."""
    pairs = [(a, b) for a, b in zip(variant, baseline) if a is not None and b is not None]
    if not pairs:
        return None
    a, b = zip(*pairs)
    return stats.paired_difference(a, b).to_json()


def _summarise_row(row: dict) -> None:
    per = row["per_image"]
    acc = summary(per["correct"])
    row["accuracy"] = acc["mean"] if acc else None
    row["accuracy_ci95"] = acc["ci95"] if acc else None
    row["accuracy_n"] = acc["n"] if acc else 0
    row["maps"] = {m: {k: s for k, v in metrics.items() if (s := summary(v)) is not None}
                   for m, metrics in per["values"].items()}
    row["agreement"] = {m: {k: s for k, v in keys.items() if (s := summary(v)) is not None}
                        for m, keys in per.get("agreement", {}).items()}


def _vs_reference(row: dict, ref: dict) -> dict:
    out: dict = {}
    acc = paired(row["per_image"]["correct"], ref["per_image"]["correct"])
    if acc is not None:
        out["accuracy"] = acc
    for m, metrics in row["per_image"]["values"].items():
        if m == REGION or m not in ref["per_image"]["values"]:
            continue
        diffs = {k: d for k, v in metrics.items() if k in ref["per_image"]["values"][m]
                 and (d := paired(v, ref["per_image"]["values"][m][k])) is not None}
        if diffs:
            out[m] = diffs
    return out


def _mean_sd(values: list[float]) -> dict:
    arr = np.asarray(values, np.float64)
    return {"values": [float(v) for v in arr], "mean": float(arr.mean()),
            "sd": float(arr.std(ddof=1)) if arr.size > 1 else 0.0}


def _own_minus_gradcam(row: dict, metric: str) -> float | None:
    maps = row["maps"]
    if OWN_MAP in maps and "gradcam" in maps and metric in maps[OWN_MAP] and metric in maps["gradcam"]:
        return maps[OWN_MAP][metric]["mean"] - maps["gradcam"][metric]["mean"]
    return None


def across_seeds(models: list[dict], replicates: list[dict], reference: str | None) -> list[dict]:
    """Per bundled model that has replicates: mean ± sd over its runs of accuracy and PG / EPG / IoU per map,
    and, per training seed, the variant's mean minus the reference's run of the same seed."""
    by_name = {r["model"]: r for r in models + replicates}
    bases = list(dict.fromkeys(r["replicate_of"] for r in replicates if r.get("replicate_of")))
    runs_of = {}
    for base in bases:
        runs = [r for r in replicates if r.get("replicate_of") == base]
        if base in by_name:
            runs.append(by_name[base])
        runs_of[base] = sorted(runs, key=lambda r: (r.get("training_seed") is None, r.get("training_seed") or 0))
    ref_by_seed = {r.get("training_seed"): r for r in runs_of.get(reference, [])}
    out = []
    position = {r["model"]: i for i, r in enumerate(models)}
    for base in sorted(bases, key=lambda b: (b != reference, position.get(b, len(position)), b)):
        runs = runs_of[base]
        maps = [m for m in runs[0]["maps"] if m != REGION and all(m in r["maps"] for r in runs)]
        entry = {"model": base, "display_name": by_name.get(base, runs[-1])["display_name"],
                 "runs": [r["model"] for r in runs],
                 "seeds": [r.get("training_seed") for r in runs],
                 "accuracy": _mean_sd([r["accuracy"] for r in runs]),
                 "maps": {m: {k: _mean_sd([r["maps"][m][k]["mean"] for r in runs]) for k in SEED_METRICS
                              if all(k in r["maps"][m] for r in runs)} for m in maps}}
        own = {k: [_own_minus_gradcam(r, k) for r in runs] for k in SEED_METRICS}
        if all(v is not None for v in own["energy_pointing_game"]):
            entry["own_minus_gradcam"] = {k: v for k, v in own.items() if all(x is not None for x in v)}
        if base != reference and ref_by_seed:
            diffs: dict = {}
            for m in maps:
                for k in SEED_METRICS:
                    per_seed = {}
                    for r in runs:
                        b = ref_by_seed.get(r.get("training_seed"))
                        if b is not None and k in b["maps"].get(m, {}):
                            per_seed[str(r.get("training_seed"))] = r["maps"][m][k]["mean"] - b["maps"][m][k]["mean"]
                    if len(per_seed) > 1:
                        diffs.setdefault(m, {})[k] = per_seed
            if diffs:
                entry["minus_reference_by_seed"] = diffs
        out.append(entry)
    return out


def finalise(result: dict) -> None:
    """(Re)compute every statistic of ``result`` from its per-image values, in place."""
    rows = result["models"] + result.get("replicates", [])
    for row in rows:
        _summarise_row(row)
    ref = next((r for r in result["models"] if r["model"] == result.get("reference")), None)
    for row in rows:
        row.pop("vs_baseline", None)
        if ref is not None and row is not ref:
            row["vs_baseline"] = _vs_reference(row, ref)
    result["across_seeds"] = across_seeds(result["models"], result.get("replicates", []), result.get("reference"))
    result["scoring"] = total_scoring(rows)


def total_scoring(rows: list[dict]) -> dict:
    """Maps scored vs requested, summed over the rows (each row keeps its own counts, so --update stays exact)."""
    total: dict = {"maps_requested": 0, "maps_scored": 0, "road_requested": 0, "road_scored": 0, "identical": {}}
    for row in rows:
        s = row.get("scoring") or {}
        for k in ("maps_requested", "maps_scored", "road_requested", "road_scored"):
            total[k] += s.get(k, 0)
        for k, v in s.get("identical", {}).items():
            total["identical"][k] = total["identical"].get(k, 0) + v
    total["identical"] = dict(sorted(total["identical"].items()))
    return total


def same_sign(values) -> bool:
    """True when every value is non-zero and of one sign: the rule for "holds across training seeds"."""
    signs = {np.sign(v) for v in values}
    return len(signs) == 1 and 0 not in signs
