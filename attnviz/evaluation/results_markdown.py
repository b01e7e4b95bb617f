"""results.md: every table and sentence generated from results.json, each finding with its numbers.
"""
from __future__ import annotations

from attnviz.evaluation import stats
from attnviz.evaluation.findings import findings_section, shared_recipe
from attnviz.evaluation.sanity_checks import FLAG_SPEARMAN
from attnviz.evaluation.scoring import REGION
from attnviz.evaluation.summary import paired, same_sign
from attnviz.metrics.localisation import OWN_MAP


def road_scope(result: dict) -> str:
    """Which images ROAD scored, in words: "ROAD: off." when none did (``--road 0``, ``--localisation-only``)."""
    road = result.get("road_scenes") or 0
    return "ROAD: off." if road <= 0 else f"ROAD uses the first {road} images."


def _num(value: float, pct: bool, digits: int | None = None) -> str:
    if pct:
        return f"{value * 100:.{1 if digits is None else digits}f}"
    return f"{value:.{3 if digits is None else digits}f}"


def fmt_ci(stat: dict | None, pct: bool = False, signed: bool = False, digits: int | None = None) -> str:
    """"48.6 [41.2, 55.9]" (percent) or "0.292 [0.268, 0.317]"; "–" when there is no value."""
    if not stat or stat.get("mean") is None:
        return "–"
    mean = _num(stat["mean"], pct, digits)
    if signed and stat["mean"] >= 0:
        mean = "+" + mean
    if not stat.get("ci95") or stat.get("n", 0) < 2:
        return mean
    lo, hi = stat["ci95"]
    return f"{mean} [{_num(lo, pct, digits)}, {_num(hi, pct, digits)}]"


def _title(m: str) -> str:
    from attnviz.core.methods import title

    return title(m)


def _identical_sentence(result: dict) -> list[str]:
    s = result.get("scoring") or {}
    if not s.get("maps_requested"):
        return []
    pairs = s.get("identical", {})
    scenes = sum(len([v for v in r["per_image"]["correct"] if v is not None]) for r in result["models"]
                 + result.get("replicates", []))
    parts = [f"{_title(k.split(' = ')[0])} = {_title(k.split(' = ')[1])} for {v} of {scenes} model-image pairs"
             for k, v in pairs.items()]
    rows = {r["model"]: r for r in result["models"]}
    gaps = []
    for m in ("xgradcam", "hirescam"):
        diffs = [abs(r["maps"][m][k]["mean"] - r["maps"]["gradcam"][k]["mean"])
                 for r in rows.values() if m in r["maps"] and "gradcam" in r["maps"]
                 for k in r["maps"][m] if k in r["maps"]["gradcam"]]
        if diffs:
            gaps.append(f"{_title(m)} {max(diffs):.1e}")
    text = ("Where the CAM layer feeds global average pooling and the classifier directly (the core variants' last "
            "stage), the class score's gradient is the same at every position, so XGrad-CAM and HiResCAM equal "
            "Grad-CAM up to float rounding. Maps that were bit-identical for an image were scored once and their "
            f"numbers copied: {s['maps_scored']:,} of {s['maps_requested']:,} maps scored")
    text += f" ({'; '.join(parts)})." if parts else " (no two maps were bit-identical)."
    if gaps:
        text += (" The largest difference between such a row and Grad-CAM's, over all models and metrics: "
                 + ", ".join(gaps) + " (rounding can move a pixel across the IoU threshold or the peak).")
    return [text, ""]


OWN_RECIPE = "trained with a different recipe: compare its maps, not its scores, with the CNNs'"


def _label(row: dict) -> str:
    """The model's name in a table, marked † when it was not trained with the CNNs' shared recipe."""
    return row["display_name"] + (" †" if not shared_recipe(row) else "")


def _own_recipe_note(result: dict) -> list[str]:
    other = [r["display_name"] for r in result["models"] if not shared_recipe(r)]
    return ["", f"† {', '.join(other)}: {OWN_RECIPE} (its model card records the recipe)."] if other else []


def _main_table(result: dict, flags: dict) -> list[str]:
    lines = ["| model | accuracy | map | PG % | EPG % | IoU | Del ↓ | Ins ↑ | ROAD ↑ |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in result["models"]:
        acc = {"mean": row["accuracy"], "ci95": row.get("accuracy_ci95"), "n": row.get("accuracy_n", 0)}
        for m, st in row["maps"].items():
            if m == REGION:
                continue
            mark = " ⚑" if (row["model"], m) in flags else ""
            lines.append(f"| {_label(row)} | {fmt_ci(acc, True)} % | {_title(m)}{mark} | "
                         f"{fmt_ci(st.get('pointing_game'), True)} | {fmt_ci(st.get('energy_pointing_game'), True)} | "
                         f"{fmt_ci(st.get('iou'))} | {fmt_ci(st.get('deletion_auc'))} | "
                         f"{fmt_ci(st.get('insertion_auc'))} | {fmt_ci(st.get('road'))} |")
    return lines + _own_recipe_note(result)


def _diff_cell(d: dict | None, pct: bool, seeds: dict[str, float] | None = None) -> str:
    """A paired difference with its CI; ◆ when the CI excludes 0; ✓ / ✗ when training-seed replicates say
    whether the sign of (variant − reference) of the run means is the same for every seed (``seeds``)."""
    if not d:
        return "–"
    text = fmt_ci(d, pct, signed=True)
    cell = f"**{text}** ◆" if d.get("excludes_zero") else text
    return cell + (_seed_mark(seeds) if seeds else "")


def _seed_mark(per_seed: dict[str, float]) -> str:
    return " ✓" if same_sign(per_seed.values()) else " ✗"


def _seed_count(rows: list[dict], by_seed: dict[str, dict]) -> str:
    """How many ◆ cells of replicated models keep their sign in every training seed."""
    verdicts = [same_sign(per_seed.values()) for r in rows if r.get("source") != "replicate"
                for m, metrics in by_seed.get(r["model"], {}).items() for k, per_seed in metrics.items()
                if r["vs_baseline"].get(m, {}).get(k, {}).get("excludes_zero")]
    held, changed = sum(verdicts), len(verdicts) - sum(verdicts)
    return (f"Of the ◆ PG / EPG / IoU cells of models with replicates, {held} keep their sign in every training seed "
            f"and {changed} do not.")


def _vs_table(result: dict) -> list[str]:
    rows = [r for r in result["models"] + result.get("replicates", []) if r.get("vs_baseline")]
    if not rows:
        return []
    ref = next(r for r in result["models"] if r["model"] == result["reference"])
    cells = sum(len(d) for r in rows for m, d in r["vs_baseline"].items() if m != "accuracy")
    excluded = sum(bool(d.get("excludes_zero")) for r in rows for m, ds in r["vs_baseline"].items()
                   if m != "accuracy" for d in ds.values())
    by_seed = {e["model"]: e.get("minus_reference_by_seed", {}) for e in result.get("across_seeds", [])}
    seed_legend = ""
    if any(by_seed.values()):
        seed_legend = (" ✓ / ✗ after a PG, EPG or IoU cell: the model has training-seed replicates, and the "
                       "difference of the run means (variant − reference of the same seed) has the same sign for "
                       "every seed (✓) or not (✗: a finding of one training run). " + _seed_count(rows, by_seed))
    lines = ["", f"## Difference from the {ref['display_name'].lower()} (paired, same images)", "",
             f"Each cell: mean over the images both models scored of (variant − {ref['display_name'].lower()}), "
             "with its 95 % bootstrap CI (the per-image differences resampled, which keeps the pairing). "
             "Accuracy, PG and EPG in percentage points. **Bold** ◆ = the CI excludes 0. "
             f"{excluded} of {cells} map-metric cells exclude 0; nothing corrects for the number of comparisons "
             "(about 1 in 20 cells excludes 0 by chance when nothing differs)." + seed_legend, "",
             "| model | map | Δ accuracy | Δ PG | Δ EPG | Δ IoU | Δ Del | Δ Ins | Δ ROAD |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        acc = _diff_cell(r["vs_baseline"].get("accuracy"), True)
        mine = by_seed.get(r["model"], {}) if r.get("source") != "replicate" else {}
        for m, d in r["vs_baseline"].items():
            if m == "accuracy":
                continue
            seeds = mine.get(m, {})
            lines.append(f"| {_label(r) if r.get('source') != 'replicate' else r['model']} | {_title(m)} | "
                         f"{acc} | {_diff_cell(d.get('pointing_game'), True, seeds.get('pointing_game'))} | "
                         f"{_diff_cell(d.get('energy_pointing_game'), True, seeds.get('energy_pointing_game'))} | "
                         f"{_diff_cell(d.get('iou'), False, seeds.get('iou'))} | "
                         f"{_diff_cell(d.get('deletion_auc'), False)} | {_diff_cell(d.get('insertion_auc'), False)} | "
                         f"{_diff_cell(d.get('road'), False)} |")
    return lines


def _agreement_table(result: dict) -> list[str]:
    rows = [r for r in result["models"] + result.get("replicates", []) if r.get("agreement")]
    if not rows:
        return []
    ref = result.get("reference")
    lines = ["", f"## Agreement with the `{ref}` maps", "",
             f"How much each model's map agrees with `{ref}`'s map of the same image, method and target (the true "
             "class): Spearman rank correlation of the pixels, IoU of the two maps' top-20 % regions, and the "
             "distance between their peaks in % of the image side (`attnviz.metrics.agreement`); mean over images, "
             "95 % bootstrap CI.", ""]
    floor = [r for r in rows if r.get("replicate_of") == ref]
    if floor:
        for r in floor:
            a = r["agreement"].get("gradcam")
            if a and "spearman" in a:
                lines += [f"Retraining alone moves the maps: `{r['model']}` (the same network and recipe, another "
                          f"training seed) agrees with `{ref}` at Grad-CAM Spearman {fmt_ci(a['spearman'])}, top-20 % "
                          f"IoU {fmt_ci(a.get('top20_iou'))}. A variant's agreement is only evidence of a change "
                          "made by attention where it is clearly below that level.", ""]
    lines += ["| model | method | Spearman | top-20 % IoU | peak distance % |", "|---|---|---|---|---|"]
    for r in rows:
        name = r["display_name"] if r.get("source") != "replicate" else r["model"]
        for m, a in r["agreement"].items():
            lines.append(f"| {name} | {_title(m)} | {fmt_ci(a.get('spearman'))} | {fmt_ci(a.get('top20_iou'))} | "
                         f"{fmt_ci(a.get('peak_distance_pct'), digits=1)} |")
    return lines


def _seed_note(entry: dict | None, metric: str = "energy_pointing_game") -> str:
    """Does the sign of (own map − Grad-CAM) hold across training seeds?"""
    if not entry or "own_minus_gradcam" not in entry or metric not in entry["own_minus_gradcam"]:
        return ""
    values = entry["own_minus_gradcam"][metric]
    listed = ", ".join(f"{v * 100:+.1f}" for v in values)
    seeds = ", ".join(str(s) for s in entry["seeds"])
    verdict = ("the sign holds for every training seed" if same_sign(values)
               else "**the sign is not the same for every training seed**")
    return f" Across training seeds {seeds}: own − Grad-CAM EPG {listed} points — {verdict}."


def _own_maps(result: dict) -> list[str]:
    own = [r for r in result["models"] if OWN_MAP in r["maps"] and "gradcam" in r["maps"]]
    if not own:
        return []
    seeds = {e["model"]: e for e in result.get("across_seeds", [])}
    lines = ["", "## The modules' own maps vs Grad-CAM", "",
             "The attention module's own last-stage spatial map next to Grad-CAM of the same model, and the paired "
             "difference own − Grad-CAM on the same images (points; ◆ = its CI excludes 0)."]
    if result.get("object_area") is not None:
        lines[-1] += (f" Chance level: objects cover {result['object_area'] * 100:.1f} % of the image on average, "
                      "which is the EPG of a uniform map and roughly the pointing game of a random one.")
    lines.append("")
    higher, lower, unclear, above_chance = [], [], [], []
    for r in own:
        a, g = r["maps"][OWN_MAP], r["maps"]["gradcam"]
        per = r["per_image"]["values"]
        d_epg = paired(per[OWN_MAP]["energy_pointing_game"], per["gradcam"]["energy_pointing_game"]) \
            if "energy_pointing_game" in per.get(OWN_MAP, {}) else None
        d_pg = paired(per[OWN_MAP]["pointing_game"], per["gradcam"]["pointing_game"]) \
            if "pointing_game" in per.get(OWN_MAP, {}) else None
        if "energy_pointing_game" not in a:
            continue
        lines.append(f"* {r['display_name']}: own map EPG {fmt_ci(a['energy_pointing_game'], True)} %, PG "
                     f"{fmt_ci(a['pointing_game'], True)} % — Grad-CAM EPG "
                     f"{fmt_ci(g['energy_pointing_game'], True)} %, "
                     f"PG {fmt_ci(g['pointing_game'], True)} %; own − Grad-CAM: EPG {_diff_cell(d_epg, True)}, "
                     f"PG {_diff_cell(d_pg, True)} points.{_seed_note(seeds.get(r['model']))}")
        if d_epg and d_epg["excludes_zero"]:
            (higher if d_epg["mean"] > 0 else lower).append(r["display_name"])
        else:
            unclear.append(r["display_name"])
        area = result.get("object_area")
        ci = a["energy_pointing_game"].get("ci95")
        if area is not None and ci and ci[0] > area:
            above_chance.append(r["display_name"])
    lines.append("")
    summary_parts = []
    if higher:
        summary_parts.append(f"more of the map's energy on the object than Grad-CAM: {', '.join(higher)}")
    if lower:
        summary_parts.append(f"less than Grad-CAM: {', '.join(lower)}")
    if unclear:
        summary_parts.append(f"no difference the CI can resolve: {', '.join(unclear)}")
    if summary_parts:
        lines.append("By the paired EPG difference (CI excluding 0), own maps with " + "; ".join(summary_parts) + ".")
    steady, unsteady = [], []
    for r in own:
        entry = seeds.get(r["model"], {}).get("own_minus_gradcam", {}).get("energy_pointing_game")
        if entry:
            (steady if same_sign(entry) else unsteady).append(r["display_name"])
    if steady or unsteady:
        lines.append("Across training seeds the sign of own − Grad-CAM EPG is the same in every run for: "
                     f"{', '.join(steady) or 'none'}; it changes with the seed for: {', '.join(unsteady) or 'none'} "
                     "(those models' statements above hold for the bundled run only).")
        single = [r["display_name"] for r in own if r["display_name"] not in steady + unsteady]
        if single:
            lines.append(f"No training-seed replicates, so one training run each: {', '.join(single)}.")
    if result.get("object_area") is not None:
        lines.append(f"Own maps whose EPG CI lies entirely above the chance level "
                     f"({result['object_area'] * 100:.1f} %): {', '.join(above_chance) or 'none'}.")
    return lines


def _stn(result: dict) -> list[str]:
    stn = [r for r in result["models"] if REGION in r["maps"]]
    if not stn:
        return []
    replicated = {e["model"]: e for e in result.get("across_seeds", [])}
    lines = ["", "## Spatial transformer: the sampled region vs the object", ""]
    for r in stn:
        reg = r["maps"][REGION]
        runs = replicated.get(r["model"])
        lines.append(f"* {r['display_name']}: mean IoU of the sampled square with the object mask "
                     f"**{fmt_ci(reg['iou'])}**; on average the square covers {fmt_ci(reg['coverage'], True)} % of "
                     f"the object's pixels and {fmt_ci(reg['area'], True)} % of the image"
                     + (f" ({len(runs['runs'])} training runs in \"Across training seeds\")." if runs
                        else " (one training run: no training-seed replicates)."))
    return lines


def _pm(d: dict, pct: bool) -> str:
    return f"{_num(d['mean'], pct)} ± {_num(d['sd'], pct)}"


def _seeds_section(result: dict) -> list[str]:
    entries = result.get("across_seeds") or []
    if not entries:
        return []
    lines = ["", "## Across training seeds", "",
             "The bundled model (training seed 0) and its replicates, retrained with `attnviz train --attention "
             "<key> --seed S` (only the seed changes), scored on the same images: mean ± sd over the runs of the "
             "run means.", "",
             "| model | runs | accuracy % | map | PG % | EPG % | IoU |", "|---|---|---|---|---|---|---|"]
    for e in entries:
        runs = f"{len(e['runs'])} (seeds {', '.join(str(s) for s in e['seeds'])})"
        for m, st in e["maps"].items():
            lines.append(f"| {e['display_name']} | {runs} | {_pm(e['accuracy'], True)} | {_title(m)} | "
                         f"{_pm(st['pointing_game'], True) if 'pointing_game' in st else '–'} | "
                         f"{_pm(st['energy_pointing_game'], True) if 'energy_pointing_game' in st else '–'} | "
                         f"{_pm(st['iou'], False) if 'iou' in st else '–'} |")
    claims = []
    for e in entries:
        diffs = e.get("minus_reference_by_seed", {})
        for m in ("gradcam", OWN_MAP):
            per_seed = diffs.get(m, {}).get("energy_pointing_game")
            if not per_seed:
                continue
            listed = ", ".join(f"{v * 100:+.1f} (seed {s})" for s, v in per_seed.items())
            verdict = ("same sign for every seed" if same_sign(per_seed.values())
                       else "**the sign changes with the training seed: no claim either way**")
            claims.append(f"* {e['display_name']}, {_title(m)} EPG minus the {result['reference']}'s of the same "
                          f"seed: {listed} points — {verdict}.")
    if claims:
        lines += ["", *claims]
    return lines


def results_markdown(result: dict, flags: dict[tuple[str, str], float] | None = None,
                     checked: set[str] | None = None) -> str:
    """results.md: settings, the table with CIs, paired differences, agreement, own maps, seeds, sanity flags.

    ``flags``: the maps ``sanity.json`` flags (None: no sanity check ran); ``checked``: the models it covered."""
    checked = checked or set()
    flags = flags or {}
    if result.get("data"):
        title = f"# Results: localisation and faithfulness on `{result['data']}`"
        source = f"{result['n']} images of `{result['data']}`"
    else:
        title = "# Results: localisation and faithfulness of the bundled zoo"
        source = (f"{result['n']} benchmark scenes, data seed {result['seed']}, never used in training; "
                  f"synth v{result['synth_version']}")
    procs = result.get("processes", 1)
    stopped = result.get("stopped")
    note = ([f"**Stopped early:** {stopped['images_done']} of {stopped['images_total']} images were scored by "
             "every model; the numbers below are over those images only.", ""] if stopped else [])
    lines = [title, ""] + note + findings_section(result) + [
        f"Produced by `{result['command']}`"
        + "".join(f", then `{u}`" for u in result.get("updates", [])) + f" ({source}; {result['seconds'] / 60:.1f} min on {result['machine']}, "
        f"device {result.get('device', 'cpu')}" + (f", {procs} processes" if procs > 1 else "") + "). "
        f"Every map explains the **true class**. {road_scope(result)} "
        "Each number is a mean over images with its 95 % bootstrap confidence interval in brackets "
        f"({stats.RESAMPLES:,} resamples of the images, seed {stats.SEED}); `results.json` holds every per-image "
        "value they come from.", "",
        "* **PG** pointing game: % of images whose map maximum lies on the object (higher is better)",
        "* **EPG** energy pointing game: % of the map's mass on the object (higher is better)",
        "* **IoU** of the map thresholded at half its maximum with the object mask (higher is better)",
        "* **Del** deletion AUC: class probability as the most salient pixels are removed (lower is better)",
        "* **Ins** insertion AUC: class probability as they are revealed on a blurred image (higher is better)",
        "* **ROAD** pytorch-grad-cam's ROADCombined, percentiles 20–80, imputation noise seeded per image "
        "(higher is better)",
        "* **attention** = the module's own last-stage spatial map (stage mean of its gates); models with "
        "channel-only attention (SE, ECA) or none have no row for it.", "",
    ]
    lines += _identical_sentence(result)
    lines += ["![Energy pointing game and insertion AUC per model and map, with 95 % CIs](results.png)", ""]
    lines += _main_table(result, flags)
    marked = [f"{model}/{_title(m)} (Spearman {rho:.2f})" for (model, m), rho in flags.items()
              if any(r["model"] == model and m in r["maps"] for r in result["models"])]
    if marked:
        lines += ["", "⚑ The sanity check (`sanity.json`, [sanity.md](sanity.md)) flags this map `keeps_structure`: "
                  "with every layer of the model re-initialised it still correlates with the original map above "
                  f"{FLAG_SPEARMAN} (Spearman, mean over images) — " + ", ".join(marked) + ". Its scores say more "
                  "about the input than about what the model learnt."]
    covered = [r["model"] for r in result["models"] if r["model"] in checked]
    if covered and not marked:
        lines += ["", f"The sanity checks ([sanity.md](sanity.md)) cover {len(covered)} of these "
                  f"{len(result['models'])} models and flag none of their maps: with every layer re-initialised, "
                  f"no map keeps a mean Spearman correlation above {FLAG_SPEARMAN} with the trained model's map."]
    lines += _vs_table(result)
    lines += _agreement_table(result)
    lines += _own_maps(result)
    lines += _stn(result)
    lines += _seeds_section(result)
    skipped = result.get("skipped") or []
    if skipped:
        lines += ["", f"## Skipped ({len(skipped)})", ""]
        lines += [f"* `{s['image']}`" + (f" ({s['model']})" if s.get("model") else "") + f": {s['reason']}"
                  for s in skipped[:50]]
        if len(skipped) > 50:
            lines.append(f"* … and {len(skipped) - 50} more (all in `results.json`)")
    lines += [""]
    return "\n".join(lines)
