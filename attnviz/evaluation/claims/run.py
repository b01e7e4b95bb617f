"""``attnviz claims``: test every claim of :data:`attnviz.evaluation.claims.CLAIMS` on a set of models and images.

The numbers come from two places, on the same images: a ``results.json`` of ``attnviz eval`` (accuracy,
Grad-CAM localisation) and one recorded measurement pass per trained network
(:mod:`attnviz.evaluation.claims.measure`). ``results`` names the file; without it ``OUT/results.json`` is
used when it exists (it must hold the models asked for), else ``attnviz eval`` runs first (localisation only: the
claims use no deletion / insertion / ROAD) and writes it there. Training-seed replicates of the chosen models
(``<name>_seed<S>``) join when results.json has them, so each row can say whether its sign holds in every seed.

Writes ``OUT/claims.json`` (settings, every run's per-image measurements, every row with its per-image values)
and ``OUT/claims.md``, generated from the JSON alone (:mod:`attnviz.evaluation.claims.markdown`).
"""
from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

from attnviz.errors import AttnvizError
from attnviz.evaluation.claims.catalogue import CLAIMS, EVERY, Claim, claim_rows, counts
from attnviz.evaluation.claims.measure import measure_run
from attnviz.zoo import registry as zoo

RUN_FIELDS = ("model", "display_name", "attention", "training_seed", "replicate_of", "recipe")


def _with_replicates(names: Sequence[str]) -> list[str]:
    """``names`` plus the training-seed replicates of them found on disk (the zoo's replicates folder)."""
    extra = [s.name for s in zoo.replicate_specs() if (s.card or {}).get("replicate_of") in names
             and s.name not in names and s.weights.available()]
    return list(names) + sorted(extra)


def _check_reuse(result: dict, path: Path, models: Sequence[str] | None, data: str | None, n: int | None) -> None:
    have = {r["model"] for r in result.get("models", []) + result.get("replicates", [])}
    missing = [m for m in models or [] if m not in have]
    if missing:
        raise AttnvizError(f"{path} has no row for {', '.join(missing)}: add them with `attnviz eval --models "
                           f"{','.join(missing)} --update --out {path.parent}`, or choose another --out")
    if data is not None and str(result.get("data")) != str(data):
        raise AttnvizError(f"{path} scored {result.get('data') or 'the benchmark scenes'}, not {data}; choose "
                           "another --out (claims runs eval there) or pass the matching --results")
    if n is not None and result.get("n") != n:
        raise AttnvizError(f"{path} scored {result.get('n')} images, not --n {n}; choose another --out")


def load_results(models: Sequence[str] | None, data: str | Path | None, n: int | None, out: Path,
                 results: str | Path | None, device: str | None, batch_size: int, progress: bool,
                 ) -> tuple[dict, Path]:
    """The results.json the claims read: ``results``, else ``OUT/results.json``, else a fresh localisation-only
    ``attnviz eval`` of ``models`` (default: the bundled zoo) and their replicates written there."""
    from attnviz.evaluation.run import run_eval

    path = Path(results) if results is not None else out / "results.json"
    if path.exists():
        try:
            result = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise AttnvizError(f"cannot read {path}: {exc}") from None
        if "models" not in result or "ids" not in result:
            raise AttnvizError(f"{path} is not a results.json of `attnviz eval`")
        _check_reuse(result, path, models, None if data is None else str(data), n)
        return result, path
    if results is not None:
        raise AttnvizError(f"{path} does not exist")
    names = _with_replicates(list(models) if models else zoo.bundled())
    print(f"claims: no {path}; running `attnviz eval --localisation-only` on {len(names)} models first",
          file=sys.stderr)
    result = run_eval(models=names, n=n, out=out, progress=progress, data=data, batch_size=batch_size, device=device,
                      faithfulness=False)
    return result, path


def select_runs(result: dict, models: Sequence[str] | None) -> list[dict]:
    """The trained networks the claims look at: results.json's rows (of ``models`` and their replicates)."""
    rows = result.get("models", []) + result.get("replicates", [])
    if models:
        rows = [r for r in rows if r["model"] in models or r.get("replicate_of") in models]
    return [{**{k: r.get(k) for k in RUN_FIELDS}, "recipe": r.get("recipe", "shared"), "row": r} for r in rows]


def measured_types(claims: Sequence[Claim]) -> set[str]:
    kinds = {k for c in claims if c.measured for k in c.needs}
    return kinds


def _images(result: dict, runs: list[dict], progress: bool):
    from attnviz.evaluation.run import FolderImages, SceneImages

    if result.get("data"):
        images = FolderImages(Path(result["data"]), [zoo.get_spec(r["model"]) for r in runs], result["n"])
    else:
        images = SceneImages(result["n"], result["seed"], progress)
    if list(images.ids) != list(result["ids"]):
        raise AttnvizError("the images differ from the ones results.json scored (the folder changed?); run "
                           "`attnviz eval` again or choose another --out")
    return images


def measure(result: dict, runs: list[dict], claims: Sequence[Claim], device: str | None, batch_size: int,
            progress: bool) -> float:
    """Run the measurement pass on every run whose model type a measured claim needs; returns its seconds."""
    kinds = measured_types(claims)
    todo = [r for r in runs if r["attention"] in kinds or EVERY in kinds]
    if not todo:
        return 0.0
    images = _images(result, todo, progress)
    start = time.perf_counter()
    for run in todo:
        loaded = zoo.load(run["model"], device)
        run["measured"] = measure_run(loaded, images, list(range(len(images.ids))), batch_size, progress)
    return time.perf_counter() - start


def _describe(models: Sequence[str] | None, data, results, out: Path) -> str:
    parts = ["attnviz claims"]
    if models:
        parts.append(f"--models {','.join(models)}")
    if data is not None:
        parts.append(f"--data {data}")
    if results is not None:
        parts.append(f"--results {results}")
    return " ".join(parts + [f"--out {out}"])


def run_claims(models: Sequence[str] | None = None, *, data: str | Path | None = None, n: int | None = None,
               out: str | Path = Path("attnviz-claims"), results: str | Path | None = None, device: str | None = None,
               batch_size: int = 32, progress: bool = True, command: str | None = None,
               claims: Sequence[Claim] = CLAIMS) -> dict:
    """Test ``claims`` on ``models`` (default: every model of results.json) and write OUT/claims.{json,md}."""
    from attnviz.evaluation.claims.markdown import write_claims

    torch.set_num_threads(min(2, torch.get_num_threads()))
    out = Path(out)
    models = list(dict.fromkeys(models)) if models else None
    result, path = load_results(models, data, n, out, results, device, batch_size, progress)
    runs = select_runs(result, models)
    if not runs:
        raise AttnvizError(f"{path} holds none of the models asked for")
    seconds = measure(result, runs, claims, device, batch_size, progress)
    rows = claim_rows(tuple(claims), runs)
    doc = {
        "command": command or _describe(models, data, results, out),
        "results": {"path": str(path), "command": result.get("command"), "updates": result.get("updates", []),
                    "n": result.get("n"), "seed": result.get("seed"), "data": result.get("data")},
        "ids": result["ids"], "machine": f"{platform.machine()}, torch {torch.__version__}",
        "device": str(device or "auto"), "measurement_seconds": round(seconds, 1),
        "claims": sorted({c.number for c in claims}),
        "counts": counts(rows), "rows": rows,
        "runs": [{**{k: r.get(k) for k in RUN_FIELDS}, "measured": r.get("measured")} for r in runs],
    }
    write_claims(doc, out)
    c = doc["counts"]
    print(f"claims: {len(rows)} rows: {c['holds']} hold, {c['does not hold']} do not hold, {c['inconclusive']} "
          f"inconclusive, {c['not tested']} not tested (measurements {seconds:.0f} s) -> {out / 'claims.md'}",
          file=sys.stderr)
    return doc
