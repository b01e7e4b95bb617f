"""The public front door: ``explain``, ``explain_batch`` and ``compare`` for a model name, spec or ``nn.Module``.

Here a name becomes a ready :class:`LoadedModel` (the zoo's cache, on the requested device) and the batched core
(:mod:`attnviz.core.engine`) runs on it; ``compare`` adds how each variant's maps agree with the baseline's.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np
import torch
from torch import nn

from attnviz.core import cam as cam_core
from attnviz.core import concepts as dff
from attnviz.core import methods as catalogue
from attnviz.core.devices import resolve_device
from attnviz.core.engine import (
    DEFAULT_BATCH_SIZE,
    ProgressFn,
    Target,
    _layer_names,
    _prepare_inputs,
    explain_loaded,
    unavailable_methods,
    wrap_module,
)
from attnviz.core.methods import DEFAULT_METHODS, check_methods
from attnviz.core.specs import LoadedModel, ModelSpec
from attnviz.data.images import decode_image
from attnviz.errors import AttnvizError, LimitExceededError, TargetError
from attnviz.metrics.agreement import comparison_agreement
from attnviz.results import Comparison, Explanation
from attnviz.zoo.registry import load

Model = str | ModelSpec | LoadedModel | nn.Module


def resolve_model(model: Model, device: str | torch.device | None) -> LoadedModel:
    """A model of any accepted kind, on ``device``. A plain ``nn.Module`` stays where its parameters are unless
    ``device`` is given; registry models default to "auto"."""
    if isinstance(model, LoadedModel):
        if device is not None and model.spec is not None and resolve_device(device) != model.device:
            return load(model.spec, device)
        return model
    if isinstance(model, (str, ModelSpec)):
        return load(model, device)
    if isinstance(model, nn.Module):
        return wrap_module(model, device)
    raise AttnvizError(f"explain() takes a model name, ModelSpec or nn.Module, not {type(model).__name__}")


def check_applicable(models: Sequence[LoadedModel], methods: Sequence[str]) -> list[dict[str, str]]:
    """Refuse a request that asks for a method none of its models can compute (rollout with only CNNs): a
    contradiction in the request, told before any image is read. A method only *some* models can compute runs
    on those; the others get an "n/a" cell with the reason (:attr:`Explanation.unavailable`). Returns, per model,
    the methods it cannot compute and why."""
    missing = [unavailable_methods(r.model, methods) for r in models]
    for method in methods:
        if models and all(method in m for m in missing):
            names = ", ".join(r.name for r in models)
            raise TargetError(f"{catalogue.title(method)} cannot run on any of the selected models ({names}): it "
                              "needs a ViT/DeiT's global self-attention. Add a ViT/DeiT model or choose a CAM method.")
    return missing


def explain_batch(model: Model, images, methods: Sequence[str] = DEFAULT_METHODS,
                  targets: Target | Sequence[Target] = None, layer: str | Sequence[str] | None = None, *,
                  batch_size: int = DEFAULT_BATCH_SIZE, device: str | torch.device | None = None, record: bool = True,
                  topk: int = 5, class_names: Sequence[str] | None = None,
                  contrast: Target | Sequence[Target] = None, eigen_smooth: bool = False, aug_smooth: bool = False,
                  amp: bool = False, progress: ProgressFn | None = None,
                  skip_unavailable: bool = False, refine: bool = False, sess: int | bool = 0) -> list[Explanation]:
    """Predictions, CAMs and attention maps for many images through one model, ``batch_size`` per pass.

    ``images``: a preprocessed (N, 3, H, W) tensor, or (registry models) a sequence of images/paths decoded and
    preprocessed as the model expects. ``targets``: None (each image's top-1), one class index/name for all,
    or one per image; ``contrast`` likewise ("target versus contrast": score = logit target - logit contrast).
    ``layer``: a dotted module name or a list of them (fused, pytorch-grad-cam's multi-layer mean).
    ``eigen_smooth`` / ``aug_smooth``: pytorch-grad-cam's options (the augmented copies run as one batch).
    ``refine``: pytorch-grad-cam's RefineCAM on every one-pass method: the maps of the (two or more) layers are
    multiplied instead of averaged. ``sess``: pytorch-grad-cam's SESS on every one-pass method, with that many
    scales (True: its default 12; each scale's sliding-window patches run as extra batches, so it costs ~a hundred
    patches per 224 px image at 12 scales).
    ``amp``: float16 autocast on CUDA. Results are CPU numpy whatever the device.
    ``skip_unavailable``: a method this model cannot compute (rollout on a CNN) is an error, or, when True, left
    out and listed with its reason in each explanation's ``unavailable`` (a comparison where another model
    computes it).
    """
    if batch_size < 1:
        raise AttnvizError("batch_size must be at least 1.")
    methods = check_methods(methods)
    return explain_loaded(resolve_model(model, device), images, methods, targets, layer, batch_size=batch_size,
                          record=record, topk=topk, class_names=class_names, contrast=contrast,
                          eigen_smooth=eigen_smooth, aug_smooth=aug_smooth, amp=amp, progress=progress,
                          skip_unavailable=skip_unavailable, refine=refine, sess=sess)


def explain(model: Model, image, methods: Sequence[str] = DEFAULT_METHODS,
            target: Target = None, layer: str | Sequence[str] | None = None, *, topk: int = 5,
            record: bool = True, class_names: Sequence[str] | None = None, device: str | torch.device | None = None,
            contrast: Target = None, eigen_smooth: bool = False, aug_smooth: bool = False,
            amp: bool = False, skip_unavailable: bool = False, refine: bool = False,
            sess: int | bool = 0) -> Explanation:
    """Predictions, CAMs and attention maps for one model on one image (the one-image case of
    :func:`explain_batch`, same core).

    ``model``: a registry name, a :class:`ModelSpec`, or a plain ``nn.Module`` (then ``image`` must be a
    preprocessed (1, 3, H, W) tensor; ``layer`` a dotted module name, or found for common architectures;
    maps come at H x W). ``target``: class index or name; default the model's top-1.
    """
    if isinstance(image, torch.Tensor):
        if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3:
            raise AttnvizError(f"A tensor input must have shape (1, 3, H, W), got {tuple(image.shape)}.")
        images = image
    else:
        images = [image]
    return explain_batch(model, images, methods, [target], layer, batch_size=1, device=device, record=record,
                         topk=topk, class_names=class_names, contrast=[contrast], eigen_smooth=eigen_smooth,
                         aug_smooth=aug_smooth, amp=amp, skip_unavailable=skip_unavailable, refine=refine,
                         sess=sess)[0]


def compare(names: Sequence[str | ModelSpec], image, methods: Sequence[str] = DEFAULT_METHODS,
            target: Target = None, layer: str | Sequence[str] | None = None, *, topk: int = 5,
            progress: ProgressFn | None = None, mask: np.ndarray | None = None,
            timeout_s: float | None = None, device: str | torch.device | None = None, contrast: Target = None,
            eigen_smooth: bool = False, aug_smooth: bool = False, amp: bool = False, refine: bool = False,
            sess: int | bool = 0) -> Comparison:
    """Run several models on one image. A class *name* target is looked up in each model's own label set.

    ``timeout_s`` bounds the whole comparison: it is checked before each model starts. A method only some of the
    models can compute (rollout beside CNNs) gives the others an "n/a" cell; one none can compute is refused
    before any model runs (:func:`check_applicable`).
    """
    deadline = time.monotonic() + timeout_s if timeout_s else None
    if not names:
        raise AttnvizError("Choose at least one model.")
    t0 = cam_core.now_ms()
    methods = check_methods(methods)
    decoded = image if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 \
        else decode_image(image)
    wanted_layers = None if layer is None else ([layer] if isinstance(layer, str) else list(layer))
    if any(catalogue.get(m).kind == catalogue.ROLLOUT for m in methods):   # the one kind some models lack
        check_applicable([load(name, device) for name in names], methods)
    explanations = []
    label_sets: dict[str, tuple[str, ...]] = {}
    for i, name in enumerate(names):
        label = name if isinstance(name, str) else name.name
        if deadline is not None and time.monotonic() > deadline:
            raise LimitExceededError(f"The comparison took longer than {timeout_s:.0f} s and was stopped after "
                                     f"{i} of {len(names)} models; choose fewer models or faster methods.")
        if progress:
            progress(i, len(names), label)
        spec = load(name, device).spec
        label_sets[spec.name] = tuple(spec.class_names)
        if wanted_layers:
            missing = [lay for lay in wanted_layers if lay not in spec.layers]
            if missing:
                raise TargetError(f"Layer {missing[0]!r} is not available for {spec.name}; it offers: "
                                  f"{', '.join(spec.layers)}.")
        explanations.append(explain(spec, decoded, methods, target, wanted_layers, topk=topk, device=device,
                                    contrast=contrast, eigen_smooth=eigen_smooth, aug_smooth=aug_smooth, amp=amp,
                                    refine=refine, sess=sess,
                                    skip_unavailable=True))
    if progress:
        progress(len(names), len(names), "done")
    comparison = Comparison(image=decoded, explanations=explanations, methods=methods, target_request=target,
                            timings={"total": cam_core.now_ms() - t0}, mask=mask)
    comparison.agreement = comparison_agreement(comparison, label_sets)
    return comparison


def concepts(model: Model, images, k: int = dff.DEFAULT_CONCEPTS, layer: str | None = None, *,
             device: str | torch.device | None = None, class_names: Sequence[str] | None = None) -> dff.Concepts:
    """Deep Feature Factorization (pytorch-grad-cam's ``DeepFeatureFactorization``): ``k`` concepts found by NMF
    of ``layer``'s activations (default: the model's CAM layer, its last stage) over all ``images`` together, one
    heatmap per concept and image, and the classifier's logits for each concept (``Concepts.top_classes``).
    ``images`` as for :func:`explain_batch`."""
    r = resolve_model(model, device)
    x, _ = _prepare_inputs(images, r.spec)
    (name,) = _layer_names(layer, r.spec, r.model)
    names = tuple(class_names) if class_names else (r.spec.class_names if r.spec else ())
    return dff.concepts(r, x, name, int(k), names)
