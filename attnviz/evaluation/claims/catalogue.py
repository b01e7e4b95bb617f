"""The attention papers' claims about where attention looks, as data: one :class:`Claim` entry each, one row each.

A claim is a sentence from a paper (or a widely read text about it), where it comes from, the honest strongest
reading of it as a test — one per-image value, compared within one network (its value against a chance level or
another of its stages) or between two networks on the same images (:class:`Within`, :class:`Paired`) — the
threshold the mean difference must clear, and the model types it needs. Adding a claim is adding one entry to
:data:`CLAIMS` (its measurement, when results.json lacks it, goes into :mod:`attnviz.evaluation.claims.measure`).

Every row's number is the mean per-image difference with its 95 % bootstrap CI
(:func:`attnviz.evaluation.stats.paired_difference`). The verdict rule (:func:`verdict`): **holds** when the
whole CI lies above the threshold, **does not hold** when it lies below, **inconclusive** when the CI includes
the threshold (touching counts as including). Each training seed's run gives its own mean difference; the row
says whether their signs all agree with the main run's. A claim whose model type is absent gets a row that
says so instead of dropping out.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from attnviz.evaluation import stats
from attnviz.evaluation.summary import same_sign

HOLDS, FAILS, INCONCLUSIVE, NOT_TESTED = "holds", "does not hold", "inconclusive", "not tested"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, NOT_TESTED)
EVERY = "*"   # a claim about "each attention type": one row per type among the models


def verdict(lo: float | None, hi: float | None, threshold: float, n: int) -> str:
    """The CI against the threshold: above it -> holds, below -> does not hold, touching or including it (or
    fewer than two images) -> inconclusive."""
    if lo is None or hi is None or n < 2:
        return INCONCLUSIVE
    if lo > threshold:
        return HOLDS
    if hi < threshold:
        return FAILS
    return INCONCLUSIVE


# ---- the evidence: per-image values of one run ------------------------------------------------------------

def series(run: dict, key: str) -> list[float | None]:
    """One run's per-image values of ``key``: ``correct`` and ``results:<map>.<metric>`` come from its
    results.json row, anything else from its measurements, where ``<prefix>:first`` / ``<prefix>:last`` name
    the shallowest / deepest stage that has the value. Empty when the run has none."""
    row = run.get("row") or {}
    if key == "correct":
        return list(row.get("per_image", {}).get("correct", []))
    if key.startswith("results:"):
        method, metric = key[len("results:"):].split(".")
        return list(row.get("per_image", {}).get("values", {}).get(method, {}).get(metric, []))
    measured = run.get("measured") or {}
    values = measured.get("values", {})
    prefix, _, where = key.partition(":")
    if where in ("first", "last"):
        stages = [s for s in measured.get("stages", []) if f"{prefix}:{s}" in values]
        if len(stages) < 2:
            return []
        key = f"{prefix}:{stages[0] if where == 'first' else stages[-1]}"
    return list(values.get(key, []))


def stage_named(run: dict, key: str) -> str:
    """Which stage ``<prefix>:first`` / ``:last`` resolved to for this run (for the row's text)."""
    prefix, _, where = key.partition(":")
    measured = run.get("measured") or {}
    stages = [s for s in measured.get("stages", []) if f"{prefix}:{s}" in measured.get("values", {})]
    return (stages[0] if where == "first" else stages[-1]) if len(stages) >= 2 and where in ("first", "last") else ""


def _pairs(a: list, b: list) -> tuple[list[float], list[float]]:
    kept = [(x, y) for x, y in zip(a, b) if x is not None and y is not None]
    return [x for x, _ in kept], [y for _, y in kept]


@dataclass(frozen=True)
class Outcome:
    """What a test found on the main run(s) and, per training seed, the mean difference."""

    subject: list[float]            # the per-image values compared (aligned with ``reference``)
    reference: list[float]
    per_seed: dict[str, float]      # training seed -> mean of subject - reference for that seed's run(s)
    chance: float | None = None     # the chance level of the subject's value, where one exists


def _mean_difference(a: list, b: list) -> float | None:
    x, y = _pairs(a, b)
    return sum(p - q for p, q in zip(x, y)) / len(x) if x else None


@dataclass(frozen=True)
class Within:
    """One network: its per-image ``key`` minus its ``reference`` (a chance level, or another stage; "": the value
    itself is compared with the threshold)."""

    key: str
    reference: str
    chance_key: str = ""   # a measured chance level to show beside the values ("class_decoding" -> 1/classes)

    def evaluate(self, subject: list[dict], comparator: list[dict]) -> Outcome:
        main = subject[0]
        a, b = _pairs(series(main, self.key), self._reference(main))
        per_seed = {str(r.get("training_seed")): m for r in subject
                    if (m := _mean_difference(series(r, self.key), self._reference(r))) is not None}
        chance = None
        if self.chance_key:
            found = [v for k, v in (main.get("measured") or {}).get("chance", {}).items()
                     if k.startswith(self.chance_key)]
            chance = found[0] if found else None
        return Outcome(a, b, per_seed, chance)

    def _reference(self, run: dict) -> list[float | None]:
        return series(run, self.reference) if self.reference else [0.0] * len(series(run, self.key))


@dataclass(frozen=True)
class Paired:
    """Two networks on the same images: the subject's per-image ``key`` minus the comparator's; each training seed
    pairs the subject's run with the comparator's run of the same seed."""

    key: str

    def evaluate(self, subject: list[dict], comparator: list[dict]) -> Outcome:
        a, b = _pairs(series(subject[0], self.key), series(comparator[0], self.key))
        by_seed = {r.get("training_seed"): r for r in comparator}
        per_seed = {}
        for r in subject:
            other = by_seed.get(r.get("training_seed"))
            if other is not None and (m := _mean_difference(series(r, self.key), series(other, self.key))) is not None:
                per_seed[str(r.get("training_seed"))] = m
        return Outcome(a, b, per_seed)


@dataclass(frozen=True)
class Claim:
    """One sentence and its test. ``needs``: the subject's attention type (or :data:`EVERY`), then the
    comparator's for a :class:`Paired` test. ``test_line`` is the test in one line; ``{subject}``,
    ``{comparator}`` and ``{stage_first}`` / ``{stage_last}`` are filled in per row."""

    id: str
    number: int                      # the claim's number in issue #26's list
    sentence: str
    source: str
    test_line: str
    test: Within | Paired
    needs: tuple[str, ...]
    threshold: float = 0.0
    reference_label: str = ""        # what the subject is compared with, in words
    measured: bool = True            # needs the recorded measurement pass (False: results.json alone)
    skip: Callable[[dict], str] | None = None   # a reason to leave a row out of an EVERY claim, or ""


def _other_recipe(row: dict) -> str:
    return "trained with another recipe (compare its maps, not its scores)" if row.get("recipe", "shared") != "shared" \
        else ""


_CBAM = "Woo et al., CBAM (ECCV 2018), §4.3 Grad-CAM figure; a widely read CBAM tutorial says the same"
_TRIPLET = "Misra et al., Rotate to Attend: Triplet Attention (WACV 2021), GradCAM / GradCAM++ figure"
_CA = "Hou et al., Coordinate Attention (CVPR 2021), §3 and the visualisation section"
_NONLOCAL = "Wang et al., Non-local Neural Networks (CVPR 2018), attention figure; self-attention tutorials"
_TIGHT = ("Grad-CAM energy pointing game (share of the map's mass on the object), {subject} − {comparator}, "
          "paired over images")
_BETTER = "Grad-CAM IoU of the half-max region with the object, {subject} − {comparator}, paired over images"

CLAIMS: tuple[Claim, ...] = (
    Claim("1a", 1, "With CBAM the Grad-CAM map covers more of the object than the baseline's.", _CBAM,
          "share of the object inside Grad-CAM's top region of the object's own size (so spreading the map "
          "cannot raise it), {subject} − {comparator}, paired over images", Paired("gradcam_coverage"),
          ("cbam", "none"), reference_label="baseline's coverage"),
    Claim("1b", 1, "With CBAM the true class gets a higher probability than in the baseline.", _CBAM,
          "softmax probability of the true class, {subject} − {comparator}, paired over images",
          Paired("true_probability"), ("cbam", "none"), reference_label="baseline's probability"),
    Claim("2a", 2, "Triplet Attention's Grad-CAM maps are tighter on the object than the baseline's.", _TRIPLET,
          _TIGHT, Paired("results:gradcam.energy_pointing_game"), ("triplet", "none"), measured=False,
          reference_label="baseline's EPG"),
    Claim("2b", 2, "Triplet Attention's Grad-CAM maps are tighter on the object than SE's.", _TRIPLET,
          _TIGHT, Paired("results:gradcam.energy_pointing_game"), ("triplet", "se"), measured=False,
          reference_label="SE's EPG"),
    Claim("2c", 2, "Triplet Attention's Grad-CAM maps are tighter on the object than CBAM's.", _TRIPLET,
          _TIGHT, Paired("results:gradcam.energy_pointing_game"), ("triplet", "cbam"), measured=False,
          reference_label="CBAM's EPG"),
    Claim("3a", 3, "Coordinate Attention keeps direction-aware position information: its height and width "
          "attention locate the object (unlike SE's channel-only gate).", _CA,
          "how often the height / width gate profile (channel mean) peaks on a row / column holding the object, "
          "mean over every block and both axes, minus how often a random row / column does (a channel-only gate "
          "such as SE's is flat and scores exactly this chance), per image",
          Within("ca_profile_hit", "ca_profile_chance"), ("coord",), reference_label="chance (random row/column)"),
    Claim("3b", 3, "Coordinate Attention's Grad-CAM localises the object better than SE's.", _CA, _BETTER,
          Paired("results:gradcam.iou"), ("coord", "se"), measured=False, reference_label="SE's IoU"),
    Claim("3c", 3, "Coordinate Attention's Grad-CAM localises the object better than CBAM's.", _CA, _BETTER,
          Paired("results:gradcam.iou"), ("coord", "cbam"), measured=False, reference_label="CBAM's IoU"),
    Claim("4", 4, "SE's excitations are class-agnostic in early stages and class-specific in later ones.",
          "Hu et al., Squeeze-and-Excitation Networks (CVPR 2018), §6.4 role of excitation",
          "how often a stage's mean channel gates decode the image's class (leave-one-out nearest class "
          "centroid over the images), deepest stage ({stage_last}) − first stage ({stage_first}), paired over "
          "images", Within("class_decoding:last", "class_decoding:first", chance_key="class_decoding"), ("se",),
          reference_label="first stage's decoding"),
    Claim("5", 5, "BAM's attention maps move from low-level features toward the target object at deeper stages.",
          "Park et al., BAM (BMVC 2018), hierarchical attention figure",
          "energy pointing game of the stage's attention map (scaled to [0, 1]), deepest BAM ({stage_last}) − "
          "first BAM ({stage_first}), paired over images", Within("stage_epg:last", "stage_epg:first"), ("bam",),
          reference_label="first BAM's EPG"),
    *(Claim(f"6{letter}", 6, f"The attention of a query point on the object gathers on the same object, not on "
            f"the background ({name}).", _NONLOCAL,
            "share of the attention weights of query cells on the object that falls on object key cells (mean "
            "over blocks, heads averaged) minus the object's share of the key cells (uniform attention), per image "
            "whose object fills at least one query and one key cell",
            Within("query_mass", "query_share"), (kind,), reference_label="uniform attention")
      for letter, kind, name in (("a", "nonlocal", "Non-local"), ("b", "mhsa", "self-attention"),
                                 ("c", "danet", "DANet position attention"))),
    *(Claim(f"6{letter}", 6, f"The attention of a query point on the object gathers on the same object: it "
            f"depends on the query being on the object ({name}).", _NONLOCAL,
            "share of the attention weights on object key cells, query cells on the object − query cells off it "
            "(attention that ignores its query, as GCNet found for non-local blocks, scores 0), per image",
            Within("query_mass", "query_mass_background"), (kind,), reference_label="queries off the object")
      for letter, kind, name in (("d", "nonlocal", "Non-local"), ("e", "mhsa", "self-attention"),
                                 ("f", "danet", "DANet position attention"))),
    Claim("7", 7, "A vision transformer's attention rollout highlights the object.",
          "Abnar & Zuidema, Quantifying Attention Flow in Transformers (ACL 2020); Dosovitskiy et al., ViT "
          "(ICLR 2021), attention figure",
          "energy pointing game of attention rollout minus the object's share of the image (a uniform map's EPG), "
          "per image", Within("rollout_epg", "object_share"), ("vit",), reference_label="uniform map"),
    Claim("8", 8, "The spatial transformer's learnt transform zooms onto the object.",
          "Jaderberg et al., Spatial Transformer Networks (NeurIPS 2015)",
          "magnification of the object: its share of the sampled window over its share of the image (1: no "
          "zoom; below 1: the window misses it), per image; a zoom needs at least 1.25, what a window of 0.89 "
          "of the side that keeps the whole object gives", Within("window_magnification", ""), ("stn",),
          threshold=1.25, reference_label="no zoom (1)"),
    Claim("9", 9, "Each attention type is at least as accurate as the baseline.",
          "every attention paper's accuracy table (the CBAM tutorial warns it need not transfer)",
          "top-1 correct (0/1), {subject} − {comparator}, paired over images; holds only when the CI lies above 0, "
          "so equal accuracy reads inconclusive", Paired("correct"), (EVERY, "none"), measured=False,
          reference_label="baseline's accuracy", skip=_other_recipe),
)


# ---- rows --------------------------------------------------------------------------------------------------

def type_name(kind: str) -> str:
    """A model type in words: the attention type's display name, "baseline (no attention)" for none."""
    from models.attention import ATTENTION_TYPES

    if kind == "none":
        return "baseline (no attention)"
    return ATTENTION_TYPES[kind].display if kind in ATTENTION_TYPES else {"vit": "vision transformer"}.get(kind, kind)


def group_runs(runs: list[dict]) -> dict[str, list[dict]]:
    """Model type -> its runs, the main (not a replicate) run first, then its training-seed replicates. With
    several main models of one type the first one counts (its replicates only)."""
    groups: dict[str, list[dict]] = {}
    for run in runs:
        if not run.get("replicate_of") and run["attention"] not in groups:
            groups[run["attention"]] = [run]
    for run in runs:
        kind = run["attention"]
        if run.get("replicate_of") and kind in groups and run["replicate_of"] == groups[kind][0]["model"]:
            groups[kind].append(run)
    return groups


def _seeds(per_seed: dict[str, float], mean: float, threshold: float) -> dict:
    """Seed agreement: every seed's mean difference on the same side of the threshold as the main run's."""
    shifted = [v - threshold for v in per_seed.values()]
    agree = len(shifted) >= 2 and same_sign(shifted) and (shifted[0] > 0) == (mean > threshold)
    return {"per_seed": per_seed, "runs": len(per_seed), "same_sign": bool(agree)}


def _fill(text: str, subject: list[dict], comparator: list[dict], claim: Claim) -> str:
    keys = [getattr(claim.test, "key", ""), getattr(claim.test, "reference", "")]
    return text.format(subject=subject[0]["display_name"],
                       comparator=comparator[0]["display_name"] if comparator else "",
                       stage_last=stage_named(subject[0], keys[0]) or "?",
                       stage_first=stage_named(subject[0], keys[1]) or "?")


def _row_head(claim: Claim, row_id: str, models: list[str]) -> dict:
    return {"id": row_id, "claim": claim.number, "sentence": claim.sentence, "source": claim.source,
            "models": models, "threshold": claim.threshold}


def tested_row(claim: Claim, row_id: str, subject: list[dict], comparator: list[dict]) -> dict:
    """A claim tested on the subject's runs (and the comparator's): the number, its CI, the verdict, the seeds."""
    out = claim.test.evaluate(subject, comparator)
    row = _row_head(claim, row_id, [subject[0]["model"]] + ([comparator[0]["model"]] if comparator else []))
    row["test"] = _fill(claim.test_line, subject, comparator, claim)
    d = stats.paired_difference(out.subject, out.reference) if out.subject else None
    row["value"] = d.to_json() if d else {"mean": None, "ci95": None, "n": 0}
    row["compared_with"] = {"label": claim.reference_label,
                            "subject": stats.mean_ci(out.subject).to_json() if out.subject else None,
                            "reference": stats.mean_ci(out.reference).to_json()
                            if out.reference and getattr(claim.test, "reference", "-") else None,
                            "chance": out.chance}
    row["verdict"] = verdict(d.lo if d else None, d.hi if d else None, claim.threshold, d.n if d else 0)
    row["seeds"] = _seeds(out.per_seed, d.mean if d else 0.0, claim.threshold) if d else \
        {"per_seed": {}, "runs": 0, "same_sign": False}
    row["per_image"] = {"subject": out.subject, "reference": out.reference}
    if not out.subject:
        row["note"] = "no image has this value for these models (the measurement does not apply to them)"
    return row


def refused_row(claim: Claim, row_id: str, missing: list[str], why: str = "") -> dict:
    """The row of a claim the models cannot test: which model type is absent (or ``why`` not)."""
    row = _row_head(claim, row_id, [])
    row.update(test=claim.test_line.format(subject=type_name(claim.needs[0]) if claim.needs[0] != EVERY else
                                           "each attention type",
                                           comparator=type_name(claim.needs[1]) if len(claim.needs) > 1 else "",
                                           stage_first="first stage", stage_last="deepest stage"),
               value={"mean": None, "ci95": None, "n": 0}, compared_with=None, verdict=NOT_TESTED,
               seeds={"per_seed": {}, "runs": 0, "same_sign": False}, per_image=None,
               note=f"not tested: {why}" if why else
               f"not tested: no {' and no '.join(type_name(k) for k in missing)} model among the models "
               "(add one with --models)")
    return row


def claim_rows(claims: tuple[Claim, ...], runs: list[dict]) -> list[dict]:
    """One row per claim (an :data:`EVERY` claim: one per attention type present), tested or refused."""
    groups = group_runs(runs)
    rows = []
    for claim in claims:
        comparator_kinds = list(claim.needs[1:])
        subjects = [claim.needs[0]] if claim.needs[0] != EVERY else \
            [k for k in groups if k not in ("none", *comparator_kinds)]
        missing = [k for k in [*([] if claim.needs[0] == EVERY else claim.needs[:1]), *comparator_kinds]
                   if k not in groups]
        if claim.needs[0] == EVERY and not subjects:
            missing.append("attention")
        if missing:
            rows.append(refused_row(claim, claim.id, missing))
            continue
        for kind in subjects:
            subject = groups[kind]
            why = claim.skip(subject[0].get("row") or {}) if claim.skip else ""
            row_id = claim.id if claim.needs[0] != EVERY else f"{claim.id}-{subject[0]['model']}"
            if why:
                rows.append(refused_row(claim, row_id, [], f"{subject[0]['display_name']} is {why}"))
                continue
            rows.append(tested_row(claim, row_id, subject, groups[comparator_kinds[0]] if comparator_kinds else []))
    return rows


def counts(rows: list[dict]) -> dict[str, int]:
    return {v: sum(r["verdict"] == v for r in rows) for v in VERDICTS}
