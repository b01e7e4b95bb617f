"""What batching and de-duplication save in ``attnviz eval``: the per-image path it replaced vs the batched path.

    python benchmarks/eval_cost.py --models se --n 40 --road 30
    python benchmarks/eval_cost.py --models cc --n 40 --road 30 --skip-old --device cuda

"old" is the evaluation as it was before batching, kept here as the reference: per scene one ``explain()``, one
forward of every map's deletion and insertion copies (17 + 17 per map), and pytorch-grad-cam's ROADCombined on
the ROAD maps. "new" is :func:`attnviz.evaluation.scoring.score_chunk` (what ``attnviz eval`` runs): one
``explain_batch`` per chunk, the curves and ROAD batched across the chunk's images and maps, shared end points
run once, bit-identical maps scored once. Both score the same scenes (data seed of ``attnviz eval``) and this
prints wall and CPU seconds of each phase, the maps scored vs requested, and the largest difference between
the two paths' per-image numbers (ROAD excluded: its imputation noise is seeded differently).

``--imputer`` compares ROAD's imputation instead, side by side in one run: per map (8 imputations of one
128 px scene, the noise-free solve) pytorch-grad-cam's ``NoisyLinearImputer`` vs attnviz.metrics.imputation
on ``--device``, then a whole ``run_eval`` of ``--models`` on ``--n`` scenes with ROAD on ``--road`` with
``road_imputer="library"`` vs ``"torch"``, and the largest difference of the ROAD numbers between the two
(``--rounds`` alternate library / attnviz imputation rounds, so that a change of load falls on both;
``--skip-eval`` stops after the per-map comparison)::

    python benchmarks/eval_cost.py --imputer --models se --n 40 --road 30
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from attnviz.api import explain  # noqa: E402
from attnviz.core.methods import CLASSIC_METHODS  # noqa: E402
from attnviz.data import synth
from attnviz.data.scenes import EVAL_SEED, cached_scenes  # noqa: E402
from attnviz.evaluation.scoring import ROAD_MAPS, ScoringCount, score_chunk  # noqa: E402
from attnviz.metrics import scores as metrics
from attnviz.metrics.localisation import OWN_MAP, own_spatial_map  # noqa: E402
from attnviz.zoo import registry as zoo  # noqa: E402


@torch.no_grad()
def _old_curves(model, x, maps, target, steps=16, blur_sigma=5.0):
    _, _, h, w = x.shape
    k = int(2 * round(3 * blur_sigma) + 1)
    blurred = cv2.GaussianBlur(x[0].permute(1, 2, 0).numpy(), (k, k), blur_sigma)
    blurred = torch.from_numpy(blurred).permute(2, 0, 1)[None]
    counts = [round(i * h * w / steps) for i in range(steps + 1)]
    batches = []
    for s in maps:
        order = torch.from_numpy(np.argsort(-metrics._resize_to(s, (h, w)).ravel(), kind="stable"))
        revealed = torch.zeros(steps + 1, h * w)
        for i, c in enumerate(counts):
            revealed[i, order[:c]] = 1.0
        revealed = revealed.view(steps + 1, 1, h, w)
        batches += [x * (1 - revealed), blurred * (1 - revealed) + x * revealed]
    probs = torch.softmax(model(torch.cat(batches)), dim=1)[:, target].numpy().reshape(len(maps), 2, steps + 1)
    return probs[:, 0], probs[:, 1]


def old_scene(loaded, image, label, mask, methods, with_road):
    """One scene the way ``attnviz eval`` scored it before batching (timings per phase)."""
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    t = {}
    t0 = time.perf_counter()
    x = loaded.spec.preprocess(image)
    e = explain(loaded, x, methods, target=label, class_names=loaded.spec.class_names)
    maps = {m: e.cams[m].heatmap for m in methods}
    own = own_spatial_map(e)
    if own is not None:
        maps[OWN_MAP] = own
    t1 = time.perf_counter()
    names = list(maps)
    out = {}
    with loaded.lock:
        deletion, insertion = _old_curves(loaded.model, x, [maps[n] for n in names], label)
        for n, d, i in zip(names, deletion, insertion):
            out[n] = {"pointing_game": float(metrics.pointing_game(maps[n], mask)),
                      "energy_pointing_game": metrics.energy_pointing_game(maps[n], mask),
                      "iou": metrics.iou(maps[n], mask), "deletion_auc": metrics._auc(d),
                      "insertion_auc": metrics._auc(i)}
        t2 = time.perf_counter()
        if with_road:
            road = [n for n in names if n in ROAD_MAPS]
            cams = np.stack([metrics._resize_to(maps[n], tuple(x.shape[-2:])) for n in road]).astype(np.float32)
            ROADCombined(percentiles=[20, 40, 60, 80])(x.repeat(len(road), 1, 1, 1), cams,
                                                       [ClassifierOutputSoftmaxTarget(label)] * len(road),
                                                       loaded.model)
    t3 = time.perf_counter()
    t.update(maps=t1 - t0, scores=t2 - t1, road=t3 - t2)
    return out, t


class Clock:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


class Total:
    """Wall and CPU seconds summed over several :class:`Clock` runs."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def add(self, clock: Clock) -> None:
        self.wall += clock.wall
        self.cpu += clock.cpu


def _time_imputers(xs, masks, device: torch.device, rounds: int):
    """The library's imputations of every map, then attnviz's (one call, as eval batches them), ``rounds`` times
    alternately so that a change of the machine's load falls on both; the largest difference where the library's
    result is finite, and how many inputs were left out of that."""
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    from attnviz.metrics import imputation

    images = torch.cat([x.expand(len(ms), -1, -1, -1) for x, ms in zip(xs, masks)]).to(device)
    removed = torch.cat(masks).to(device)
    imputation.linear_impute(images[:8], removed[:8])            # warm-up (imports, allocator, kernels)
    lib, ours = Total(), Total()
    for _ in range(rounds):
        with Clock() as clock:
            ref = torch.cat([torch.stack([NoisyLinearImputer(noise=0.0)(x, (~m).float()) for m in ms])
                             for x, ms in zip(xs, masks)])
        lib.add(clock)
        with Clock() as clock:
            out = imputation.noisy_linear_impute(images, removed)
            if device.type == "cuda":
                torch.cuda.synchronize()
        ours.add(clock)
    finite = torch.isfinite(ref.flatten(1)).all(1)
    return lib, ours, float((out.cpu()[finite] - ref[finite]).abs().max()), int((~finite).sum())


def compare_imputers(args: argparse.Namespace) -> None:
    """ROAD's imputation: the library's per-input sparse solve vs attnviz's batched solve, in one run."""
    import tempfile

    from attnviz.evaluation.run import run_eval
    from attnviz.metrics import imputation

    scenes = cached_scenes(max(args.maps, 1), EVAL_SEED, synth.IMAGE_SIZE)
    loaded = zoo.load(args.models.split(",")[0], "cpu")
    es = [explain(loaded, loaded.spec.preprocess(scenes.images[i]), ("gradcam",), target=int(scenes.labels[i]),
                  class_names=loaded.spec.class_names) for i in range(args.maps)]
    xs = [loaded.spec.preprocess(scenes.images[i])[0] for i in range(args.maps)]
    cams = [metrics._resize_to(e.cams["gradcam"].heatmap, tuple(xs[0].shape[-2:])).astype(np.float32) for e in es]
    masks = [imputation.removal_masks(c, metrics.ROAD_PERCENTILES) for c in cams]
    device = torch.device(args.device)
    lib, ours, worst, skipped = _time_imputers(xs, masks, device, args.rounds)
    print(f"{os.cpu_count()} CPUs, {args.threads} torch threads, torch {torch.__version__}; load average "
          f"{os.getloadavg()[0]:.2f}")
    per = args.maps * args.rounds
    print(f"imputation, {args.maps} maps x 8 inputs ({xs[0].shape[-1]} px), {args.rounds} rounds: library "
          f"{lib.wall / per:.3f} s per map ({lib.cpu / per:.3f} s CPU), attnviz on {device} {ours.wall / per:.3f} s "
          f"per map ({ours.cpu / per:.3f} s CPU): {lib.wall / ours.wall:.1f}x wall, {lib.cpu / ours.cpu:.1f}x CPU; "
          f"largest |difference| {worst:.1e} ({skipped} inputs with nothing kept left out: the library's is NaN); "
          f"load average {os.getloadavg()[0]:.2f}")
    if args.skip_eval:
        return
    results = {}
    for imputer in ("library", "torch"):
        with tempfile.TemporaryDirectory() as out_dir, Clock() as clock:
            results[imputer] = run_eval(models=args.models.split(","), n=args.n, road_scenes=args.road,
                                        out=Path(out_dir), progress=False, device=args.device, threads=args.threads,
                                        road_imputer=imputer)
        results[imputer + " clock"] = clock
        print(f"run_eval --models {args.models} --n {args.n} --road {args.road}, road_imputer={imputer}: "
              f"{clock.wall:.1f} s wall, {clock.cpu:.1f} s CPU; load average {os.getloadavg()[0]:.2f}")
    lib_clock, our_clock = results["library clock"], results["torch clock"]
    print(f"whole eval: {lib_clock.wall / our_clock.wall:.2f}x wall, {lib_clock.cpu / our_clock.cpu:.2f}x CPU")
    for lib_row, torch_row in zip(results["library"]["models"], results["torch"]["models"]):
        for name, values in lib_row["per_image"]["values"].items():
            if "road" not in values:
                continue
            a = np.array(values["road"], float)
            b = np.array(torch_row["per_image"]["values"][name]["road"], float)
            print(f"  {lib_row['model']} {name}: ROAD mean library {np.nanmean(a):.4f}, torch {np.nanmean(b):.4f}; "
                  f"largest per-image |difference| {np.nanmax(np.abs(a - b)):.1e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="se")
    p.add_argument("--n", type=int, default=40)
    p.add_argument("--road", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="device of the new path (the old path ran on the CPU only)")
    p.add_argument("--skip-old", action="store_true")
    p.add_argument("--imputer", action="store_true", help="compare ROAD's imputers instead (see the docstring)")
    p.add_argument("--maps", type=int, default=6, help="maps imputed per side in the --imputer comparison")
    p.add_argument("--rounds", type=int, default=2, help="alternate library / attnviz imputation rounds (--imputer)")
    p.add_argument("--skip-eval", action="store_true", help="--imputer: the per-map imputation comparison only")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.imputer:
        compare_imputers(args)
        return
    scenes = cached_scenes(args.n, EVAL_SEED, synth.IMAGE_SIZE)
    methods = tuple(CLASSIC_METHODS)
    print(f"{os.cpu_count()} CPUs, {args.threads} torch threads, torch {torch.__version__}; {args.n} scenes, "
          f"ROAD on {args.road}, methods {','.join(methods)}")
    for name in args.models.split(","):
        loaded_cpu = zoo.load(name, "cpu")
        old_values = []
        if not args.skip_old:
            phases = {"maps": 0.0, "scores": 0.0, "road": 0.0}
            with Clock() as old:
                for i in range(args.n):
                    values, t = old_scene(loaded_cpu, scenes.images[i], int(scenes.labels[i]), scenes.masks[i],
                                          methods, i < args.road)
                    old_values.append(values)
                    for k in phases:
                        phases[k] += t[k]
            print(f"{name}  old per-image path: {old.wall:7.1f} s wall, {old.cpu:7.1f} s CPU  "
                  f"(maps {phases['maps']:.1f} s, localisation + deletion/insertion {phases['scores']:.1f} s, "
                  f"ROAD {phases['road']:.1f} s)")
        loaded = zoo.load(name, args.device)
        count = ScoringCount()
        new_values = []
        with Clock() as new:
            for start in range(0, args.n, args.batch_size):
                idx = range(start, min(args.n, start + args.batch_size))
                scores, _ = score_chunk(loaded, [scenes.images[i] for i in idx], [int(scenes.labels[i]) for i in idx],
                                        [scenes.masks[i] for i in idx], methods, road=[i < args.road for i in idx],
                                        seeds=list(idx), batch_size=args.batch_size, count=count)
                new_values += [s.values for s in scores]
        print(f"{name}  new batched path:   {new.wall:7.1f} s wall, {new.cpu:7.1f} s CPU on {loaded.device}; "
              f"maps scored {count.maps_scored} of {count.maps_requested}, ROAD {count.road_scored} of "
              f"{count.road_requested}; identical: {dict(count.identical) or 'none'}")
        if old_values:
            worst, where = max((abs(o[m][k] - n[m][k]), f"{m} {k}") for o, n in zip(old_values, new_values)
                               for m in o for k in o[m])
            flips = sum(o[m][k] != n[m][k] for o, n in zip(old_values, new_values) for m in o
                        for k in ("pointing_game",))
            print(f"{name}  speed-up {old.wall / new.wall:.2f}x wall; largest |old - new| of a per-image number "
                  f"(ROAD excluded) {worst:.1e} ({where}); pointing-game values that differ: {flips}")


if __name__ == "__main__":
    main()
