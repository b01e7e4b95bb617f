"""``attnviz eval``: score heatmaps on images whose object is known, for any set of models.

The images are the held-out benchmark scenes (data seed :data:`attnviz.zoo.training.EVAL_SEED`, never used in
training) or, with ``data=DIR``, a folder in the ImageFolder layout with masks or VOC boxes
(:mod:`attnviz.data.datasets`). Every map explains the image's *true* class. What is computed per image and model
is :func:`attnviz.evaluation.scoring.score_chunk`: localisation (pointing game, energy pointing game, IoU),
faithfulness (deletion / insertion AUC; ROAD on the first ``road_scenes`` images) and agreement with the
baseline's map, for every CAM method and the attention module's own map.

Images go ``batch_size`` at a time through every model (one ``explain_batch`` per model and chunk; the
perturbation curves and ROAD batched across the chunk's images and maps). Under ``torchrun`` each rank scores
every ``world``-th image on its own device and rank 0 gathers the per-image numbers and writes the files, so
the numbers do not depend on the number of processes. An image that cannot be read is reported and skipped.

Files: ``results.json`` (settings, every per-image value rounded to 1e-6 and all statistics computed from
those stored values, so they can be recomputed), ``results.md``, ``results.png`` and ``per_image.csv``
(:mod:`attnviz.evaluation.report`). Training-seed replicates (zoo source "replicate") are kept in a separate
"replicates" list of the same file.
"""
from __future__ import annotations

import json
import platform
import sys
import time
import zlib
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from attnviz.api import explain_batch
from attnviz.core import distributed
from attnviz.core.devices import use_threads
from attnviz.core.engine import DEFAULT_BATCH_SIZE
from attnviz.core.methods import CLASSIC_METHODS, check_methods
from attnviz.core.specs import ModelSpec
from attnviz.data import synth
from attnviz.data.scenes import EVAL_SEED
from attnviz.errors import AttnvizError
from attnviz.evaluation.hooks import EvalHooks, EvalProgress, Watch
from attnviz.evaluation.scoring import REGION, ROAD_MAPS, ScoringCount, region_mask, score_chunk  # noqa: F401 (re-exported)
from attnviz.evaluation.sources import FolderImages, SceneImages, open_images  # noqa: F401 (re-exported)
from attnviz.zoo import registry as zoo

DEFAULT_METHODS = tuple(CLASSIC_METHODS)
ROAD_SCENES = 30
CHECK_SCENES = 6
METRIC_KEYS = ("pointing_game", "energy_pointing_game", "iou", "deletion_auc", "insertion_auc", "road")
SETTINGS = ("seed", "n", "road_scenes", "methods", "synth_version", "data", "localisation_only")
REFERENCE = "baseline"   # agreement and paired differences are taken against this model when it can be used
DIGITS = 6               # per-image values are stored (and summarised) rounded to this many decimals


# ---- scoring a shard of the images ---------------------------------------------------------------------

def _r(v: float) -> float | int:
    """A per-image value as stored: rounded to :data:`DIGITS` decimals, whole numbers as ints (PG hits)."""
    v = round(float(v), DIGITS)
    return int(v) if v.is_integer() else v


def _rounded(d: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    return {m: {k: _r(v) for k, v in entry.items()} for m, entry in d.items()}


@dataclass
class _Plan:
    models: list[zoo.LoadedModel]
    reference: zoo.LoadedModel | None      # whose maps the others are compared with (may be scored too)
    methods: tuple[str, ...]
    road_scenes: int
    batch_size: int
    faithfulness: bool
    road_imputer: str = "torch"


def _reference_maps(loaded: zoo.LoadedModel, images: list[np.ndarray], labels: list[int], methods, batch_size: int,
                    ) -> list[dict[str, np.ndarray]]:
    es = explain_batch(loaded, images, methods, targets=labels, batch_size=batch_size, device=loaded.device,
                       record=False, class_names=loaded.spec.class_names)
    return [{m: e.cams[m].heatmap for m in methods} for e in es]


def _score_model(loaded: zoo.LoadedModel, images, decoded: dict, seeds: dict, ref_maps: dict, records: dict,
                 plan: _Plan, count: ScoringCount) -> dict[int, dict[str, np.ndarray]] | None:
    """One model's pass over a chunk's decoded images into ``records``; the maps when it is the reference."""
    name, ref = loaded.spec.name, plan.reference
    labelled = []
    for i in decoded:
        label, reason = images.label(i, loaded.spec)
        if label is None:
            records[i]["skipped"][name] = reason
        else:
            labelled.append((i, label))
    if not labelled:
        return None
    compare = ref is not None and loaded is not ref and tuple(ref.spec.class_names) == tuple(loaded.spec.class_names)
    scores, cams = score_chunk(
        loaded, [decoded[i][0] for i, _ in labelled], [lab for _, lab in labelled],
        [decoded[i][1] for i, _ in labelled], plan.methods,
        road=[i < plan.road_scenes for i, _ in labelled], seeds=[seeds[i] for i, _ in labelled],
        batch_size=plan.batch_size, reference=[ref_maps.get(i, {}) for i, _ in labelled] if compare else None,
        faithfulness=plan.faithfulness, count=count, road_imputer=plan.road_imputer)
    for (i, _), s in zip(labelled, scores):
        records[i]["models"][name] = {"correct": bool(s.correct), "values": _rounded(s.values),
                                      "agreement": _rounded(s.agreement)}
    return {i: c for (i, _), c in zip(labelled, cams)} if loaded is ref else None


def _decode_chunk(images, chunk: list[int], records: dict) -> dict[int, tuple[np.ndarray, np.ndarray | None]]:
    from tqdm import tqdm

    decoded: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
    for i in chunk:
        try:
            decoded[i] = images.load(i)
        except AttnvizError as exc:
            records[i]["skipped"]["*"] = str(exc)
            tqdm.write(f"skipped {images.ids[i]}: {exc}", file=sys.stderr)
    return decoded




def score_shard(images, indices: Sequence[int], plan: _Plan, progress: bool = False, watch: Watch | None = None,
                ) -> tuple[list[tuple[int, dict]], dict[str, ScoringCount]]:
    """Every model's numbers for the images ``indices`` (a rank's share): ``[(index, record)]`` and, per model,
    how many maps were scored.

    A record is ``{"models": {name: {"correct", "values", "agreement"}}, "skipped": {name or "*": reason}}``.
    ``watch`` is called after every model's pass over a chunk; when it returns True the run stops there and
    only the chunks every model finished are returned.
    """
    from tqdm import tqdm

    counts = {m.spec.name: ScoringCount() for m in plan.models}
    ref = plan.reference
    order = sorted(plan.models, key=lambda m: m is not ref)   # the reference first: the others need its maps
    records: dict[int, dict] = {i: {"models": {}, "skipped": {}} for i in indices}
    finished: list[int] = []
    step = 0
    # one step per model per image: with two models, half of the images' work is "10/20", not "5/10 images"
    bar = tqdm(total=len(indices) * len(order), desc="eval", unit="step", disable=not progress, file=sys.stderr,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total_fmt} image x model steps "
                          "[{elapsed}<{remaining}{postfix}]")
    for start in range(0, len(indices), plan.batch_size):
        chunk = list(indices[start:start + plan.batch_size])
        decoded = _decode_chunk(images, chunk, records)
        # ROAD's imputation noise is seeded by the image's pixels: the same image gets the same noise whatever its
        # position, shard or batch (and a folder export of the scenes gets the scenes' numbers)
        seeds = {i: zlib.crc32(np.ascontiguousarray(image).tobytes()) for i, (image, _) in decoded.items()}
        ref_maps: dict[int, dict[str, np.ndarray]] = {}
        if ref is not None and ref not in plan.models:
            usable = [i for i in decoded if images.label(i, ref.spec)[0] is not None]
            if usable:
                maps = _reference_maps(ref, [decoded[i][0] for i in usable], [images.label(i, ref.spec)[0]
                                                                              for i in usable],
                                       plan.methods, plan.batch_size)
                ref_maps = dict(zip(usable, maps))
        for k, loaded in enumerate(order):
            bar.set_postfix_str(f"model {k + 1}/{len(order)} {loaded.spec.name}", refresh=False)
            cams = _score_model(loaded, images, decoded, seeds, ref_maps, records, plan, counts[loaded.spec.name])
            if cams is not None:
                ref_maps = cams
            bar.update(len(chunk))
            step += 1
            if k == len(order) - 1:
                finished += chunk
            if watch is not None and watch(step, loaded.spec.name, list(finished), records, counts):
                bar.close()
                return [(i, records[i]) for i in finished], counts
    bar.close()
    return [(i, records[i]) for i in indices], counts


# ---- rows of results.json ------------------------------------------------------------------------------

def model_row(spec, ids: list, records: list[dict]) -> dict:
    """One model's entry: identity, per-image values aligned to ``ids`` (None where it has none), check values."""
    name = spec.name
    mine = [r["models"].get(name) for r in records]
    maps: dict[str, list[str]] = {}
    for r in mine:
        for m, entry in (r or {}).get("values", {}).items():
            for k in entry:
                if k not in maps.setdefault(m, []):
                    maps[m].append(k)
    methods = list(dict.fromkeys(m for r in mine for m in (r or {}).get("agreement", {})))
    agreement_keys = list(dict.fromkeys(k for r in mine for a in (r or {}).get("agreement", {}).values() for k in a))
    per_image = {
        "correct": [None if r is None else int(r["correct"]) for r in mine],
        "values": {m: {k: [None if r is None else r["values"].get(m, {}).get(k) for r in mine] for k in keys}
                   for m, keys in maps.items()},
        "agreement": {m: {k: [None if r is None else r["agreement"].get(m, {}).get(k) for r in mine]
                          for k in agreement_keys} for m in methods},
    }
    check = [{"index": ids[j], "values": r["values"]} for j, r in enumerate(mine) if r is not None][:CHECK_SCENES]
    card = spec.card or {}
    row = {"model": name, "display_name": spec.display_name, "attention": spec.attention, "source": spec.source,
           "training_seed": (card.get("recipe") or {}).get("torch_seed"), "per_image": per_image, "check": check}
    if card.get("replicate_of"):
        row["replicate_of"] = card["replicate_of"]
    if card.get("recipe_name", "shared") != "shared":
        row["recipe"] = card["recipe_name"]   # not the CNNs' shared recipe: results.md says so beside its row
    return row


def _describe_command(n: int, road: int, seed: int, methods: Sequence[str], data: Path | None,
                      models: Sequence[str] | None = None) -> str:
    parts = ["attnviz eval"]
    if models:
        parts.append(f"--models {','.join(models)}")
    if data is not None:
        parts.append(f"--data {data}")
    else:
        parts.append(f"--n {n}")
    parts.append(f"--road {road}")
    if data is None and seed != EVAL_SEED:
        parts.append(f"--seed {seed}")
    if tuple(methods) != DEFAULT_METHODS:
        parts.append(f"--methods {','.join(methods)}")
    return " ".join(parts)


def _reference_model(chosen: list[zoo.LoadedModel], images, device) -> zoo.LoadedModel | None:
    """The model whose maps the others are compared with: the bundled baseline where it fits the data (it is
    loaded for its maps alone when it is not evaluated), else the first attention-free model chosen."""
    for m in chosen:
        if m.spec.name == REFERENCE:
            return m
    if isinstance(images, SceneImages):
        try:
            spec = zoo.get_spec(REFERENCE)
        except AttnvizError:
            spec = None
        if spec is not None and tuple(spec.class_names) == tuple(synth.CLASS_NAMES) and spec.weights.available():
            return zoo.load(spec, device)
    return next((m for m in chosen if m.spec.attention == "none"), None)


def run_eval(models: Sequence[str | ModelSpec] | None = None, n: int | None = None, seed: int | None = None,
             out: Path = Path("attnviz-eval"), progress: bool = True, methods: Sequence[str] | None = None,
             road_scenes: int = ROAD_SCENES, update: bool = False, *, data: str | Path | None = None,
             batch_size: int = DEFAULT_BATCH_SIZE, device: str | None = None, faithfulness: bool = True,
             command: str | None = None, hooks: EvalHooks | None = None, unpack_to: Path | None = None,
             threads: int | None = None, road_imputer: str = "torch") -> dict:
    """Evaluate ``models`` (default: the bundled zoo) and write results.{md,json,png} into ``out``.

    ``n``: benchmark scenes (default 200); with ``data`` at most that many images of the folder (default all).
    ``data`` may be a folder or a ``.zip`` of one (:func:`attnviz.data.archive.extract_archive`).
    ``update`` keeps the other models' rows (and replicates) of an existing ``results.json`` made with the
    same settings, so one newly trained variant or replicate can be added without re-running the whole zoo.
    ``faithfulness=False`` skips deletion / insertion and ROAD (localisation and agreement only).
    Under torchrun every rank returns after the gather; only rank 0 writes files and gets the result.
    ``command``: the command line to record in results.md (the CLI passes its own; default: one rebuilt from
    the arguments, ``--models`` included when given). ``hooks``: progress and stop for one process (the page).
    ``unpack_to``: where a ``.zip`` is unpacked (the page keeps it in the tab's job folder to draw its images).
    ``threads``: torch's CPU threads (default torch's own), recorded in results.md. ``road_imputer``: ``"torch"``
    (attnviz.metrics.imputation) or ``"library"`` (pytorch-grad-cam's reference; benchmarks/eval_cost.py).
    """
    from attnviz.evaluation.report import write_outputs

    threads = use_threads(threads)
    if batch_size < 1:
        raise AttnvizError("--batch-size must be at least 1.")
    if data is not None and seed is not None:
        raise AttnvizError("--seed chooses benchmark scenes; it does not apply to --data.")
    methods = check_methods(methods or DEFAULT_METHODS)
    names = list({(m.name if isinstance(m, ModelSpec) else m): m for m in models}.values()) if models \
        else zoo.bundled()
    if not names:
        raise AttnvizError("No models to evaluate: the bundled weights are missing.")
    world = distributed.current()
    device = distributed.rank_device(device, world)
    seed = EVAL_SEED if seed is None else seed
    data = None if data is None else Path(data)
    with distributed.process_group(world, device), ExitStack() as stack:
        loaded = [zoo.load(name, device) for name in names]
        if world.distributed and not world.is_main:
            distributed.barrier(world)   # rank 0 lists the folder / generates the scenes (and their cache) first
        images = open_images(data, n, seed, loaded, progress and world.is_main, stack, unpack_to)
        if world.distributed and world.is_main:
            distributed.barrier(world)
        for m in loaded:
            images.check(m.spec)
        n_images = len(images.ids)
        road_scenes = max(0, min(road_scenes, n_images)) if faithfulness else 0
        result = {
            "command": command or _describe_command(n_images, road_scenes, seed, methods, data,
                                                    [m.spec.name for m in loaded] if models else None),
            "seed": None if data is not None else seed, "n": n_images, "road_scenes": road_scenes,
            "methods": list(methods), "target": "the true class", "synth_version": synth.VERSION,
            "data": None if data is None else str(data), "localisation_only": not faithfulness,
            "machine": f"{platform.machine()}, torch {torch.__version__}, {threads} threads",
        }
        previous = _previous(out, result, images.ids) if update else None
        reference = _reference_model(loaded, images, device)
        plan = _Plan(loaded, reference, methods, road_scenes, batch_size, faithfulness, road_imputer)
        names = [m.spec.name for m in loaded]
        run = _Scoring(result, images, plan, names, previous, world.size)
        mine, counts = score_shard(images, [i for i, _ in distributed.shard(range(n_images), world)], plan,
                                   progress=progress and world.is_main, watch=run.watch(hooks))
        parts = distributed.gather((mine, counts), world)
        if not world.is_main:
            return {}
        records = distributed.merge_indexed([p[0] for p in parts])
        counts = {m.spec.name: ScoringCount() for m in loaded}
        for _, part in parts:
            for name, c in part.items():
                counts[name].add(c)
        done = sorted(i for p in parts for i, _ in p[0])
        result = run.assemble(done, records, counts)
    write_outputs(result, out)
    total = ScoringCount()
    for c in counts.values():
        total.add(c)
    _print_scoring(total, result["seconds"])
    print(f"eval: results in {out}/ (results.md, results.json, results.png, per_image.csv, forest.png)",
          file=sys.stderr)
    return result


class _Scoring:
    """One run's assembly of results.json from the images finished so far: at the end, or for a progress
    report while the run goes on (:class:`EvalHooks`)."""

    def __init__(self, result: dict, images, plan: _Plan, names: list[str], previous: dict | None,
                 processes: int) -> None:
        self.result, self.images, self.plan, self.names = result, images, plan, names
        self.previous, self.processes = previous, processes
        self.start = time.perf_counter()

    def assemble(self, done: list[int], records: list[dict], counts: dict) -> dict:
        result = dict(self.result)
        total = len(self.images.ids)
        if len(done) < total:
            result["stopped"] = {"images_done": len(done), "images_total": total}
            result["n"] = len(done)
        _assemble(result, _Finished(self.images, done), records, counts, self.plan.models, self.plan.reference,
                  self.names, self.previous, time.perf_counter() - self.start, self.plan.batch_size,
                  self.processes)
        return result

    def watch(self, hooks: EvalHooks | None) -> Watch | None:
        if hooks is None:
            return None
        total, steps = len(self.images.ids), 0

        def watch(step: int, model: str, finished: list[int], records: dict, counts: dict) -> bool:
            nonlocal steps
            steps = steps or -(-total // self.plan.batch_size) * len(self.plan.models)
            if hooks.on_progress is not None:
                def partial() -> dict:
                    return self.assemble(finished, [records[i] for i in finished], counts)
                hooks.on_progress(EvalProgress(len(finished), total, step, steps, model,
                                               time.perf_counter() - self.start, partial))
            return hooks.stopping()

        return watch


class _Finished:
    """The images a run finished, in index order, read as :func:`_assemble` reads the whole set."""

    def __init__(self, images, done: list[int]) -> None:
        self.ids = [images.ids[i] for i in done]
        self.listing_skipped = images.listing_skipped
        self.area = images.object_area(done) if len(done) < len(images.ids) else images.object_area()

    def object_area(self) -> float | None:
        return self.area


def _assemble(result: dict, images, records: list, counts: dict, loaded: list, reference, names: list[str],
              previous: dict | None, seconds: float, batch_size: int, processes: int) -> None:
    """results.json from the per-image records: settings, skipped files, one row per model (replicates apart),
    the rows an ``--update`` keeps, and the statistics (:func:`attnviz.evaluation.summary.finalise`)."""
    from attnviz.evaluation.summary import finalise

    result.update(
        ids=images.ids, object_area=None if images.object_area() is None else round(images.object_area(), 4),
        reference=reference.spec.name if reference is not None else None,
        batch_size=batch_size, device=str(loaded[0].device), processes=processes,
        skipped=images.listing_skipped + [{"image": images.ids[i], "model": who if who != "*" else None,
                                           "reason": why} for i, r in enumerate(records)
                                          for who, why in r["skipped"].items()],
    )
    rows = [model_row(m.spec, images.ids, records) for m in loaded]
    for row in rows:
        row["scoring"] = counts[row["model"]].to_json()
    fresh = [r for r in rows if r["source"] != "replicate"]
    replicates = [r for r in rows if r["source"] == "replicate"]
    kept_models = [r for r in (previous or {}).get("models", []) if r["model"] not in names]
    kept_replicates = [r for r in (previous or {}).get("replicates", []) if r["model"] not in names]
    order = {name: i for i, name in enumerate(zoo.bundled())}
    if previous:   # the table is the first run's plus these rows: record both commands
        result["updates"] = previous.get("updates", []) + [result["command"]]
        result["command"] = previous["command"]
    result["seconds"] = round(((previous or {}).get("seconds") or 0.0) + seconds, 1)
    result["models"] = sorted(kept_models + fresh, key=lambda r: order.get(r["model"], len(order)))
    result["replicates"] = sorted(kept_replicates + replicates, key=lambda r: r["model"])
    finalise(result)


def _print_scoring(count: ScoringCount, seconds: float) -> None:
    saved = count.maps_requested - count.maps_scored
    line = (f"eval: {seconds:.1f} s; scored {count.maps_scored} of {count.maps_requested} maps "
            f"({saved} identical to another method's map of the same image, numbers copied)")
    if count.road_requested:
        line += f"; ROAD {count.road_scored} of {count.road_requested}"
    print(line, file=sys.stderr)


def _previous(out: Path, result: dict, ids: list) -> dict:
    """The results.json an ``--update`` adds to, refused unless it was made with the same settings and images."""
    path = out / "results.json"
    if not path.exists():
        raise AttnvizError(f"nothing to update: {path} does not exist; run without --update")
    previous = json.loads(path.read_text())
    if any("per_image" not in row for row in previous.get("models", []) + previous.get("replicates", [])):
        raise AttnvizError(f"cannot update {path}: it was written by an older attnviz without per-image values; "
                           "run without --update")
    different = [k for k in SETTINGS if previous.get(k) != result[k]]
    if different:
        raise AttnvizError(f"cannot update {path}: it was made with other settings ({', '.join(different)}); "
                           "run without --update")
    if previous.get("ids") != ids:
        raise AttnvizError(f"cannot update {path}: it scored other images (the folder changed?); run without --update")
    return previous


def scene_metrics(loaded: zoo.LoadedModel, image: np.ndarray, label: int, mask: np.ndarray | None,
                  methods: Sequence[str], with_road: bool, seed: int = 0) -> tuple[dict[str, dict[str, float]], bool]:
    """Every metric of every map of one model on one image (the batch of one of :func:`score_chunk`), and
    whether the model was right. ROAD's imputation noise starts from ``seed`` (``attnviz eval`` uses a CRC-32
    of the image's pixels)."""
    (s,), _ = score_chunk(loaded, [image], [label], [mask], check_methods(methods), road=[with_road], seeds=[seed],
                          batch_size=1)
    return s.values, bool(s.correct)
