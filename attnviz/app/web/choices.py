"""What the page's lists offer: models, architectures, CAM methods, target classes, layers, examples, the intro."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Sequence

import gradio as gr

from attnviz.app import pipeline
from attnviz.app.web import sessions as uploads
from attnviz.core import methods as catalogue
from attnviz.core.specs import ModelSpec
from attnviz.data.examples import EXAMPLES_DIR
from attnviz.errors import AttnvizError
from attnviz.zoo import registry as zoo

EIGEN_SMOOTH = "eigen smooth"
AUG_SMOOTH = "aug smooth"
REFINE = "RefineCAM"
SESS = "SESS"
SESS_SCALES = 12   # pytorch-grad-cam's default
TOP1 = "top-1 (each model)"
DEFAULT_LAYER = "each model's default"
NO_CONTRAST = "nothing (the target's own score)"
PHOTO_EXAMPLES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")


def _selectable(spec: ModelSpec) -> bool:
    return spec.source not in ("random", "replicate")  # replicates are for `attnviz eval`, not the page


def model_choices() -> list[tuple[str, str]]:
    """Models that can run now: the bundled zoo and ImageNet models whose weights are on disk."""
    return [(f"{s.display_name} ({s.name})", s.name) for s in zoo.all_specs()
            if _selectable(s) and s.weights.available()]


def _not_downloaded() -> list[ModelSpec]:
    return [s for s in zoo.all_specs() if _selectable(s) and not s.weights.available()]


def not_downloaded_markdown() -> str:
    """The models that cannot run yet, apart from the list, each with the command that fetches it."""
    missing = _not_downloaded()
    if not missing:
        return ""
    rows = "\n".join(f"| {s.display_name} | `{s.weights.download_hint.removeprefix('run ').strip('`') or s.name}` |"
                     for s in missing)
    return (f"**{len(missing)} ImageNet models are not downloaded** and cannot be selected. Fetch them all with "
            "`attnviz weights download --set imagenet` (or one at a time below), then restart the page.\n\n"
            f"| model | command |\n|---|---|\n{rows}")


def ranked_architectures(names: Sequence[str]) -> list[str]:
    """Architecture names so that typing a whole name and pressing Enter picks that name: every name comes
    before the names that contain it (``resnet18`` before ``bam_resnet18``); plain backbones first."""
    names = sorted(set(names))
    depth = {n: sum(1 for other in names if other != n and other in n) for n in names}
    return sorted(names, key=lambda n: (depth[n], n))


def architectures() -> list[str]:
    import models

    return ranked_architectures(models.available())


def method_choices() -> list[tuple[str, str]]:
    """(title, name) of every catalogue method, grouped by cost kind (cheapest first, catalogue order inside a
    group): the page's CAM-method checkboxes; :func:`method_info` names the groups under them."""
    return [(catalogue.title(m), m) for group in catalogue.by_cost().values() for m in group]


# The page's short words for each cost (the catalogue's COST_HELP, which --methods prints, is longer)
PAGE_COST = {catalogue.COST_SECOND_ORDER: "+ a double backward", catalogue.COST_FULL_BACKWARD: "+ a full backward",
             catalogue.COST_MULTI_PASS: "one forward per channel, slow"}


def method_info() -> str:
    """The line under the method checkboxes: what the costly ones cost, read from the catalogue (the one-pass
    methods, most of the list, are the rule the line starts with)."""
    groups = [f"{', '.join(catalogue.title(m) for m in group)}: {PAGE_COST.get(cost, catalogue.COST_HELP[cost])}"
              for cost, group in catalogue.by_cost().items() if cost != catalogue.COST_ONE_PASS]
    flows = ", ".join(catalogue.title(m) for m in catalogue.names(catalogue.ROLLOUT))
    return ("One forward and at most one backward each, except " + "; ".join(groups)
            + f". {flows}: ViT/DeiT only.")


def specs_for(names: Sequence[str], session: uploads.SessionModels | None) -> list[ModelSpec]:
    out = []
    for item in uploads.resolve(session, names):
        try:
            out.append(item if isinstance(item, ModelSpec) else zoo.get_spec(item))
        except AttnvizError:
            continue
    return out


def class_names(specs: Sequence[ModelSpec]) -> list[str]:
    """The class names of ``specs`` (each once, in order); the bundled zoo's when none is given."""
    if not specs:
        specs = [s for s in zoo.all_specs() if s.source == "bundled zoo"]
    names: dict[str, None] = {}
    for spec in specs:
        names.update(dict.fromkeys(spec.class_names))
    return list(names)


def target_choices(specs: Sequence[ModelSpec] = ()) -> list[str]:
    return [TOP1] + class_names(specs)


def contrast_choices(specs: Sequence[ModelSpec] = ()) -> list[str]:
    return [NO_CONTRAST] + class_names(specs)


def layer_choices(names: Sequence[str], session: uploads.SessionModels | None = None) -> list[str]:
    """"each model's default" plus the CAM layers every selected model offers."""
    return [DEFAULT_LAYER] + pipeline.shared_layers(specs_for(names, session))


def limit_note(names: Sequence[str] | None) -> dict:
    """Visible when the model list is full: the dropdown then silently refuses more."""
    full = len(names or []) >= pipeline.MAX_MODELS_PER_REQUEST
    return gr.update(visible=full, value=(f"**{pipeline.MAX_MODELS_PER_REQUEST} models is the limit per request** "
                                          "(`ATTNVIZ_MAX_MODELS`); remove one to add another." if full else ""))


def intro_markdown() -> str:
    """The page's first lines; the attention types are named from the bundled model cards."""
    kinds = [zoo.get_spec(n).display_name for n in zoo.bundled() if zoo.get_spec(n).attention != "none"]
    listed = ", ".join(f"**{k}**" for k in kinds[:-1]) + (f" and **{kinds[-1]}**" if len(kinds) > 1 else
                                                          (f"**{kinds[0]}**" if kinds else ""))
    return ("# attnviz — what does attention change?\n"
            f"Compare a baseline CNN with the same network plus {listed or 'attention modules'}: predictions, "
            "Grad-CAM-family heatmaps, and the maps each attention module computes. The bundled models were "
            "trained by attnviz with one recipe on a procedural benchmark of 11 shapes with known object masks, "
            "so heatmaps on the example scenes can be *scored*; on photos they can only say which shape a photo "
            "resembles.")


CLAIMS_LINE = ("Which of the attention papers' claims hold on these models, each with its test, 95 % CI and verdict: "
               "`docs/claims.md` (`attnviz claims` reruns them on your own models and images).")


def _skimage_data_dir() -> Path | None:
    """scikit-image's bundled photos, found without importing scikit-image (it costs memory)."""
    found = importlib.util.find_spec("skimage")
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0]) / "data"


def example_inputs() -> tuple[list[list[str]], list[str]]:
    """Bundled benchmark scenes (with masks) and a few photographs that ship with scikit-image."""
    paths, labels = [], []
    if EXAMPLES_DIR.is_dir():
        for p in sorted(EXAMPLES_DIR.glob("*.png")):
            if not p.name.endswith("_mask.png"):
                paths.append([str(p)])
                labels.append(f"scene: {p.stem.split('_', 1)[-1].replace('_', ' ')}")
    folder = _skimage_data_dir()
    if folder is not None:
        for name in PHOTO_EXAMPLES:
            if (folder / name).is_file():
                paths.append([str(folder / name)])
                labels.append(f"photo: {Path(name).stem}")
    return paths, labels
