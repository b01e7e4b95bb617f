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

ONE_PASS = "one-pass"   # one forward + one restricted backward for every method of a batch
ROLLOUT = "rollout"     # built from a transformer's attention weights (and their gradients)
SLOW = "slow"           # one masked forward per channel of the CAM layer, run by pytorch-grad-cam


@dataclass(frozen=True)
class Method:
    """One map method.

    ``compute`` says how it is computed: ``"module:attribute"`` (imported on first use) or the object itself.
    one-pass: the pytorch-grad-cam class whose maps the method reproduces (the engine runs that class's formula
    in torch, :data:`attnviz.core.cam_formulas.BY_LIBRARY_CLASS`; a class not listed there runs its own numpy
    ``get_cam_image`` on the host), or a torch function ``(activations (B,C,h,w), gradients (B,C,h,w) or None,
    eigen_smooth) -> (B,h,w)`` on the model's device; rollout: a function ``(attention, gradients or None,
    prefix, grid) -> (B,h,w)``; slow: a pytorch-grad-cam class run as is.
    """

    name: str
    title: str
    kind: str
    compute: str | Callable[..., Any]
    gradients: bool = True     # needs dS/dA (Eigen-CAM, KPCA-CAM and rollout read their inputs only)
    score: str = "target"      # "target": logit[t] (or logit[t] - logit[contrast]); "finer": Finer-CAM's target

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
    Method("rollout", "Attention rollout", ROLLOUT, "attnviz.core.transformers:rollout", gradients=False),
    Method("grad-rollout", "Grad-rollout", ROLLOUT, "attnviz.core.transformers:grad_rollout"),
    Method("scorecam", "Score-CAM", SLOW, _library("ScoreCAM"), gradients=False),
    Method("ablationcam", "Ablation-CAM", SLOW, _library("AblationCAM"), gradients=False),
)}

DEFAULT_METHODS: tuple[str, ...] = ("gradcam", "gradcam++")
# The five methods the first engine shipped; `attnviz eval` scores these by default.
CLASSIC_METHODS: tuple[str, ...] = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam")
KIND_HELP = {ONE_PASS: "One pass", ROLLOUT: "ViTs", SLOW: "slow (one forward per channel)"}


def names(kind: str | None = None) -> tuple[str, ...]:
    """Method names in catalogue order, all or of one kind (read at call time, so an added entry shows)."""
    return tuple(n for n, m in CATALOGUE.items() if kind is None or m.kind == kind)


def get(name: str) -> Method:
    return CATALOGUE[name]


def title(name: str) -> str:
    """How the page, the grid and the tables name a method (unknown keys, e.g. "attention", pass through)."""
    method = CATALOGUE.get(name)
    return method.title if method else name


def help_text() -> str:
    """The ``--methods`` help: every method, grouped by kind."""
    groups = [f"{KIND_HELP[kind]}: {', '.join(names(kind))}" for kind in KIND_HELP if names(kind)]
    return f"comma-separated map methods (default {','.join(DEFAULT_METHODS)}). " + "; ".join(groups)


def _key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


def check_methods(methods: Sequence[str] | str) -> tuple[str, ...]:
    """Normalise method names ("Grad-CAM++" -> "gradcam++", "Grad rollout" -> "grad-rollout"); reject unknown ones."""
    if isinstance(methods, str):
        methods = [methods]
    keys = {_key(n): n for n in CATALOGUE}
    keys.update({_key(m.title): n for n, m in CATALOGUE.items()})
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
