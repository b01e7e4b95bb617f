"""``attnviz explain``: grids, reports and CSVs for many images — a chunk of images per model pass, one bad file
never stopping the batch, and under torchrun the images shared among the ranks.

The data flow per chunk of ``batch_size`` images:

1. DataLoader workers decode the files (:func:`attnviz.data.images.decode_image`, the page's decoder) and return a
   failure as data — a worker that raised would end the whole loader, so a decompression bomb or a truncated JPEG
   becomes one "skipped" line instead;
2. every model runs ONCE over the chunk (:func:`attnviz.api.explain_batch`);
3. each image's rows become the :class:`~attnviz.results.Comparison` ``compare()`` would have built, and
   :func:`attnviz.app.pipeline.run` finishes it exactly as for the page (grid, localisation scores, report), so the
   files are the one-image path's.

Under ``torchrun`` image ``i`` goes to rank ``i % world`` (:mod:`attnviz.core.distributed`); after every chunk the
ranks send their finished files to rank 0, which alone writes the output folder — it is the same folder a
one-process run writes, also when the ranks run on machines that share no disk.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from attnviz.api import check_applicable, explain_batch
from attnviz.app import pipeline
from attnviz.app.report import CSV_PREDICTION_COLUMNS, maps_npz_bytes, write_csv
from attnviz.core import distributed
from attnviz.core.devices import resolve_device
from attnviz.core.engine import resolve_target
from attnviz.core.methods import DEFAULT_METHODS, check_methods
from attnviz.data.datasets import IMAGE_SUFFIXES
from attnviz.data.images import decode_image, load_mask
from attnviz.errors import EXIT_USER_ERROR, AttnvizError, TargetError
from attnviz.metrics.agreement import comparison_agreement
from attnviz.results import Comparison, Explanation
from attnviz.zoo import registry as zoo

CSV_SCORE_COLUMNS = ["image", "model", "map", "pointing_game", "energy_pointing_game", "iou"]
EXIT_PARTIAL = 1
DIR_BATCH_SIZE = 16   # images per model pass of `attnviz explain DIR` (its --batch-size default)
MASK_STEM = "_mask"   # "<stem>_mask.png" beside an image is its ground-truth mask, not an input


def default_workers() -> int:
    """``min(4, cores)`` decoding processes; under torchrun the cores are shared by the ranks of this machine."""
    per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    return min(4, max(1, (os.cpu_count() or 1) // max(1, per_machine)))


def collect_inputs(paths: Sequence[str]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files as given, folders expanded (sorted, not recursively); and what in those folders is not read, each with
    the reason: files that are not supported images, and subfolders (listed, not searched: a folder tree can hold
    far more than one meant to pass, and its output names would collide). ``<stem>_mask.png`` files are masks, not
    inputs. A missing or bad file given by name is reported when it is decoded."""
    found: list[Path] = []
    unsupported: list[tuple[Path, str]] = []
    for raw in paths:
        p = Path(raw)
        if not p.is_dir():
            found.append(p)
            continue
        for f in sorted(p.iterdir()):
            if f.is_dir():
                unsupported.append((f, "a subfolder: explain reads the images directly inside the folders it is "
                                       "given; name the subfolder too to include its images"))
                continue
            if not f.is_file():
                continue
            if f.suffix.lower() in IMAGE_SUFFIXES:
                if not f.stem.endswith(MASK_STEM):
                    found.append(f)
            else:
                kind = f.suffix.lower() or "no extension"
                unsupported.append((f, f"not a supported image ({kind}); images must be "
                                       f"{', '.join(s.lstrip('.') for s in IMAGE_SUFFIXES)}"))
    if not found and not unsupported:
        raise AttnvizError("No images found in the given paths.")
    return found, unsupported


def mask_beside(path: Path) -> np.ndarray | None:
    candidate = path.with_name(f"{path.stem}{MASK_STEM}.png")
    return load_mask(candidate) if candidate.is_file() else None


@dataclass
class Decoded:
    """What a loader worker hands over for one file: the pixels and mask, or why there are none."""

    index: int
    path: str
    image: np.ndarray | None = None
    mask: np.ndarray | None = None
    error: str = ""


class ImageFiles(Dataset):
    """The files of one rank, decoded in DataLoader workers; never raises (a raise would stop every worker)."""

    def __init__(self, items: Sequence[tuple[int, Path]]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, k: int) -> Decoded:
        index, path = self.items[k]
        try:
            return Decoded(index, str(path), decode_image(path), mask_beside(path))
        except AttnvizError as exc:
            return Decoded(index, str(path), error=str(exc))
        except Exception as exc:  # noqa: BLE001 — anything else a hostile file provokes is still this file's problem
            return Decoded(index, str(path), error=f"could not be read ({type(exc).__name__}: {exc})")


def _as_list(items: list[Decoded]) -> list[Decoded]:
    return items  # images differ in size: a chunk stays a list (module-level so spawned workers can pickle it)


@dataclass(frozen=True)
class Options:
    """What to compute for every image (the command line's flags)."""

    models: tuple[str, ...]
    methods: tuple[str, ...]
    target: str | int | None = None
    layer: str | list[str] | None = None
    contrast: str | int | None = None
    eigen_smooth: bool = False
    aug_smooth: bool = False
    amp: bool = False
    device: str = "cpu"
    npz: bool = False
    refine: bool = False                       # RefineCAM over the layers
    sess: int = 0                              # SESS scales (0: off)
    stems: tuple[tuple[str, str], ...] = ()    # (input path, output stem) where the file's own stem is taken


@dataclass
class Outcome:
    """One image's result as it travels to rank 0: its files (name -> bytes) and CSV rows, or why it was skipped."""

    index: int
    path: str
    files: dict[str, bytes] = field(default_factory=dict)
    predictions: list[dict] = field(default_factory=list)
    scores: list[dict] = field(default_factory=list)
    skipped: str = ""
    warnings: list[str] = field(default_factory=list)   # about the result, e.g. pipeline.OOD_NOTE


def _explain_images(name: str, images: list[np.ndarray], o: Options) -> list[Explanation | str]:
    """One pass of model ``name`` over ``images``; a failure is split in halves until it is one image's (its
    message then takes that image's place), so one image (say, whose top-1 is the contrast class) or one
    out-of-memory chunk never costs the others."""
    if not images:
        return []
    try:
        return list(explain_batch(name, images, o.methods, targets=o.target, layer=o.layer, batch_size=len(images),
                                  device=o.device, contrast=o.contrast, eigen_smooth=o.eigen_smooth,
                                  aug_smooth=o.aug_smooth, amp=o.amp, skip_unavailable=True, refine=o.refine,
                                  sess=o.sess))
    except (AttnvizError, torch.OutOfMemoryError) as exc:
        if isinstance(exc, torch.OutOfMemoryError) and torch.cuda.is_available():
            torch.cuda.empty_cache()
        if len(images) == 1:
            return [str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__]
        half = len(images) // 2
        return _explain_images(name, images[:half], o) + _explain_images(name, images[half:], o)


def png_bytes(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise AttnvizError("The grid image could not be encoded as PNG.")
    return buf.tobytes()


def _finish(d: Decoded, rows: list[Explanation], o: Options) -> Outcome:
    """The page's ending for one image whose model rows are computed: grid, scores, report, files, CSV rows."""
    comparison = Comparison(image=d.image, explanations=rows, methods=o.methods, target_request=o.target,
                            timings={"total": sum(e.timings.get("total", 0.0) for e in rows)})
    comparison.agreement = comparison_agreement(comparison, {e.model: zoo.get_spec(e.model).class_names
                                                             for e in rows})
    request = pipeline.Request(image=d.image, models=o.models, methods=o.methods, target=o.target, layer=o.layer,
                               mask=d.mask, source=d.path, device=o.device, amp=o.amp, contrast=o.contrast,
                               eigen_smooth=o.eigen_smooth, aug_smooth=o.aug_smooth, refine=o.refine, sess=o.sess)
    result = pipeline.run(request, comparison=comparison)
    stem = dict(o.stems).get(d.path, Path(d.path).stem)
    files = {f"{stem}_grid.png": png_bytes(result.grid),
             f"{stem}.json": json.dumps(result.report, indent=2).encode()}
    if o.npz:
        files[f"{stem}_maps.npz"] = maps_npz_bytes(result.comparison)
    scores = [{"image": d.path, "model": model, "map": name, **s}
              for model, per_map in result.scores.items() for name, s in per_map.items()]
    return Outcome(d.index, d.path, files, [{**row, "image": d.path} for row in result.predictions], scores,
                   warnings=list(result.warnings))


def explain_chunk(chunk: Sequence[Decoded], o: Options) -> list[Outcome]:
    """Every model once over the chunk's decodable images, then each image finished on its own."""
    out = [Outcome(d.index, d.path, skipped=d.error) for d in chunk if d.error]
    good = [d for d in chunk if not d.error]
    rows: list[list[Explanation]] = [[] for _ in good]
    failed: dict[int, str] = {}
    for name in o.models:
        for k, result in enumerate(_explain_images(name, [d.image for d in good], o)):
            if isinstance(result, str):
                failed.setdefault(k, f"{name}: {result}")
            else:
                rows[k].append(result)
    for k, d in enumerate(good):
        if k in failed:
            out.append(Outcome(d.index, d.path, skipped=failed[k]))
            continue
        try:
            out.append(_finish(d, rows[k], o))
        except AttnvizError as exc:  # e.g. a mask file whose size does not match its image
            out.append(Outcome(d.index, d.path, skipped=str(exc)))
    return sorted(out, key=lambda r: r.index)


def output_stems(inputs: Sequence[Path]) -> dict[str, str]:
    """A distinct output stem per input: its own stem, unless another input shares it (``a.jpg`` and ``a.webp``
    become ``a_jpg`` and ``a_webp``; the same name in two folders gets ``_2``, ``_3`` ...)."""
    counts = Counter(p.stem for p in inputs)
    out: dict[str, str] = {}
    taken: set[str] = set()
    for p in inputs:
        stem = p.stem if counts[p.stem] == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower() or 'file'}"
        candidate, n = stem, 1
        while candidate in taken:
            n += 1
            candidate = f"{stem}_{n}"
        taken.add(candidate)
        out[str(p)] = candidate
    return out


def _fixed_class(value: str | int | None, class_names: Sequence[str], model: str = "") -> int | None:
    """The class index a --target/--contrast names (checked: TargetError), or None for "each image's top-1"."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "top-1", "top1")):
        return None
    return resolve_target(value, class_names, np.zeros(len(class_names), np.float32), model)


def check_models(o: Options) -> None:
    """Load every model on the device and check the methods, layer, target and contrast against it *before* any
    image: a mistake in the command is one error (exit status 2), not the same skip for every file. A method only
    some models can compute (rollout beside CNNs) is fine: the others' cells say "n/a" and why."""
    wanted_layers = None if o.layer is None else ([o.layer] if isinstance(o.layer, str) else list(o.layer))
    check_applicable([zoo.load(name, o.device) for name in o.models], o.methods)
    for name in o.models:
        spec = zoo.load(name, o.device).spec
        missing = [lay for lay in wanted_layers or [] if lay not in spec.layers]
        if missing:
            raise TargetError(f"Layer {missing[0]!r} is not available for {spec.name}; it offers: "
                              f"{', '.join(spec.layers)}.")
        target = _fixed_class(o.target, spec.class_names, spec.name)
        contrast = _fixed_class(o.contrast, spec.class_names, spec.name)
        if target is not None and contrast == target:
            raise TargetError(f"The contrast class {spec.class_names[contrast]!r} is the target itself; "
                              f"choose another class.")


def _from_main(value, world: distributed.World):
    """Rank 0's ``value`` on every rank (so all ranks end with the same exit status)."""
    if not world.distributed:
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _settings(models: Sequence[str] | None, methods: Sequence[str], target, layer, contrast, eigen_smooth: bool,
              aug_smooth: bool, device: str | None, amp: bool, npz: bool, world: distributed.World,
              refine: bool = False, sess: int = 0) -> Options:
    """The command's flags checked (models, methods, limits, this rank's device) into :class:`Options`."""
    if models:
        chosen = tuple(models)
    else:
        from attnviz.zoo.registry import default_models

        chosen = tuple(default_models())
    if not chosen:
        raise AttnvizError("No models available: the bundled weights are missing.")
    methods = check_methods(methods)
    pipeline.check_limits(chosen, methods)
    if isinstance(layer, (list, tuple)):
        layer = layer[0] if len(layer) == 1 else list(layer)
    dev = resolve_device(distributed.rank_device(device, world))
    per_machine = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    if world.distributed and dev.type == "cuda" and per_machine > torch.cuda.device_count():
        raise AttnvizError(f"torchrun started {per_machine} processes on this machine, which has "
                           f"{torch.cuda.device_count()} CUDA device(s); NCCL needs one GPU per process: use "
                           f"--nproc-per-node {torch.cuda.device_count()}, or --device cpu.")
    if amp and dev.type != "cuda" and world.is_main:
        print(f"attnviz: warning: --amp needs a CUDA device; running in float32 on {dev}.", file=sys.stderr)
    return Options(chosen, methods, target, layer, contrast, eigen_smooth, aug_smooth, amp, str(dev), npz,
                   refine=refine, sess=sess)


def _run(inputs: list[Path], o: Options, out_dir: Path, world: distributed.World, batch_size: int, workers: int,
         progress: bool) -> tuple[list[Outcome], list[Outcome], float]:
    """This rank's share, chunk by chunk in step with the other ranks; rank 0 writes each finished image's files
    as they arrive and gets back (done, skipped, seconds) — the other ranks get empty lists."""
    from tqdm import tqdm

    mine = distributed.shard(inputs, world)
    # workers decode the next chunks while this process explains the current one: with one chunk there is no
    # next one, and a worker would only add its start-up
    loader = DataLoader(ImageFiles(mine), batch_size=batch_size, shuffle=False, collate_fn=_as_list,
                        num_workers=min(workers, math.ceil(len(mine) / batch_size) - 1))
    steps = math.ceil(math.ceil(len(inputs) / world.size) / batch_size)  # the same on every rank
    bar = tqdm(total=len(inputs), desc="explain", unit="image", file=sys.stderr,
               disable=not (progress and world.is_main))
    done: list[Outcome] = []
    skipped: list[Outcome] = []
    said: set[str] = set()
    chunks = iter(loader)
    started = time.perf_counter()
    for _ in range(steps):
        chunk = next(chunks, [])
        parts = distributed.gather(explain_chunk(chunk, o) if chunk else [], world)
        if parts is None:
            continue
        for r in sorted((r for part in parts for r in part), key=lambda r: r.index):
            if r.skipped:
                skipped.append(r)
                bar.write(f"skipped {r.path}: {r.skipped}", file=sys.stderr)
                continue
            for name, data in r.files.items():
                (out_dir / name).write_bytes(data)
            r.files = {}  # written: keep only the CSV rows
            for note in r.warnings:
                if note not in said:   # once per run, on the console (it is also in each image's JSON)
                    said.add(note)
                    bar.write(f"attnviz: note: {note}", file=sys.stderr)
            done.append(r)
        bar.update(sum(len(part) for part in parts))
    bar.close()
    return done, skipped, time.perf_counter() - started


def explain_paths(images: Sequence[str], out_dir: Path, models: Sequence[str] | None = None,
                  methods: Sequence[str] = DEFAULT_METHODS, target: str | int | None = None,
                  layer: str | Sequence[str] | None = None, progress: bool = True, npz: bool = False, *,
                  contrast: str | int | None = None, eigen_smooth: bool = False, aug_smooth: bool = False,
                  device: str | None = None, amp: bool = False, batch_size: int = DIR_BATCH_SIZE,
                  workers: int | None = None, refine: bool = False, sess: int = 0) -> int:
    """Write ``<stem>_grid.png`` and ``<stem>.json`` per image plus ``predictions.csv`` / ``scores.csv`` (and
    ``<stem>_maps.npz`` with every raw map, the logits and the agreement numbers when ``npz``).

    Returns 0 when every file was processed, 1 when some were skipped (each reported on stderr with the reason).
    Under torchrun every rank calls this; rank 0 writes the files.
    """
    if batch_size < 1:
        raise AttnvizError("--batch-size must be at least 1.")
    workers = default_workers() if workers is None else workers
    if workers < 0:
        raise AttnvizError("--workers must be 0 (decode in this process) or more.")
    world = distributed.current()
    inputs, unsupported = collect_inputs(images)
    o = _settings(models, methods, target, layer, contrast, eigen_smooth, aug_smooth, device, amp, npz, world,
                  refine=refine, sess=sess)
    stems = output_stems(inputs)
    o = replace(o, stems=tuple((path, stem) for path, stem in stems.items() if stem != Path(path).stem))
    check_models(o)
    with distributed.process_group(world, o.device):
        if world.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            for path, reason in unsupported:
                print(f"skipped {path}: {reason}", file=sys.stderr)
            for path, stem in o.stems:
                print(f"attnviz: note: {path} shares its name with another input; its files are {stem}_grid.png, "
                      f"{stem}.json ...", file=sys.stderr)
        done, skipped, seconds = _run(inputs, o, out_dir, world, batch_size, workers, progress)
        if world.is_main:
            write_csv(out_dir / "predictions.csv", [row for r in done for row in r.predictions], CSV_PREDICTION_COLUMNS)
            write_csv(out_dir / "scores.csv", [row for r in done for row in r.scores], CSV_SCORE_COLUMNS)
            others = f"; {len(unsupported)} other file(s) skipped" if unsupported else ""
            print(f"{len(done)} of {len(inputs)} images processed in {seconds:.1f} s "
                  f"({len(done) / max(seconds, 1e-9):.2f} images/s){others}; results in {out_dir}", file=sys.stderr)
        processed, failed = _from_main((len(done), len(skipped) + len(unsupported)), world)
    if processed == 0:
        if not world.is_main:
            return EXIT_USER_ERROR  # rank 0 says why
        raise AttnvizError("No image could be processed.")
    return EXIT_PARTIAL if failed else 0
