"""The committed docs/results.json and results.md: their statistics recomputed from the stored per-image values.

The bootstrap here is a plain loop written for the test (not :mod:`attnviz.evaluation.stats`), so an error in the
vectorised one, or a results.json edited by hand, shows up as a mismatch.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from attnviz.evaluation.results_markdown import fmt_ci

DOCS = Path(__file__).resolve().parents[2] / "docs"
RESULT = json.loads((DOCS / "results.json").read_text())
MARKDOWN = (DOCS / "results.md").read_text()
ROWS = {r["model"]: r for r in RESULT["models"] + RESULT.get("replicates", [])}


def loop_bootstrap(values: list[float], resamples: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Mean and 95 % percentile interval of the bootstrap means, one resample at a time."""
    x = np.asarray(values, np.float64)
    rng = np.random.default_rng(seed)
    means = [x[rng.integers(0, len(x), len(x))].mean() for _ in range(resamples)]
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(x.mean()), float(lo), float(hi)


def present(values: list) -> list[float]:
    return [v for v in values if v is not None]


@pytest.mark.parametrize("model", ["baseline", "cbam", "coord"])
@pytest.mark.parametrize("metric", ["pointing_game", "energy_pointing_game", "iou"])
def test_grad_cam_means_and_intervals_follow_from_the_per_image_values(model, metric):
    row = ROWS[model]
    stored = row["maps"]["gradcam"][metric]
    mean, lo, hi = loop_bootstrap(present(row["per_image"]["values"]["gradcam"][metric]))
    assert stored["mean"] == pytest.approx(mean, abs=1e-9)
    assert stored["ci95"] == pytest.approx([lo, hi], abs=1e-9)
    assert stored["n"] == len(present(row["per_image"]["values"]["gradcam"][metric]))


def test_every_metric_entry_has_an_interval():
    for row in ROWS.values():
        assert row["accuracy_ci95"] is not None
        for metrics in row["maps"].values():
            for stat in metrics.values():
                assert stat["n"] < 2 or stat["ci95"][0] <= stat["mean"] <= stat["ci95"][1], (row["model"], stat)


def test_accuracy_interval_and_its_table_cell():
    row = ROWS["cbam"]
    mean, lo, hi = loop_bootstrap(present(row["per_image"]["correct"]))
    assert row["accuracy"] == pytest.approx(mean) and row["accuracy_ci95"] == pytest.approx([lo, hi])
    assert fmt_ci({"mean": mean, "ci95": [lo, hi], "n": 2}, pct=True) in MARKDOWN


@pytest.mark.parametrize("model", ["se", "cbam", "triplet", "coord"])
def test_paired_differences_from_the_baseline(model):
    row, base = ROWS[model], ROWS[RESULT["reference"]]
    for metric in ("pointing_game", "iou"):
        pairs = [(a, b) for a, b in zip(row["per_image"]["values"]["gradcam"][metric],
                                        base["per_image"]["values"]["gradcam"][metric])
                 if a is not None and b is not None]
        mean, lo, hi = loop_bootstrap([a - b for a, b in pairs])
        stored = row["vs_baseline"]["gradcam"][metric]
        assert stored["mean"] == pytest.approx(mean, abs=1e-9) and stored["ci95"] == pytest.approx([lo, hi], abs=1e-9)
        assert stored["excludes_zero"] == (lo > 0 or hi < 0)


def test_across_seed_entries_are_the_mean_and_sd_of_their_runs():
    for entry in RESULT.get("across_seeds", []):
        runs = [ROWS[name] for name in entry["runs"]]
        accuracies = [r["accuracy"] for r in runs]
        assert entry["accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
        assert entry["accuracy"]["sd"] == pytest.approx(np.std(accuracies, ddof=1) if len(runs) > 1 else 0.0)
        iou = [r["maps"]["gradcam"]["iou"]["mean"] for r in runs]
        assert entry["maps"]["gradcam"]["iou"]["mean"] == pytest.approx(np.mean(iou))


def test_single_run_findings_say_so():
    """Findings about models without replicates carry that caveat; replicated ones carry their seeds."""
    replicated = {e["model"] for e in RESULT.get("across_seeds", [])}
    assert "stn" not in replicated and "(one training run: no training-seed replicates)" in MARKDOWN
    single = next(ln for ln in MARKDOWN.splitlines() if ln.startswith("No training-seed replicates, so one training run"))
    for row in RESULT["models"]:
        if "attention" in row["maps"]:
            assert (row["display_name"] in single) == (row["model"] not in replicated), row["model"]


def _findings_line(start: str) -> str:
    section = MARKDOWN.split("\n## What the numbers say\n", 1)[1].split("\n## ", 1)[0]
    return next(line for line in section.splitlines() if line.startswith(f"* {start}"))


def _runs_clause(per_run: list[float]) -> str:
    k = len(per_run)
    if k < 2:
        return "1 run"
    return f"same sign in {k}/{k} runs" if len({np.sign(v) for v in per_run}) == 1 else f"sign varies over {k} runs"


def _runs_of(model: str) -> list[dict]:
    return [ROWS[model]] + sorted((r for r in RESULT.get("replicates", []) if r.get("replicate_of") == model),
                                  key=lambda r: r["training_seed"])


def test_results_md_opens_with_what_the_numbers_say():
    first_section = MARKDOWN.split("\n## ", 1)[1]
    assert first_section.startswith("What the numbers say")


def test_two_findings_recomputed_from_the_per_image_values():
    # 1. CBAM's own map minus its Grad-CAM, EPG, paired over the images, and whether its sign holds in every run
    own = "attention"
    values = ROWS["cbam"]["per_image"]["values"]
    pairs = [(a, b) for a, b in zip(values[own]["energy_pointing_game"], values["gradcam"]["energy_pointing_game"])
             if a is not None and b is not None]
    mean, lo, hi = loop_bootstrap([a - b for a, b in pairs])
    per_run = [r["maps"][own]["energy_pointing_game"]["mean"] - r["maps"]["gradcam"]["energy_pointing_game"]["mean"]
               for r in _runs_of("cbam")]
    expected = f"CBAM {mean * 100:+.1f} [{lo * 100:+.1f}, {hi * 100:+.1f}] ({_runs_clause(per_run)})"
    assert expected in _findings_line("These modules' own attention maps put less")
    # 2. SE's Grad-CAM pointing game minus the baseline's, and the per-seed differences of the run means
    se, base = ROWS["se"]["per_image"]["values"], ROWS["baseline"]["per_image"]["values"]
    pairs = [(a, b) for a, b in zip(se["gradcam"]["pointing_game"], base["gradcam"]["pointing_game"])
             if a is not None and b is not None]
    mean, lo, hi = loop_bootstrap([a - b for a, b in pairs])
    bases = {r["training_seed"]: r for r in _runs_of("baseline")}
    per_run = [r["maps"]["gradcam"]["pointing_game"]["mean"] - bases[r["training_seed"]]["maps"]["gradcam"]
               ["pointing_game"]["mean"] for r in _runs_of("se") if r["training_seed"] in bases]
    expected = f"SE {mean * 100:+.1f} [{lo * 100:+.1f}, {hi * 100:+.1f}] ({_runs_clause(per_run)})"
    assert expected in _findings_line("Grad-CAM's pointing game against the baseline's")
