"""The one catalogue of map methods: every CAM, rollout and slow method the engine, CLI, page and reports know.

Adding a method is one :class:`Method` entry in :data:`CATALOGUE` (name, title, kind, how it is computed); the
engine, ``--methods`` help, the page's choices, the grid's titles and the evaluation tables all read it here.
No torch import: ``attnviz --help`` lists the methods from this module without loading torch.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from attnviz.errors import AttnvizError

# How the engine computes a method (``Method.kind``):
ONE_PASS = "one-pass"   # a formula on the CAM layer's activations (and a gradient of the score there)
ROLLOUT = "rollout"     # built from a transformer's attention weights (and their gradients)
INPUT = "input"         # a map at input resolution: from the image itself, or from gradients down to the input
SLOW = "slow"           # one masked forward per channel of the CAM layer, run by pytorch-grad-cam

# What a method costs on top of the batch's one forward (``Method.cost``), shown on the page and in --methods:
COST_ONE_PASS = "one-pass"            # nothing, or a backward from the score to the CAM layer only
COST_SECOND_ORDER = "second-order"    # that backward with its graph kept, plus a Hessian-vector product
COST_FULL_BACKWARD = "full-backward"  # a backward through the whole network, down to the input
COST_MULTI_PASS = "multi-pass"        # one more forward per channel of the CAM layer
COSTS = (COST_ONE_PASS, COST_SECOND_ORDER, COST_FULL_BACKWARD, COST_MULTI_PASS)
COST_HELP = {COST_ONE_PASS: "one forward, at most a backward to the CAM layer",
             COST_SECOND_ORDER: "plus a double backward (Hessian-vector product)",
             COST_FULL_BACKWARD: "plus a backward through the whole network",
             COST_MULTI_PASS: "one forward per CAM-layer channel: slow"}


@dataclass(frozen=True)
class Method:
    """One map method.

    ``compute`` says how it is computed: ``"module:attribute"`` (imported on first use) or the object itself.
    one-pass: the pytorch-grad-cam class whose maps the method reproduces (the engine runs that class's formula
    in torch, :data:`attnviz.core.cam_formulas.BY_LIBRARY_CLASS`; a class not listed there runs its own numpy
    ``get_cam_image`` on the host), or a torch function ``(activations (B,C,h,w), gradients (B,C,h,w) or None,
    eigen_smooth) -> (B,h,w)`` on the model's device; rollout: a function ``(attention, gradients or None,
    prefix, grid) -> (B,h,w)``; input: a function of an :class:`attnviz.core.input_maps.InputContext` returning
    (B,H,W), marked with what it needs (the image, dS/dx, the guided dS/dx, Grad-CAM); slow: a pytorch-grad-cam
    class run as is. ``cost`` says what it costs beyond the batch's one forward (:data:`COSTS`).
    """

    name: str
    title: str
    kind: str
    compute: str | Callable[..., Any]
    gradients: bool = True     # needs dS/dA (Eigen-CAM, KPCA-CAM and rollout read their inputs only)
    score: str = "target"      # "target": logit[t] (or logit[t] - logit[contrast]); "finer": Finer-CAM's target;
    #                            "shapley": the target's dS/dA minus half its Hessian-vector product with A;
    #                            "legrad": per transformer block, the target score of that block's own tokens
    cost: str = ""             # one of COSTS; "" = what the kind costs (slow: multi-pass, else one-pass)

    @property
    def cost_kind(self) -> str:
        """What the method costs beyond the batch's one forward (see :data:`COSTS`)."""
        return self.cost or (COST_MULTI_PASS if self.kind == SLOW else COST_ONE_PASS)

    def resolve(self) -> Any:
        """The object ``compute`` names."""
        if not isinstance(self.compute, str):
            return self.compute
        module, _, attribute = self.compute.partition(":")
        return getattr(importlib.import_module(module), attribute)


def _library(name: str) -> str:
    return f"pytorch_grad_cam:{name}"


CATALOGUE: dict[str, Method] = {m.name: m for m in (
    Method("gradcam", "Grad-CAM", ONE_PASS, _library("GradCAM")),
    Method("gradcam++", "Grad-CAM++", ONE_PASS, _library("GradCAMPlusPlus")),
    Method("xgradcam", "XGrad-CAM", ONE_PASS, _library("XGradCAM")),
    Method("layercam", "LayerCAM", ONE_PASS, _library("LayerCAM")),
    Method("hirescam", "HiResCAM", ONE_PASS, _library("HiResCAM")),
    Method("gradcamelementwise", "Grad-CAM element-wise", ONE_PASS, _library("GradCAMElementWise")),
    Method("eigengradcam", "EigenGrad-CAM", ONE_PASS, _library("EigenGradCAM")),
    Method("eigencam", "Eigen-CAM", ONE_PASS, _library("EigenCAM"), gradients=False),
    Method("kpcacam", "KPCA-CAM", ONE_PASS, _library("KPCA_CAM"), gradients=False),
    Method("finercam", "Finer-CAM", ONE_PASS, _library("GradCAM"), score="finer"),
    Method("fem", "FEM", ONE_PASS, _library("FEM"), gradients=False),
    Method("randomcam", "RandomCAM", ONE_PASS, _library("RandomCAM"), gradients=False),
    Method("shapleycam", "ShapleyCAM", ONE_PASS, _library("ShapleyCAM"), score="shapley", cost=COST_SECOND_ORDER),
    Method("sobelcam", "SobelCAM", INPUT, "attnviz.core.input_maps:sobel", gradients=False),
    Method("fullgrad", "FullGrad", INPUT, "attnviz.core.input_maps:fullgrad", cost=COST_FULL_BACKWARD),
    Method("guidedbackprop", "Guided Backprop", INPUT, "attnviz.core.input_maps:guided_backprop",
           cost=COST_FULL_BACKWARD),
    Method("guidedgradcam", "Guided Grad-CAM", INPUT, "attnviz.core.input_maps:guided_gradcam",
           cost=COST_FULL_BACKWARD),
    Method("rollout", "Attention rollout", ROLLOUT, "attnviz.core.transformers:rollout", gradients=False),
    Method("grad-rollout", "Grad-rollout", ROLLOUT, "attnviz.core.transformers:grad_rollout"),
    Method("legrad", "LeGrad", ROLLOUT, "attnviz.core.transformers:legrad", score="legrad"),
    Method("scorecam", "Score-CAM", SLOW, _library("ScoreCAM"), gradients=False),
    Method("ablationcam", "Ablation-CAM", SLOW, _library("AblationCAM"), gradients=False),
)}

DEFAULT_METHODS: tuple[str, ...] = ("gradcam", "gradcam++")
# The five methods the first engine shipped; `attnviz eval` scores these by default.
CLASSIC_METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam")


def names(kind: str | None = None) -> tuple[str, ...]:
    """Method names in catalogue order, all or of one kind (read at call time, so an added entry shows)."""
    return tuple(n for n, m in CATALOGUE.items() if kind is None or m.kind == kind)


def by_cost() -> dict[str, tuple[str, ...]]:
    """Method names grouped by cost kind (in :data:`COSTS` order, catalogue order inside a group; empty groups
    left out): how the page and ``--methods`` list them."""
    groups = {cost: tuple(n for n, m in CATALOGUE.items() if m.cost_kind == cost) for cost in COSTS}
    return {cost: group for cost, group in groups.items() if group}


def cost(name: str) -> str:
    return CATALOGUE[name].cost_kind


def get(name: str) -> Method:
    return CATALOGUE[name]


def title(name: str) -> str:
    """How the page, the grid and the tables name a method (unknown keys, e.g. "attention", pass through)."""
    method = CATALOGUE.get(name)
    return method.title if method else name


def help_text() -> str:
    """The ``--methods`` help: every method, grouped by cost kind, each group with what it costs; the rollout
    methods need a ViT/DeiT-style transformer."""
    groups = [f"{cost} ({COST_HELP[cost]}): {', '.join(group)}" for cost, group in by_cost().items()]
    return (f"comma-separated map methods (default {','.join(DEFAULT_METHODS)}), by cost beyond the one forward: "
            + "; ".join(groups) + f". {', '.join(names(ROLLOUT))} need a ViT/DeiT-style transformer")


# Other names users know a method by: Chefer, Gur & Wolf 2021's gradient-weighted relevance is grad-rollout.
ALIASES = {"chefer": "grad-rollout", "chefer2021": "grad-rollout", "generic attention explainability": "grad-rollout"}


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


def check_methods(methods: Sequence[str] | str) -> tuple[str, ...]:
    """Normalise method names ("Grad-CAM++" -> "gradcam++", "Grad rollout" -> "grad-rollout"); reject unknown ones."""
    if isinstance(methods, str):
        methods = [methods]
    keys = {_key(n): n for n in CATALOGUE}
    keys.update({_key(m.title): n for n, m in CATALOGUE.items()})
    keys.update({_key(alias): n for alias, n in ALIASES.items() if n in CATALOGUE})
    out: list[str] = []
    for m in methods:
        name = keys.get(_key(m))
        if name is None:
            raise AttnvizError(f"Unknown CAM method {m!r}. Choose from: {', '.join(CATALOGUE)}.")
        if name not in out:
            out.append(name)
    if not out:
        raise AttnvizError("Choose at least one CAM method.")
    return tuple(out)
