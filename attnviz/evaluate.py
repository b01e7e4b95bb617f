"""``attnviz eval``: score every bundled model's heatmaps on held-out benchmark scenes.

For each model and each scene (data seed :data:`attnviz.train.EVAL_SEED`, never used in training), the
CAMs explain the *true* class. Localisation (pointing game, energy pointing game, IoU against the
object mask) and faithfulness (deletion / insertion AUC; ROAD on a subset) are computed for every CAM
method and for the attention module's own spatial map (its last-stage summary). The results land in
``docs/results.md`` (table), ``docs/results.json`` (numbers + a per-scene check the tests recompute)
and ``docs/results.png`` (plot).
"""
from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import metrics, synth, zoo
from .cam import ONE_PASS_METHODS
from .engine import explain
from .errors import AttnvizError
from .localisation import OWN_MAP, own_spatial_map
from .train import EVAL_SEED, cached_scenes

ONE_PASS = tuple(ONE_PASS_METHODS)
ROAD_SCENES = 30
ROAD_MAPS = ("gradcam", "gradcam++", "layercam", OWN_MAP)  # ROAD's imputation is costly; XGrad/HiRes = Grad-CAM here
CHECK_SCENES = 6
METRIC_KEYS = ("pointing_game", "energy_pointing_game", "iou", "deletion_auc", "insertion_auc", "road")


REGION = "stn_region"


def region_mask(theta: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The input pixels inside a spatial transformer's sampled square."""
    import cv2

    from .cam import affine_to_pixels

    h, w = shape
    m = affine_to_pixels(theta, h, w)
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
    quad = np.round((corners @ m[:, :2].T + m[:, 2]) * 16).astype(np.int32)
    canvas = np.zeros(shape, np.uint8)
    cv2.fillPoly(canvas, [quad], 1, shift=4)
    return canvas.astype(bool)


def scene_metrics(loaded: zoo.LoadedModel, image: np.ndarray, label: int, mask: np.ndarray,
                  methods: Sequence[str], with_road: bool) -> tuple[dict[str, dict[str, float]], bool]:
    """Every metric for every map of one model on one scene; also whether the model was right."""
    spec = loaded.spec
    x = spec.preprocess(image)
    e = explain(loaded, x, methods=methods, target=label, class_names=spec.class_names)
    maps = {m: e.cams[m].heatmap for m in methods}
    own = own_spatial_map(e)
    if own is not None:
        maps[OWN_MAP] = own
    out: dict[str, dict[str, float]] = {}
    theta = next((a.data for a in e.attention_maps if a.layout == "affine"), None)
    if theta is not None:  # spatial transformer: does the sampled square overlap the object?
        region = region_mask(theta, mask.shape)
        out[REGION] = {"iou": float((region & mask).sum() / max(1, (region | mask).sum())),
                       "coverage": float((region & mask).sum() / max(1, mask.sum())),
                       "area": float(region.mean())}
    names = list(maps)
    with loaded.lock:
        faith = metrics.faithfulness_many(loaded.model, x, [maps[n] for n in names], label)
        for name, f in zip(names, faith):
            saliency = maps[name]
            out[name] = {"pointing_game": float(metrics.pointing_game(saliency, mask)),
                         "energy_pointing_game": metrics.energy_pointing_game(saliency, mask),
                         "iou": metrics.iou(saliency, mask),
                         "deletion_auc": f.deletion_auc, "insertion_auc": f.insertion_auc}
        if with_road:
            road_names = [n for n in names if n in ROAD_MAPS]
            scores = metrics.road_scores(loaded.model, x, [maps[n] for n in road_names], label)
            for n, s in zip(road_names, scores):
                out[n]["road"] = float(s)
    return out, e.top1.index == label


def evaluate_model(name: str, scenes: synth.Scenes, methods: Sequence[str], road_scenes: int,
                   progress: bool = False) -> dict:
    """Mean (and standard error) of every metric per map, accuracy, and the first scenes' raw values."""
    from tqdm import tqdm

    loaded = zoo.load(name)
    per_map: dict[str, dict[str, list[float]]] = {}
    correct = 0
    check: list[dict] = []
    for i in tqdm(range(len(scenes)), desc=f"eval {name}", unit="scene", disable=not progress):
        values, right = scene_metrics(loaded, scenes.images[i], int(scenes.labels[i]), scenes.masks[i], methods,
                                      with_road=i < road_scenes)
        correct += right
        if i < CHECK_SCENES:
            check.append({"index": i, "values": values})
        for m, d in values.items():
            for k, v in d.items():
                per_map.setdefault(m, {}).setdefault(k, []).append(v)
    summary = {m: {k: {"mean": float(np.mean(v)), "sem": float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1
                       else 0.0, "n": len(v)} for k, v in d.items()} for m, d in per_map.items()}
    return {"model": name, "display_name": loaded.spec.display_name, "attention": loaded.spec.attention,
            "accuracy": correct / len(scenes), "maps": summary, "check": check}


SETTINGS = ("seed", "n", "road_scenes", "methods", "synth_version")


def run_eval(models: Sequence[str] | None = None, n: int = 200, seed: int | None = None, out: Path = Path("docs"),
             progress: bool = True, methods: Sequence[str] = ONE_PASS, road_scenes: int = ROAD_SCENES,
             update: bool = False) -> dict:
    """Evaluate ``models`` (default: the bundled zoo) and write results.{md,json,png} into ``out``.

    ``update`` keeps the other models' rows of an existing ``results.json`` made with the same settings,
    so one newly trained variant can be added without re-running the whole zoo.
    """
    torch.set_num_threads(2)
    names = list(models) if models else zoo.bundled()
    seed = EVAL_SEED if seed is None else seed
    road_scenes = min(road_scenes, n)
    result = {
        "command": f"attnviz eval --n {n} --road {road_scenes}" + (f" --seed {seed}" if seed != EVAL_SEED else ""),
        "seed": seed, "n": n, "road_scenes": road_scenes, "methods": list(methods),
        "target": "the true class", "synth_version": synth.VERSION,
        "machine": f"{platform.machine()}, torch {torch.__version__}",
    }
    kept: list[dict] = []
    seconds = 0.0
    if update:
        if not (out / "results.json").exists():
            raise AttnvizError(f"nothing to update: {out / 'results.json'} does not exist; run without --update")
        previous = json.loads((out / "results.json").read_text())
        different = [k for k in SETTINGS if previous.get(k) != result[k]]
        if different:
            raise AttnvizError(f"cannot update {out / 'results.json'}: it was made with other settings "
                             f"({', '.join(different)}); run without --update")
        kept = [r for r in previous["models"] if r["model"] not in names]
        seconds = previous["seconds"]
    scenes = cached_scenes(n, seed, synth.IMAGE_SIZE, progress=progress)
    result["object_area"] = round(float(scenes.masks.mean()), 4)  # EPG of a uniform map: the chance level
    start = time.perf_counter()
    rows = [evaluate_model(name, scenes, methods, road_scenes, progress) for name in names]
    order = {name: i for i, name in enumerate(zoo.bundled())}
    result["seconds"] = round(seconds + time.perf_counter() - start, 1)
    result["models"] = sorted(kept + rows, key=lambda r: order.get(r["model"], len(order)))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "results.md").write_text(results_markdown(result))
    plot_results(result, out / "results.png")
    return result


def _fmt(stat: dict | None, pct: bool = False) -> str:
    if stat is None:
        return "–"
    return f"{stat['mean'] * 100:.1f}" if pct else f"{stat['mean']:.3f}"


def results_markdown(result: dict) -> str:
    from .render import METHOD_TITLES

    lines = [
        "# Results: localisation and faithfulness of the bundled zoo",
        "",
        f"Produced by `{result['command']}` ({result['n']} benchmark scenes, data seed {result['seed']}, "
        f"never used in training; synth v{result['synth_version']}; {result['seconds'] / 60:.1f} min on "
        f"{result['machine']}). Every map explains the **true class**. ROAD uses the first "
        f"{result['road_scenes']} scenes.",
        "",
        "* **PG** pointing game: % of scenes whose map maximum lies on the object (higher is better)",
        "* **EPG** energy pointing game: % of the map's mass on the object (higher is better)",
        "* **IoU** of the map thresholded at half its maximum with the object mask (higher is better)",
        "* **Del** deletion AUC: class probability as the most salient pixels are removed (lower is better)",
        "* **Ins** insertion AUC: class probability as they are revealed on a blurred image (higher is better)",
        "* **ROAD** pytorch-grad-cam's ROADCombined, percentiles 20–80 (higher is better)",
        "* **attention** = the module's own last-stage spatial map (stage mean of its gates); models with "
        "channel-only attention (SE, ECA) or none have no row for it.",
        "",
        "Where the CAM layer (the last stage) feeds global average pooling and the classifier directly, "
        "as in the core variants, the class score's gradient is the same at every position: XGrad-CAM and HiResCAM then "
        "reduce to Grad-CAM, and their rows repeat Grad-CAM's. They differ on layers further from the head "
        "(`--layer layer2`).",
        "",
        "![Energy pointing game and insertion AUC per model and map](results.png)",
        "",
        "| model | accuracy | map | PG % | EPG % | IoU | Del ↓ | Ins ↑ | ROAD ↑ |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["models"]:
        for m, stats in row["maps"].items():
            if m == REGION:
                continue
            lines.append(f"| {row['display_name']} | {row['accuracy'] * 100:.1f} % | {METHOD_TITLES.get(m, m)} | "
                         f"{_fmt(stats.get('pointing_game'), True)} | {_fmt(stats.get('energy_pointing_game'), True)} | "
                         f"{_fmt(stats.get('iou'))} | {_fmt(stats.get('deletion_auc'))} | "
                         f"{_fmt(stats.get('insertion_auc'))} | {_fmt(stats.get('road'))} |")
    own = [r for r in result["models"] if OWN_MAP in r["maps"] and "gradcam" in r["maps"]]
    if own:
        lines += ["", "## The modules' own maps vs Grad-CAM", "",
                  "Share of the map's energy on the object (EPG) and pointing-game hits, the attention module's "
                  "last-stage spatial gate next to Grad-CAM of the same model. Chance level: objects cover "
                  f"{result['object_area'] * 100:.1f} % of the image on average, which is the EPG of a uniform map "
                  "and roughly the pointing game of a random one.", ""]
        for r in own:
            a, g = r["maps"][OWN_MAP], r["maps"]["gradcam"]
            lines.append(f"* {r['display_name']}: attention EPG {_fmt(a['energy_pointing_game'], True)} %, "
                         f"PG {_fmt(a['pointing_game'], True)} % — Grad-CAM EPG "
                         f"{_fmt(g['energy_pointing_game'], True)} %, PG {_fmt(g['pointing_game'], True)} %")
    stn = [r for r in result["models"] if REGION in r["maps"]]
    if stn:
        lines += ["", "## Spatial transformer: the sampled region vs the object", ""]
        for r in stn:
            reg = r["maps"][REGION]
            lines.append(f"* {r['display_name']}: mean IoU of the sampled square with the object mask "
                         f"**{reg['iou']['mean']:.3f}** (± {reg['iou']['sem']:.3f}); on average the square covers "
                         f"{reg['coverage']['mean'] * 100:.1f} % of the object's pixels and "
                         f"{reg['area']['mean'] * 100:.1f} % of the image.")
    lines += ["", "Standard errors and per-scene check values are in `results.json`.", ""]
    return "\n".join(lines)


def plot_results(result: dict, path: Path) -> None:
    """Grouped bars: energy pointing game and insertion AUC per model, one bar per map."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from .render import METHOD_TITLES

    rows = result["models"]
    maps = list(dict.fromkeys(m for r in rows for m in r["maps"] if m != REGION))
    fig = Figure(figsize=(11, 6.5), dpi=100)
    FigureCanvasAgg(fig)
    for k, (key, title) in enumerate((("energy_pointing_game", "Energy pointing game (higher is better)"),
                                      ("insertion_auc", "Insertion AUC (higher is better)"))):
        ax = fig.add_subplot(2, 1, k + 1)
        width = 0.8 / max(1, len(maps))
        for j, m in enumerate(maps):
            xs, ys, errs = [], [], []
            for i, r in enumerate(rows):
                stat = r["maps"].get(m, {}).get(key)
                if stat:
                    xs.append(i + (j - len(maps) / 2 + 0.5) * width)
                    ys.append(stat["mean"])
                    errs.append(stat["sem"])
            ax.bar(xs, ys, width, yerr=errs, label=METHOD_TITLES.get(m, m), capsize=2)
        ax.set_xticks(range(len(rows)), [r["display_name"] for r in rows])
        ax.set_title(title, fontsize=11)
        ax.set_ylim(0, 1)
        ax.grid(axis="y", alpha=0.3)
    fig.axes[0].legend(ncol=min(6, len(maps)), fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
