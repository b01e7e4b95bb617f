"""``attnviz sanity``: do the maps depend on what the model learnt? (Adebayo et al., NeurIPS 2018,
"Sanity Checks for Saliency Maps").

A heatmap that looks the same when the weights are random is explaining the input (edges, the object's
outline), not the model. Two tests, for every CAM method and for the attention module's own spatial map
(:func:`attnviz.metrics.localisation.own_spatial_map`):

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
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Iterator, Sequence

import cv2
import numpy as np
import torch
from torch import nn

from attnviz.api import explain_batch
from attnviz.core.engine import DEFAULT_BATCH_SIZE
from attnviz.core.methods import check_methods
from attnviz.core.specs import LoadedModel
from attnviz.errors import AttnvizError
from attnviz.metrics.agreement import spearman
from attnviz.metrics.agreement import unit as _unit
from attnviz.metrics.localisation import OWN_MAP, own_spatial_map

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

    The one place sanity checks compute maps: ``api.explain_batch``, ``batch_size`` images per pass (in eval
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

















