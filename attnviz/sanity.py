"""``attnviz sanity``: do the maps depend on what the model learnt? (Adebayo et al., NeurIPS 2018,
"Sanity Checks for Saliency Maps").

A heatmap that looks the same when the weights are random is explaining the input (edges, the object's
outline), not the model. Two tests, for every CAM method and for the attention module's own spatial map
(:func:`attnviz.localisation.own_spatial_map`):

* **Cascading model-parameter randomisation.** On a deep copy of the model, layer groups are
  re-initialised one more per step, from the classifier down to the stem: ``fc``, then the heads and
  blocks in reverse order of execution, last ``stem`` (Non-local: ``fc``, ``layer3.1``, ``layer3.0``,
  ``nl2``, ``layer2.1``, ..., ``layer1.0``, ``stem``); after the last step every parameter is random.
  Groups are found generically (:func:`layer_groups`): a block of a stage container (``layer3.1``,
  ``features.7``, ``blocks.2``), any other top-level module (``fc``, ``cc3``, ``danet3``, ``nl2``,
  ``bam1``, ``stn``), and the top-level layers that run before the first stage, merged as ``stem``.
  Each module is re-initialised with its own ``reset_parameters()`` (BatchNorm: weight 1, bias 0, fresh
  running statistics), from a fixed seed per step; a parameter no module can reset (a scalar ``gamma``,
  MHSA's position embeddings) is redrawn from a normal distribution with the original tensor's
  root-mean-square as its scale (0.02 where that is 0).
* **Random target.** The map for a random other class (one per image, fixed seed) against the map for
  the true class. Attention gates run in the forward pass, before any class is chosen, so the module's
  own map is identical for every target by construction (Spearman 1): it is not class-specific.

Each map is compared with the original map of the same image: Spearman rank correlation of the pixels
(average ranks for ties; defined as 0 when either map is constant, e.g. a CAM that became all zero —
the ``constant`` count says how often) and SSIM (scikit-image, both maps min-max scaled to [0, 1],
``data_range=1``); the mean over images is reported per step. Own maps are first resized to the input
size, as they are for scoring.

**Flag rule.** A map *keeps its structure under randomisation* — flagged ``"keeps_structure": true`` in
``sanity.json`` — when its mean Spearman correlation at the last step (every layer random) is above
:data:`FLAG_SPEARMAN` (0.5). Such a map fails the sanity check: its localisation scores say little about
the trained model. A map is flagged ``"class_insensitive": true`` when its mean Spearman correlation
between the true-class and the random-class map is above :data:`CLASS_SPEARMAN` (0.9).
"""
from __future__ import annotations

import copy
import json
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from .agreement import spearman, unit as _unit
from .devices import resolve_device
from .engine import DEFAULT_BATCH_SIZE, check_methods, explain_batch
from .errors import AttnvizError
from .localisation import OWN_MAP, own_spatial_map
from .zoo import LoadedModel

FLAG_SPEARMAN = 0.5
CLASS_SPEARMAN = 0.9
RANDOMISATION_SEED = 0
DEFAULT_N = 8
FLAG_RULE = (f"keeps_structure: mean Spearman at the last step (every layer random) > {FLAG_SPEARMAN}; "
             f"class_insensitive: mean Spearman between true-class and random-class maps > {CLASS_SPEARMAN}")
STEM = "stem"


# ---- layer groups and cascading randomisation -----------------------------------------------------

@dataclass(frozen=True)
class LayerGroup:
    """A randomisation step's unit: a name and the dotted names of the modules whose own parameters it holds."""

    name: str
    modules: tuple[str, ...]


def _owns_parameters(module: nn.Module) -> bool:
    return next(module.parameters(recurse=False), None) is not None


def _execution_order(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Dotted names of the parameter-owning modules in the order a forward pass first runs them.

    Registration order is not execution order (modules after a stage are registered after ``fc``), so
    the order is observed on a throw-away copy: the caller's model never carries a hook.
    """
    probe = copy.deepcopy(model).eval()
    order: list[str] = []
    handles = []
    for name, module in probe.named_modules():
        if _owns_parameters(module):
            handles.append(module.register_forward_pre_hook(
                lambda _m, _inp, name=name: order.append(name) if name not in order else None))
    try:
        with torch.no_grad():
            probe(example[:1])
    finally:
        for h in handles:
            h.remove()
    return order


def layer_groups(model: nn.Module, example: torch.Tensor) -> list[LayerGroup]:
    """The model's parameters split into groups, in execution order (input first); see the module docstring.

    ``example`` is one preprocessed input (only its first image is run). Parameters of modules that never
    run, and the root module's own ones (a ViT's position embedding), join the input-most group, so the
    last randomisation step leaves no parameter trained.
    """
    order = [name for name in _execution_order(model, example) if name]
    children = dict(model.named_children())

    def is_block(name: str) -> bool:  # inside a stage container: layer3.1.conv1, features.7.conv.0, blocks.2.attn
        top, _, rest = name.partition(".")
        return bool(rest) and isinstance(children[top], (nn.Sequential, nn.ModuleList))

    first_block = next((i for i, name in enumerate(order) if is_block(name)), None)
    groups: dict[str, list[str]] = {}
    for i, name in enumerate(order):
        top, _, rest = name.partition(".")
        if is_block(name):
            key = f"{top}.{rest.split('.')[0]}"
        elif first_block is not None and i < first_block and next(children[top].children(), None) is None:
            key = STEM  # a plain layer that runs before the first stage: conv1, bn1, conv2, bn2
        else:
            key = top   # a head or module of its own: fc, cc3, danet3, nl2, bam1, stn, patch_embed
        groups.setdefault(key, []).append(name)
    owners = [name for name, m in model.named_modules() if _owns_parameters(m)]
    leftovers = [name for name in owners if name not in order]
    if not groups:
        return [LayerGroup(STEM, tuple(leftovers))] if leftovers else []
    first = next(iter(groups))
    groups[first] = [n for n in leftovers if n == ""] + groups[first] + [n for n in leftovers if n != ""]
    return [LayerGroup(key, tuple(names)) for key, names in groups.items()]


def _reinitialise(model: nn.Module, group: LayerGroup, seed: int) -> None:
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        for name in group.modules:
            module = model.get_submodule(name) if name else model
            reset = getattr(module, "reset_parameters", None) or getattr(module, "_reset_parameters", None)
            if name and callable(reset):
                reset()
                continue
            for p in module.parameters(recurse=False):
                scale = float(p.detach().float().pow(2).mean().sqrt()) or 0.02
                p.copy_(torch.randn(p.shape) * scale)


def cascading_randomisation(model: nn.Module, groups: Sequence[LayerGroup], seed: int = RANDOMISATION_SEED,
                            ) -> Iterator[tuple[str, nn.Module]]:
    """Yield ``(group name, model)`` with one more group re-initialised each step, output side first.

    Works on one deep copy (the caller's model is untouched), mutated in place from step to step: use
    each yielded model before asking for the next.
    """
    randomised = copy.deepcopy(model).eval()
    for k, group in enumerate(reversed(list(groups))):
        _reinitialise(randomised, group, seed + k)
        yield group.name, randomised


# ---- maps and their comparison ----------------------------------------------------------------------

def compute_maps(model: LoadedModel | nn.Module, x: torch.Tensor, targets: Sequence[int], methods: Sequence[str],
                 layer: str, class_names: Sequence[str], batch_size: int = DEFAULT_BATCH_SIZE,
                 device: str | torch.device | None = None) -> dict[str, np.ndarray]:
    """``{map name: (N, H, W) float32}``: every CAM method's heatmap and the module's own spatial map.

    The one place sanity checks compute maps: ``engine.explain_batch``, ``batch_size`` images per pass (in eval
    mode the images of a batch do not interact, so each map is the one-image map up to float rounding); own
    maps are resized to the input's H x W.
    """
    height, width = x.shape[-2:]
    explanations = explain_batch(model, x, methods, targets=[int(t) for t in targets], layer=layer,
                                 batch_size=batch_size, class_names=class_names, device=device)
    out: dict[str, list[np.ndarray]] = {}
    for e in explanations:
        for m in methods:
            out.setdefault(m, []).append(e.cams[m].heatmap.astype(np.float32))
        own = own_spatial_map(e)
        if own is not None:
            if own.shape != (height, width):
                own = cv2.resize(own.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
            out.setdefault(OWN_MAP, []).append(own.astype(np.float32))
    return {k: np.stack(v) for k, v in out.items() if len(v) == len(x)}


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two maps after min-max scaling each to [0, 1] (``data_range=1``; window shrunk for tiny maps)."""
    from skimage.metrics import structural_similarity

    side = min(a.shape)
    win = min(7, side if side % 2 else side - 1)
    if win < 3:
        return float(np.isclose(_unit(a), _unit(b)).all())
    return float(structural_similarity(_unit(a), _unit(b), data_range=1.0, win_size=win))


def _is_constant(a: np.ndarray) -> bool:
    return float(a.max()) == float(a.min())


def _compare(original: dict[str, np.ndarray], other: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    out = {}
    for key, maps in original.items():
        if key not in other:
            continue
        pairs = list(zip(maps, other[key]))
        out[key] = {"spearman": float(np.mean([spearman(a, b) for a, b in pairs])),
                    "ssim": float(np.mean([ssim(a, b) for a, b in pairs])),
                    "constant": int(sum(_is_constant(b) for _, b in pairs))}
    return out


def random_targets(labels: Sequence[int], num_classes: int, seed: int = RANDOMISATION_SEED) -> list[int]:
    """One class per image, uniformly among the classes other than its true one (fixed seed)."""
    if num_classes < 2:
        raise AttnvizError("The random-target test needs a model with at least two classes.")
    rng = np.random.default_rng(seed)
    out = []
    for t in labels:
        k = int(rng.integers(num_classes - 1))
        out.append(k + 1 if k >= int(t) else k)
    return out


def sanity_model(model: LoadedModel | nn.Module, x: torch.Tensor, labels: Sequence[int], methods: Sequence[str], *,
                 layer: str, class_names: Sequence[str], name: str = "", seed: int = RANDOMISATION_SEED,
                 progress: bool = False, device: str | torch.device | None = None) -> dict:
    """Both sanity checks for one model on preprocessed images ``x`` (N, 3, H, W) with true ``labels``.

    Returns ``{"model", "steps", "groups", "maps": {map: {"steps", "spearman", "ssim", "constant",
    "keeps_structure"}}, "random_target": {map: {"spearman", "ssim", "class_insensitive"}}, "seconds"}``.
    ``device``: where the maps are computed (the randomised copy moves there; layers re-initialised with their
    own ``reset_parameters`` draw from that device's generator, so CUDA and CPU runs randomise differently).
    """
    from tqdm import tqdm

    start = time.perf_counter()
    methods = check_methods(methods)
    net = model.model if isinstance(model, LoadedModel) else model
    lock = model.lock if isinstance(model, LoadedModel) else nullcontext()
    with lock:  # the copies must not pick up a request's hooks
        groups = layer_groups(net, x)
        frozen = copy.deepcopy(net).eval()
    original = compute_maps(model, x, labels, methods, layer, class_names, device=device)
    other = compute_maps(model, x, random_targets(labels, len(class_names), seed), methods, layer, class_names,
                         device=device)
    maps = {key: {"steps": [], "spearman": [], "ssim": [], "constant": []} for key in original}
    steps = []
    cascade = cascading_randomisation(frozen, groups, seed)
    for step, randomised in tqdm(cascade, total=len(groups), desc=f"sanity {name}", unit="step",
                                 disable=not progress):
        steps.append(step)
        scores = _compare(original, compute_maps(randomised, x, labels, methods, layer, class_names, device=device))
        for key, entry in maps.items():
            s = scores.get(key, {"spearman": float("nan"), "ssim": float("nan"), "constant": len(x)})
            entry["steps"].append(step)
            for k in ("spearman", "ssim", "constant"):
                entry[k].append(s[k])
    for entry in maps.values():
        entry["keeps_structure"] = bool(entry["spearman"][-1] > FLAG_SPEARMAN)
    target_scores = _compare(original, other)
    random_target = {key: {"spearman": s["spearman"], "ssim": s["ssim"],
                           "class_insensitive": bool(s["spearman"] > CLASS_SPEARMAN)}
                     for key, s in target_scores.items()}
    return {"model": name or type(net).__name__, "layer": layer, "steps": steps,
            "groups": {g.name: list(g.modules) for g in groups}, "maps": maps, "random_target": random_target,
            "seconds": round(time.perf_counter() - start, 1)}


# ---- the command ----------------------------------------------------------------------------------------

def run_sanity(models: Sequence[str] | None = None, n: int = DEFAULT_N, seed: int | None = None,
               methods: Sequence[str] | None = None, out: Path = Path("docs"), progress: bool = True,
               device: str | None = None) -> dict:
    """Sanity checks for bundled models on ``n`` benchmark scenes (eval data seed, true class); writes
    ``out/sanity.json``, ``out/sanity.md`` and ``out/sanity.png``."""
    from . import synth, zoo
    from .cam import ONE_PASS_METHODS
    from .train import EVAL_SEED, cached_scenes

    torch.set_num_threads(min(2, torch.get_num_threads()))
    if n < 1:
        raise AttnvizError("--n must be at least 1.")
    names = list(models) if models else zoo.bundled()
    methods = check_methods(methods or tuple(ONE_PASS_METHODS))
    seed = EVAL_SEED if seed is None else seed
    resolve_device(device)                 # an absent device is one clear line before any model loads
    loaded = [zoo.load(name, "cpu") for name in names]    # copies are randomised on the CPU copy's side
    for m in loaded:
        if tuple(m.spec.class_names) != tuple(synth.CLASS_NAMES):
            raise AttnvizError(f"{m.spec.name} was not trained on the benchmark's classes; `attnviz sanity` "
                               "runs on benchmark scenes (use attnviz.sanity.sanity_model for other data).")
    scenes = cached_scenes(n, seed, synth.IMAGE_SIZE, progress=progress)
    start = time.perf_counter()
    rows = []
    for m in loaded:
        x = m.spec.preprocess(scenes.images)
        rows.append(sanity_model(m, x, [int(v) for v in scenes.labels], methods, layer=m.spec.default_layer,
                                 class_names=m.spec.class_names, name=m.spec.name, progress=progress,
                                 device=device))
        rows[-1]["display_name"] = m.spec.display_name
    result = {"command": f"attnviz sanity --n {n}" + (f" --seed {seed}" if seed != EVAL_SEED else ""),
              "n": n, "seed": seed, "target": "the true class", "methods": list(methods),
              "randomisation_seed": RANDOMISATION_SEED, "flag_rule": FLAG_RULE,
              "seconds": round(time.perf_counter() - start, 1), "models": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "sanity.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "sanity.md").write_text(sanity_markdown(result))
    plot_sanity(result, out / "sanity.png")
    return result


def _title(key: str) -> str:
    from .render import METHOD_TITLES

    return "attention (own map)" if key == OWN_MAP else METHOD_TITLES.get(key, key)


def _range(values: list[float]) -> str:
    return f"{np.mean(values):.2f} (models {min(values):.2f} to {max(values):.2f})"


@dataclass
class _MapAcrossModels:
    """One map's per-model numbers: Spearman with the classifier alone random (``first``), with every layer
    random (``last``), with a random target (``target``), and how many models flag it."""
    models: int
    first: list[float]
    last: list[float]
    target: list[float]
    kept: int
    blind: int


def _across_models(rows: list[dict], key: str) -> _MapAcrossModels:
    have = [r for r in rows if key in r["maps"]]
    targets = [r["random_target"][key] for r in have if key in r.get("random_target", {})]
    return _MapAcrossModels(len(have), [r["maps"][key]["spearman"][0] for r in have],
                            [r["maps"][key]["spearman"][-1] for r in have], [t["spearman"] for t in targets],
                            sum(r["maps"][key]["keeps_structure"] for r in have),
                            sum(t["class_insensitive"] for t in targets))


def sanity_findings(result: dict) -> list[str]:
    """What the tables say across models, each sentence computed from the numbers it quotes (mean over models of
    each model's mean over images; the range over models beside it)."""
    rows = result["models"]
    maps = {key: _across_models(rows, key) for key in dict.fromkeys(k for r in rows for k in r["maps"])}
    lines = ["## Across the models", "",
             "Mean Spearman correlation between the original map and the randomised one, averaged over the "
             f"{len(rows)} models (range over models in brackets), after the classifier alone is re-initialised and "
             "with every layer random; and between the true-class map and a random other class's:", "",
             "| map | classifier random | every layer random | random target | keeps structure | class-insensitive |",
             "|---|---|---|---|---|---|"]
    for key, a in maps.items():
        lines.append(f"| {_title(key)} ({a.models} models) | {_range(a.first)} | {_range(a.last)} | "
                     f"{_range(a.target) if a.target else '–'} | {a.kept} | {a.blind if a.target else '–'} |")
    flagged = [f"{r['model']}/{k}" for r in rows for k, e in r["maps"].items() if e["keeps_structure"]]
    lines += ["", "The last two columns count the models whose map is flagged (rules above).", ""] + _found(maps)
    lines += [f"Maps that keep their structure with every layer random (mean Spearman > {FLAG_SPEARMAN}): "
              f"{', '.join(flagged) if flagged else 'none'}. A map whose correlation with the trained model's map "
              "stays high after randomisation reflects the input (edges, the object's outline) rather than what the "
              "model learnt; a map that does not change with the classifier or the target class (Spearman 1.00 in "
              "those columns) cannot explain a class.", ""]
    return lines


def _found(maps: dict[str, _MapAcrossModels]) -> list[str]:
    """One computed sentence per map: where its correlation ends with every layer random, and how it reacts to
    re-initialising the classifier alone and to a random target class."""
    out = ["What it found (means over the models that have the map):", ""]
    for key, a in maps.items():
        first, last = float(np.mean(a.first)), float(np.mean(a.last))
        fate = "falls towards 0" if abs(last) < 0.3 else ("stays high" if last > FLAG_SPEARMAN else "drops")
        sentence = (f"* {_title(key)}: with every layer random its correlation {fate} ({last:.2f}); with only the "
                    f"classifier re-initialised it is {first:.2f}")
        target = float(np.mean(a.target)) if a.target else None
        if target is not None:
            sentence += f", and a random target class gives {target:.2f}"
        if first > 0.99:
            blind = target is not None and target > 0.99
            sentence += " — it does not use the classifier" + (" or the class" if blind else "")
        out.append(sentence + ".")
    return out + [""]


def sanity_markdown(result: dict) -> str:
    """The per-model tables (Spearman / SSIM per map and step, the random-target test) after a summary across
    models whose every number is computed here from ``result``."""
    lines = [
        "# Sanity checks: cascading randomisation and random target",
        "",
        f"Produced by `{result['command']}` ({result['n']} benchmark scenes, data seed {result['seed']}; maps for "
        f"{result['target']}; randomisation seed {result['randomisation_seed']}; "
        f"{result['seconds'] / 60:.1f} min). Method: Adebayo et al. 2018, \"Sanity Checks for Saliency Maps\"; "
        "details in `attnviz/sanity.py`.",
        "",
        "Each cell: mean Spearman rank correlation / mean SSIM between the original map and the map after "
        "re-initialising every layer group up to and including the column's (classifier first, stem last; "
        "the last column = every layer random). Values near 1 mean the map did not change.",
        "",
        f"Flags: {result['flag_rule']}. ⚑ marks a flagged map.",
        "",
        "![Spearman correlation per randomisation step](sanity.png)",
        "",
    ] + sanity_findings(result)
    for row in result["models"]:
        steps = row["steps"]
        lines += [f"## {row.get('display_name', row['model'])}", "",
                  "| map | " + " | ".join(f"`{s}`" for s in steps) + " |",
                  "|---" * (len(steps) + 1) + "|"]
        for key, entry in row["maps"].items():
            cells = [f"{r:.2f} / {s:.2f}" for r, s in zip(entry["spearman"], entry["ssim"])]
            flag = " ⚑" if entry["keeps_structure"] else ""
            lines.append(f"| {_title(key)}{flag} | " + " | ".join(cells) + " |")
        lines += ["", "Random target (map for a random other class vs the true class):", "",
                  "| map | Spearman | SSIM |", "|---|---|---|"]
        for key, s in row["random_target"].items():
            flag = " ⚑" if s["class_insensitive"] else ""
            lines.append(f"| {_title(key)}{flag} | {s['spearman']:.2f} | {s['ssim']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def plot_sanity(result: dict, path: Path) -> None:
    """One panel per model: mean Spearman (solid) and SSIM (dashed) per randomisation step, one colour per map."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = result["models"]
    keys = list(dict.fromkeys(key for row in rows for key in row["maps"]))   # one colour per map across panels
    cols = min(3, len(rows))
    grid_rows = (len(rows) + cols - 1) // cols
    fig = Figure(figsize=(5.2 * cols, 3.8 * grid_rows + 0.6), dpi=100)
    FigureCanvasAgg(fig)
    handles = {}
    for i, row in enumerate(rows):
        ax = fig.add_subplot(grid_rows, cols, i + 1)
        xs = np.arange(len(row["steps"]))
        for key, entry in row["maps"].items():
            own = key == OWN_MAP        # eleven maps, ten default colours: the attention map is drawn black and thick
            colour = "black" if own else f"C{keys.index(key) % 10}"
            handles[key], = ax.plot(xs, entry["spearman"], "-o", color=colour, markersize=3,
                                    linewidth=2 if own else 1.5)
            ax.plot(xs, entry["ssim"], "--", color=colour, linewidth=0.8)
        ax.axhline(FLAG_SPEARMAN, color="grey", linewidth=0.6, linestyle=":")
        ax.set_xticks(xs, row["steps"], rotation=60, fontsize=7)
        ax.set_ylim(-0.3, 1.05)
        ax.set_title(row.get("display_name", row["model"]), fontsize=10)
        ax.grid(alpha=0.3)
        if i % cols == 0:
            ax.set_ylabel("Spearman (solid), SSIM (dashed)", fontsize=8)
    fig.legend([handles[k] for k in keys], [_title(k) for k in keys], loc="upper center", ncol=min(6, len(keys)),
               fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    fig.savefig(path)
