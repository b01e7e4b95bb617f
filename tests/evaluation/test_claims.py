"""Every claim's test on constructed networks whose answer is known (holds, and does not hold), the verdict rule at
its edges, seed agreement, the refusal row of an absent model type, and docs/claims.md = its JSON rendered."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from attnviz.evaluation import stats
from attnviz.evaluation.claims import catalogue as C
from attnviz.evaluation.claims.markdown import claims_markdown
from attnviz.evaluation.claims.measure import collect
from attnviz.results import AttentionMap, CamMap, Explanation, Prediction

ROOT = Path(__file__).resolve().parents[2]
SIDE = 32
N = 12                                 # images per constructed run: 3 classes x 4
LABELS = [i % 3 for i in range(N)]


def _object(i: int) -> np.ndarray:
    """Image i's object: an 8 x 8 square whose place moves with i (rows and columns 8..15 or 16..23)."""
    m = np.zeros((SIDE, SIDE), bool)
    r, c = 8 + 8 * (i % 2), 8 + 8 * ((i // 2) % 2)
    m[r:r + 8, c:c + 8] = True
    return m


def _cam(heat: np.ndarray) -> CamMap:
    h = heat.astype(np.float32)
    return CamMap("x", h, h, h)


def _explanation(i: int, *, prob: float = 0.9, cams: dict | None = None, maps=(), summaries=()) -> Explanation:
    p = Prediction(LABELS[i], str(LABELS[i]), prob)
    return Explanation("m", "m", "x", None, [p], p, "layer3", {k: _cam(v) for k, v in (cams or {}).items()},
                       list(maps), list(summaries), {}, np.zeros(3, np.float32))


def _run(model: str, attention: str, explanations, seed: int = 0, replicate_of: str | None = None,
         row: dict | None = None) -> dict:
    measured = collect(N, [(i, e, _object(i), LABELS[i]) for i, e in enumerate(explanations)]) if explanations \
        else None
    return {"model": model, "display_name": model, "attention": attention, "training_seed": seed,
            "replicate_of": replicate_of, "recipe": "shared", "measured": measured, "row": row}


def _only(claim_id: str, runs: list[dict]) -> dict:
    claim = next(c for c in C.CLAIMS if c.id == claim_id)
    (row,) = C.claim_rows((claim,), runs)
    return row


def _spatial(stage: str, data: np.ndarray, kind: str = "x") -> AttentionMap:
    return AttentionMap(stage, stage, kind, "spatial (stage mean)", "spatial", data.astype(np.float32))


# ---- the verdict rule ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("lo, hi, n, expected", [
    (0.001, 0.2, 10, C.HOLDS), (0.0, 0.2, 10, C.INCONCLUSIVE),          # touching the threshold from above
    (-0.2, -0.001, 10, C.FAILS), (-0.2, 0.0, 10, C.INCONCLUSIVE),       # ... and from below
    (-0.1, 0.1, 10, C.INCONCLUSIVE), (0.5, 0.5, 1, C.INCONCLUSIVE), (None, None, 0, C.INCONCLUSIVE)])
def test_verdict_against_a_threshold_of_zero(lo, hi, n, expected):
    assert C.verdict(lo, hi, 0.0, n) == expected


def test_verdict_uses_the_claims_threshold():
    assert C.verdict(1.2, 1.3, 1.25, 10) == C.INCONCLUSIVE
    assert C.verdict(1.26, 1.3, 1.25, 10) == C.HOLDS
    assert C.verdict(1.0, 1.0, 1.25, 10) == C.FAILS


def test_a_bootstrap_ci_that_touches_zero_is_inconclusive_though_the_mean_is_positive():
    """19 images with no difference and one with +1: most resamples miss the one, so the CI's low end is 0."""
    row = {"per_image": {"correct": [1] * N, "values": {}}}
    base = _run("baseline", "none", None, row={"per_image": {"correct": [0] + [1] * (N - 1), "values": {}}})
    variant = _run("se", "se", None, row=row)
    out = _only("9", [base, variant])
    assert out["value"]["mean"] > 0 and out["value"]["ci95"][0] == 0.0
    assert out["verdict"] == C.INCONCLUSIVE


# ---- each claim on constructed networks ------------------------------------------------------------------------

def _results_row(metric_values: list[float], method: str = "gradcam", metric: str = "energy_pointing_game") -> dict:
    return {"per_image": {"correct": [1] * N, "values": {method: {metric: metric_values}}}}


def _spread(level: float) -> list[float]:
    return [level + 0.01 * (i % 3) for i in range(N)]


@pytest.mark.parametrize("claim_id, subject, comparator, metric", [
    ("2a", "triplet", "none", "energy_pointing_game"), ("2b", "triplet", "se", "energy_pointing_game"),
    ("2c", "triplet", "cbam", "energy_pointing_game"), ("3b", "coord", "se", "iou"), ("3c", "coord", "cbam", "iou")])
@pytest.mark.parametrize("better", [True, False])
def test_results_json_comparisons(claim_id, subject, comparator, metric, better):
    hi, lo = _results_row(_spread(0.6), metric=metric), _results_row(_spread(0.3), metric=metric)
    runs = [_run(comparator, comparator, None, row=lo if better else hi),
            _run(subject, subject, None, row=hi if better else lo)]
    assert _only(claim_id, runs)["verdict"] == (C.HOLDS if better else C.FAILS)


@pytest.mark.parametrize("better", [True, False])
def test_1a_coverage(better):
    on = [_explanation(i, cams={"gradcam": _object(i)}) for i in range(N)]
    off = [_explanation(i, cams={"gradcam": ~_object(i)}) for i in range(N)]
    runs = [_run("baseline", "none", off if better else on), _run("cbam", "cbam", on if better else off)]
    row = _only("1a", runs)
    assert row["verdict"] == (C.HOLDS if better else C.FAILS)
    assert abs(row["value"]["mean"]) == pytest.approx(1.0)


@pytest.mark.parametrize("better", [True, False])
def test_1b_true_class_probability(better):
    high = [_explanation(i, prob=0.9 - 0.01 * i) for i in range(N)]
    low = [_explanation(i, prob=0.6 - 0.01 * i) for i in range(N)]
    runs = [_run("baseline", "none", low if better else high), _run("cbam", "cbam", high if better else low)]
    assert _only("1b", runs)["verdict"] == (C.HOLDS if better else C.FAILS)


def _profiles(i: int, on_object: bool) -> list[AttentionMap]:
    m = _object(i)
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    h, w = np.zeros(SIDE), np.zeros(SIDE)
    h[rows[0] if on_object else (rows[0] + 16) % SIDE] = 1.0
    w[cols[0] if on_object else (cols[0] + 16) % SIDE] = 1.0
    return [AttentionMap("layer1.0.ca", "layer1", "coord", "h_profile", "profile_h", h.astype(np.float32)),
            AttentionMap("layer1.0.ca", "layer1", "coord", "w_profile", "profile_w", w.astype(np.float32))]


@pytest.mark.parametrize("on_object", [True, False])
def test_3a_coordinate_attention_profiles(on_object):
    runs = [_run("coord", "coord", [_explanation(i, maps=_profiles(i, on_object)) for i in range(N)])]
    row = _only("3a", runs)
    assert row["verdict"] == (C.HOLDS if on_object else C.FAILS)
    assert row["compared_with"]["reference"]["mean"] == pytest.approx(0.25)   # 8 of 32 rows / columns


def test_3a_a_flat_gate_scores_exactly_chance():
    flat = [AttentionMap("b", "layer1", "coord", n, lay, np.full(SIDE, 0.5, np.float32))
            for n, lay in (("h_profile", "profile_h"), ("w_profile", "profile_w"))]
    row = _only("3a", [_run("coord", "coord", [_explanation(i, maps=flat) for i in range(N)])])
    assert row["value"]["mean"] == 0.0 and row["verdict"] == C.INCONCLUSIVE


def _gates(i: int, specific: str) -> list[AttentionMap]:
    """Channel stage means: the stage named ``specific`` encodes the class, the other is noise."""
    rng = np.random.default_rng(i)
    one_hot = np.eye(3)[LABELS[i]] + 0.05 * rng.normal(size=3)
    noise = rng.normal(size=3)
    early, late = (noise, one_hot) if specific == "late" else (one_hot, noise)
    return [AttentionMap("layer1", "layer1", "se", "channel (stage mean)", "channel", early.astype(np.float32)),
            AttentionMap("layer3", "layer3", "se", "channel (stage mean)", "channel", late.astype(np.float32))]


@pytest.mark.parametrize("specific", ["late", "early"])
def test_4_se_class_specificity_rises_with_depth(specific):
    row = _only("4", [_run("se", "se", [_explanation(i, summaries=_gates(i, specific)) for i in range(N)])])
    assert row["verdict"] == (C.HOLDS if specific == "late" else C.FAILS)
    assert "layer3" in row["test"] and "layer1" in row["test"]
    assert row["compared_with"]["chance"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("deeper_on_object", [True, False])
def test_5_bam_deeper_stage_moves_to_the_object(deeper_on_object):
    def maps(i):
        obj, bg = _object(i).astype(float), (~_object(i)).astype(float)
        first, deep = (bg, obj) if deeper_on_object else (obj, bg)
        return [_spatial("layer1", first, "bam"), _spatial("layer2", deep[::2, ::2], "bam")]
    row = _only("5", [_run("bam", "bam", [_explanation(i, summaries=maps(i)) for i in range(N)])])
    assert row["verdict"] == (C.HOLDS if deeper_on_object else C.FAILS)


def _affinity(i: int, on_object: bool) -> AttentionMap:
    cells = _object(i)[::4, ::4]                   # 8 x 8 cells of 4 px, each wholly object or not
    target = cells if on_object else ~cells
    aff = np.zeros((8, 8, 8, 8), np.float32)
    aff[:, :] = target / target.sum()
    return AttentionMap("nl2", "layer2", "nonlocal", "affinity", "affinity", aff)


@pytest.mark.parametrize("claim_id, kind", [("6a", "nonlocal"), ("6b", "mhsa"), ("6c", "danet")])
@pytest.mark.parametrize("on_object", [True, False])
def test_6_query_attention_gathers_on_the_object(claim_id, kind, on_object):
    runs = [_run(kind, kind, [_explanation(i, maps=[_affinity(i, on_object)]) for i in range(N)])]
    row = _only(claim_id, runs)
    assert row["verdict"] == (C.HOLDS if on_object else C.FAILS)


def _query_specific(i: int, specific: bool) -> AttentionMap:
    """Queries on the object attend to the object and the others to the background (specific), or the reverse."""
    cells = _object(i)[::4, ::4]
    aff = np.zeros((8, 8, 8, 8), np.float32)
    for y in range(8):
        for x in range(8):
            target = cells if cells[y, x] == specific else ~cells
            aff[y, x] = target / target.sum()
    return AttentionMap("nl2", "layer2", "nonlocal", "affinity", "affinity", aff)


@pytest.mark.parametrize("claim_id, kind", [("6d", "nonlocal"), ("6e", "mhsa"), ("6f", "danet")])
@pytest.mark.parametrize("specific", [True, False])
def test_6_query_specific_attention(claim_id, kind, specific):
    runs = [_run(kind, kind, [_explanation(i, maps=[_query_specific(i, specific)]) for i in range(N)])]
    assert _only(claim_id, runs)["verdict"] == (C.HOLDS if specific else C.FAILS)


def test_6_attention_that_ignores_the_query_gathers_but_is_not_query_specific():
    runs = [_run("nonlocal", "nonlocal", [_explanation(i, maps=[_affinity(i, True)]) for i in range(N)])]
    assert _only("6a", runs)["verdict"] == C.HOLDS
    row = _only("6d", runs)
    assert row["value"]["mean"] == 0.0 and row["verdict"] == C.INCONCLUSIVE


@pytest.mark.parametrize("on_object", [True, False])
def test_7_rollout_highlights_the_object(on_object):
    es = [_explanation(i, cams={"rollout": _object(i) if on_object else ~_object(i)}) for i in range(N)]
    assert _only("7", [_run("vit", "vit", es)])["verdict"] == (C.HOLDS if on_object else C.FAILS)


def _theta(i: int, zoom: bool) -> AttentionMap:
    """A window of half the side centred on the object (zoom) or the identity transform."""
    if not zoom:
        theta = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
    else:
        ys, xs = np.nonzero(_object(i))
        cy, cx = (ys.mean() + 0.5) / SIDE * 2 - 1, (xs.mean() + 0.5) / SIDE * 2 - 1
        theta = np.array([[0.5, 0, cx], [0, 0.5, cy]], np.float32)
    return AttentionMap("stn", "input", "stn", "sampled region", "affine", theta)


@pytest.mark.parametrize("zoom", [True, False])
def test_8_stn_zooms_onto_the_object(zoom):
    row = _only("8", [_run("stn", "stn", [_explanation(i, maps=[_theta(i, zoom)]) for i in range(N)])])
    assert row["verdict"] == (C.HOLDS if zoom else C.FAILS)
    assert row["value"]["mean"] == pytest.approx(4.0 if zoom else 1.0, rel=0.05)


def test_9_one_row_per_attention_type_and_another_recipe_is_said_not_compared():
    good, bad = {"per_image": {"correct": [1] * N, "values": {}}}, {"per_image": {"correct": [0] * N, "values": {}}}
    vit = _run("vit", "vit", None, row={**good, "recipe": "vit"})
    runs = [_run("baseline", "none", None, row={"per_image": {"correct": [1, 0] * (N // 2), "values": {}}}),
            _run("se", "se", None, row=good), _run("cbam", "cbam", None, row=bad), vit]
    rows = {r["id"]: r for r in C.claim_rows(tuple(c for c in C.CLAIMS if c.id == "9"), runs)}
    assert rows["9-se"]["verdict"] == C.HOLDS and rows["9-cbam"]["verdict"] == C.FAILS
    assert rows["9-vit"]["verdict"] == C.NOT_TESTED and "another recipe" in rows["9-vit"]["note"]


# ---- seeds, refusals, the whole list -----------------------------------------------------------------------------

def test_seed_agreement_pairs_runs_of_the_same_training_seed():
    hi, lo = _results_row(_spread(0.6)), _results_row(_spread(0.3))
    runs = [_run("baseline", "none", None, row=lo), _run("baseline_seed1", "none", None, 1, "baseline", row=lo),
            _run("triplet", "triplet", None, row=hi), _run("triplet_seed1", "triplet", None, 1, "triplet", row=hi)]
    row = _only("2a", runs)
    assert row["seeds"]["runs"] == 2 and row["seeds"]["same_sign"]
    runs[3] = _run("triplet_seed1", "triplet", None, 1, "triplet", row=_results_row(_spread(0.1)))
    row = _only("2a", runs)
    assert set(row["seeds"]["per_seed"]) == {"0", "1"} and not row["seeds"]["same_sign"]


def test_a_claim_whose_model_type_is_absent_gets_a_row_saying_so():
    rows = C.claim_rows(C.CLAIMS, [_run("baseline", "none", None, row=_results_row(_spread(0.3)))])
    by_id = {r["id"]: r for r in rows}
    assert {c.id for c in C.CLAIMS} <= set(by_id)          # nothing drops out
    assert all(r["verdict"] == C.NOT_TESTED for r in rows)
    assert "no Coordinate Attention model" in by_id["3a"]["note"]
    assert "no Triplet Attention and no SE model" in by_id["2b"]["note"]


def test_the_claims_cover_the_nine_sentences_of_the_issue():
    assert {c.number for c in C.CLAIMS} == set(range(1, 10))
    assert len({c.id for c in C.CLAIMS}) == len(C.CLAIMS)


def test_docs_claims_md_is_its_json_rendered():
    doc = json.loads((ROOT / "docs" / "claims.json").read_text())
    assert claims_markdown(doc) == (ROOT / "docs" / "claims.md").read_text()
    assert {r["claim"] for r in doc["rows"]} == set(range(1, 10))
    for row in doc["rows"]:
        assert row["verdict"] in C.VERDICTS
        if row["verdict"] != C.NOT_TESTED:   # the number is recomputed from the stored per-image values
            d = stats.paired_difference(row["per_image"]["subject"], row["per_image"]["reference"])
            assert d.to_json() == row["value"]
            assert row["verdict"] == C.verdict(d.lo, d.hi, row["threshold"], d.n)


def test_readme_opening_states_the_headline_of_docs_claims():
    from attnviz.evaluation.claims.markdown import headline

    doc = json.loads((ROOT / "docs" / "claims.json").read_text())
    opening = (ROOT / "README.md").read_text().split("## ", 1)[0]
    assert headline(doc) in opening and "docs/claims.md" in opening


def test_stage_keys_resolve_to_the_shallowest_and_deepest_stage_that_has_the_value():
    run = {"measured": {"stages": ["layer1", "layer2", "layer3"],
                        "values": {"stage_epg:layer2": [0.1], "stage_epg:layer3": [0.3]}}}
    assert C.series(run, "stage_epg:first") == [0.1] and C.series(run, "stage_epg:last") == [0.3]
    assert C.stage_named(run, "stage_epg:first") == "layer2"
    del run["measured"]["values"]["stage_epg:layer3"]
    assert C.series(run, "stage_epg:last") == []     # one stage: nothing to compare


def test_the_first_main_model_of_a_type_counts_with_its_own_replicates_only():
    runs = [_run("a", "se", None), _run("b", "se", None), _run("b_seed1", "se", None, 1, "b"),
            _run("a_seed1", "se", None, 1, "a")]
    assert [r["model"] for r in C.group_runs(runs)["se"]] == ["a", "a_seed1"]
