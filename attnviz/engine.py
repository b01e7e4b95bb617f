"""``explain`` (one model, one image) and ``compare`` (several models, one image).

One forward pass (autograd on only after the CAM layer) + one backward from the class score to that
layer gives every one-pass CAM method; attention maps are recorded by gate hooks during the same
forward. The model's lock is held while hooks are attached, so concurrent requests never mix.
"""
from __future__ import annotations

import difflib
import os
import threading
import time
import weakref
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from . import cam as cam_core
from .errors import AttnvizError, LimitExceededError, TargetError
from .images import decode_image
from .recorder import record_attention, stage_summaries
from .results import AttentionMap, CamMap, Comparison, Explanation, Prediction
from .specs import ModelSpec
from .zoo import LoadedModel, load

SLOW_BUDGET_S = float(os.environ.get("ATTNVIZ_SLOW_BUDGET_S", "120"))
DEFAULT_METHODS: tuple[str, ...] = ("gradcam", "gradcam++")
SLOW_METHODS: tuple[str, ...] = ("scorecam", "eigencam", "ablationcam")
ALL_METHODS: tuple[str, ...] = tuple(cam_core.ONE_PASS_METHODS) + SLOW_METHODS

ProgressFn = Callable[[int, int, str], None]

_module_locks: "weakref.WeakKeyDictionary[nn.Module, threading.Lock]" = weakref.WeakKeyDictionary()
_module_locks_guard = threading.Lock()


def _lock_for_module(model: nn.Module) -> threading.Lock:
    with _module_locks_guard:
        lock = _module_locks.get(model)
        if lock is None:
            lock = _module_locks[model] = threading.Lock()
        return lock


def check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    """Normalise method names ("Grad-CAM++" -> "gradcam++") and reject unknown ones readably."""
    out = []
    for m in methods:
        key = m.lower().replace("-", "").replace("_", "").replace(" ", "")
        if key not in ALL_METHODS:
            raise AttnvizError(f"Unknown CAM method {m!r}. Choose from: {', '.join(ALL_METHODS)}.")
        if key not in out:
            out.append(key)
    if not out:
        raise AttnvizError("Choose at least one CAM method.")
    return tuple(out)


def resolve_target(target: int | str | None, class_names: Sequence[str], logits: torch.Tensor) -> int:
    """None -> top-1; int -> that index; str -> class by name (case and separators ignored)."""
    if target is None or (isinstance(target, str) and target.strip().lower() in ("", "top-1", "top1")):
        return int(logits.argmax())
    if isinstance(target, (int, np.integer)):
        if not 0 <= int(target) < len(class_names):
            raise TargetError(f"Class index {target} is out of range: this model has {len(class_names)} classes.")
        return int(target)

    def norm(s: str) -> str:
        return s.strip().lower().replace("_", " ").replace("-", " ")

    wanted = norm(str(target))
    for i, name in enumerate(class_names):
        if norm(name) == wanted:
            return i
    if wanted.isdigit():
        return resolve_target(int(wanted), class_names, logits)
    close = difflib.get_close_matches(wanted, [norm(c) for c in class_names], n=3)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise TargetError(f"Unknown class {target!r} for this model.{hint}")


def _as_loaded(model: str | ModelSpec | LoadedModel | nn.Module) -> tuple[nn.Module, ModelSpec | None, threading.Lock, str]:
    if isinstance(model, LoadedModel):
        return model.model, model.spec, model.lock, model.weights_sha256
    if isinstance(model, (str, ModelSpec)):
        loaded = load(model)
        return loaded.model, loaded.spec, loaded.lock, loaded.weights_sha256
    if isinstance(model, nn.Module):
        return model, None, _lock_for_module(model), ""
    raise AttnvizError(f"explain() takes a model name, ModelSpec or nn.Module, not {type(model).__name__}")


def _prepare_input(image, spec: ModelSpec | None) -> tuple[torch.Tensor, np.ndarray | None]:
    if isinstance(image, torch.Tensor):
        if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3:
            raise AttnvizError(f"A tensor input must have shape (1, 3, H, W), got {tuple(image.shape)}.")
        return image.float(), None
    if spec is None:
        raise AttnvizError("A plain nn.Module needs an already preprocessed (1, 3, H, W) tensor as the image.")
    view = spec.model_view(decode_image(image))
    return spec.normalise(view[None]), view


def check_slow_budget(method: str, channels: int, forward_ms: float, name: str) -> None:
    """Score-/Ablation-CAM run one masked forward per channel of the CAM layer: refuse what would take too long."""
    if method not in ("scorecam", "ablationcam"):
        return
    estimate = channels * forward_ms / 1000.0
    if estimate > SLOW_BUDGET_S:
        raise LimitExceededError(f"{method} on {name} needs about {channels} forward passes (~{estimate:.0f} s); "
                                 f"the limit is {SLOW_BUDGET_S:.0f} s. Use a one-pass method, or an earlier layer.")


def _slow_cam(method: str, model: nn.Module, layer: nn.Module, x: torch.Tensor, target: int) -> np.ndarray:
    from pytorch_grad_cam import AblationCAM, EigenCAM, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = {"scorecam": ScoreCAM, "eigencam": EigenCAM, "ablationcam": AblationCAM}[method]
    with torch.enable_grad(), cls(model=model, target_layers=[layer]) as engine:
        if hasattr(engine, "batch_size"):
            engine.batch_size = 32
        return engine(input_tensor=x, targets=[ClassifierOutputTarget(target)])[0].astype(np.float32)


def explain(model: str | ModelSpec | LoadedModel | nn.Module, image, methods: Sequence[str] = DEFAULT_METHODS,
            target: int | str | None = None, layer: str | None = None, *, topk: int = 5,
            record: bool = True, class_names: Sequence[str] | None = None) -> Explanation:
    """Predictions, CAMs and attention maps for one model on one image.

    ``model``: a registry name, a :class:`ModelSpec`, or a plain ``nn.Module`` (then ``image`` must be a
    preprocessed (1, 3, H, W) tensor and ``layer`` a dotted module name; maps come at H x W).
    ``target``: class index or name; default each model's top-1. ``layer``: dotted name of the CAM layer.
    """
    t0 = cam_core.now_ms()
    methods = check_methods(methods)
    net, spec, lock, digest = _as_loaded(model)
    x, view = _prepare_input(image, spec)
    names = tuple(class_names) if class_names else (spec.class_names if spec else ())
    layer_name = layer or (spec.default_layer if spec else ("layer4" if hasattr(net, "layer4") else None))
    if layer_name is None:
        raise TargetError("Pass layer='<dotted module name>' for this model (e.g. 'layer4' or 'features.18').")
    if spec is not None and layer is not None and layer not in spec.layers:
        # any real module is allowed, but say which ones the model advertises if it does not exist
        try:
            net.get_submodule(layer)
        except AttributeError:
            raise TargetError(f"Layer {layer!r} is not in {spec.name}; choose one of: {', '.join(spec.layers)}.") from None
    layer_module = cam_core.resolve_layer(net, layer_name)
    timings = {"preprocess": cam_core.now_ms() - t0}

    with lock:
        t1 = cam_core.now_ms()
        if record:
            with record_attention(net) as recording:
                logits, leaf = cam_core.forward_to_layer(net, x, layer_module)
            attention_maps: list[AttentionMap] = recording.maps()
        else:
            logits, leaf = cam_core.forward_to_layer(net, x, layer_module)
            attention_maps = []
        t2 = cam_core.now_ms()
        if not names:
            names = tuple(f"class_{i}" for i in range(logits.shape[-1]))
        if len(names) != logits.shape[-1]:
            raise AttnvizError(f"{len(names)} class names given for a model with {logits.shape[-1]} outputs.")
        target_index = resolve_target(target, names, logits[0])
        one_pass = [m for m in methods if m in cam_core.ONE_PASS_METHODS]
        grads = cam_core.class_gradient(logits, leaf, target_index) if one_pass else None
        t3 = cam_core.now_ms()
        for m in methods:
            check_slow_budget(m, int(leaf.shape[1]), t2 - t1, spec.name if spec else type(net).__name__)
        slow = {m: _slow_cam(m, net, layer_module, x, target_index) for m in methods if m in SLOW_METHODS}
        t4 = cam_core.now_ms()
    timings.update(forward=t2 - t1, backward=t3 - t2)
    if slow:
        timings["slow_methods"] = t4 - t3

    height, width = x.shape[-2:]
    cams: dict[str, CamMap] = {}
    if one_pass:
        computed = cam_core.compute_cams(leaf.detach().numpy(), grads.numpy(), one_pass, (height, width))
        for m in one_pass:
            heat, raw, layer_map = computed[m]
            cams[m] = CamMap(m, heat, raw, layer_map)
    for m, heat in slow.items():
        cams[m] = CamMap(m, heat, heat, heat)
    cams = {m: cams[m] for m in methods}
    theta = next((a.data for a in attention_maps if a.layout == "affine"), None)
    if theta is not None:  # a spatial transformer: CAMs live on its warped view; show them on the input
        cams = {m: CamMap(m, _renormalise(cam_core.warp_to_input(c.heatmap, theta)),
                          cam_core.warp_to_input(c.raw, theta), c.layer_map) for m, c in cams.items()}
    timings["cams"] = cam_core.now_ms() - t4

    logits_np = logits.detach()[0].float().numpy()
    probs = torch.softmax(logits.detach()[0].float(), dim=0).numpy()
    order = np.argsort(-probs)[:max(1, topk)]
    predictions = [Prediction(int(i), names[int(i)], float(probs[i])) for i in order]
    summaries = stage_summaries(attention_maps)
    timings["total"] = cam_core.now_ms() - t0
    warnings = ["Score-/Eigen-/Ablation-CAM maps come normalised by pytorch-grad-cam; they cannot share a colour "
                "scale with the others."] if slow else []
    return Explanation(
        model=spec.name if spec else type(net).__name__,
        display_name=spec.display_name if spec else type(net).__name__,
        attention=spec.attention if spec else _guess_attention(attention_maps),
        image=view, predictions=predictions, target=Prediction(target_index, names[target_index],
                                                               float(probs[target_index])),
        layer=layer_name, cams=cams, attention_maps=attention_maps, stage_summaries=summaries, timings=timings,
        logits=logits_np, weights_sha256=digest, warnings=warnings,
        view_resize=spec.resize_size if (spec and view is not None) else 0)


def _renormalise(heat: np.ndarray) -> np.ndarray:
    top = float(heat.max())
    return (heat / top).astype(np.float32) if top > 0 else heat


def _guess_attention(maps: list[AttentionMap]) -> str:
    kinds = sorted({m.attention for m in maps})
    return "+".join(kinds) if kinds else "none"


def compare(names: Sequence[str | ModelSpec], image, methods: Sequence[str] = DEFAULT_METHODS,
            target: int | str | None = None, layer: str | None = None, *, topk: int = 5,
            progress: ProgressFn | None = None, mask: np.ndarray | None = None,
            timeout_s: float | None = None) -> Comparison:
    """Run several models on one image. A class *name* target is looked up in each model's own label set.

    ``timeout_s`` bounds the whole comparison: it is checked before each model starts.
    """
    deadline = time.monotonic() + timeout_s if timeout_s else None
    if not names:
        raise AttnvizError("Choose at least one model.")
    t0 = cam_core.now_ms()
    methods = check_methods(methods)
    decoded = image if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 \
        else decode_image(image)
    explanations = []
    for i, name in enumerate(names):
        label = name if isinstance(name, str) else name.name
        if deadline is not None and time.monotonic() > deadline:
            raise LimitExceededError(f"The comparison took longer than {timeout_s:.0f} s and was stopped after "
                                     f"{i} of {len(names)} models; choose fewer models or faster methods.")
        if progress:
            progress(i, len(names), label)
        spec = load(name).spec
        model_layer = layer if (layer is None or layer in spec.layers) else None
        if layer is not None and model_layer is None:
            raise TargetError(f"Layer {layer!r} is not available for {spec.name}; it offers: {', '.join(spec.layers)}.")
        explanations.append(explain(name, decoded, methods, target, model_layer, topk=topk))
    if progress:
        progress(len(names), len(names), "done")
    return Comparison(image=decoded, explanations=explanations, methods=methods, target_request=target,
                      timings={"total": cam_core.now_ms() - t0}, mask=mask)
