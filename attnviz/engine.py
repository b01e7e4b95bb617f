"""``explain_batch`` (one model, N images), ``explain`` (one image) and ``compare`` (several models, one image).

One core serves all three: per chunk of ``batch_size`` images, ONE forward (autograd on only from the earliest
tapped layer) and one backward of the *sum* of every sample's score. In eval mode the samples of a batch do not
interact, so that backward gives every sample its own exact gradient at the CAM layer(s); every one-pass method
of every image comes from it. Attention maps are recorded by gate hooks during the same forward. The model's
lock is held while hooks are attached, so concurrent requests never mix. Models run on the requested device
(``"auto"``: CUDA, else MPS, else CPU); everything returned is CPU numpy.
"""
from __future__ import annotations

import difflib
import os
import threading
import time
import weakref
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from . import cam as cam_core
from .agreement import comparison_agreement
from .devices import autocast, resolve_device
from .errors import AttnvizError, LimitExceededError, TargetError
from .images import decode_image
from .layers import default_cam_layer
from .recorder import record_attention, stage_summaries
from .results import AttentionMap, CamMap, Comparison, Explanation, Prediction
from .specs import ModelSpec
from .transformers import ROLLOUT_METHODS, global_attention_modules, grad_rollout, probabilities_module, rollout, unfused
from .zoo import LoadedModel, load

SLOW_BUDGET_S = float(os.environ.get("ATTNVIZ_SLOW_BUDGET_S", "120"))
DEFAULT_METHODS: tuple[str, ...] = ("gradcam", "gradcam++")
SLOW_METHODS: tuple[str, ...] = ("scorecam", "ablationcam")
ALL_METHODS: tuple[str, ...] = tuple(cam_core.METHODS) + ROLLOUT_METHODS + SLOW_METHODS
DEFAULT_BATCH_SIZE = 32

ProgressFn = Callable[[int, int, str], None]
Target = int | str | None

_module_locks: "weakref.WeakKeyDictionary[nn.Module, threading.Lock]" = weakref.WeakKeyDictionary()
_module_locks_guard = threading.Lock()


def _lock_for_module(model: nn.Module) -> threading.Lock:
    with _module_locks_guard:
        lock = _module_locks.get(model)
        if lock is None:
            lock = _module_locks[model] = threading.Lock()
        return lock


def _method_key(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


_METHOD_KEYS = {_method_key(m): m for m in ALL_METHODS}


def check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    """Normalise method names ("Grad-CAM++" -> "gradcam++", "Grad rollout" -> "grad-rollout"); reject unknown ones."""
    if isinstance(methods, str):
        methods = [methods]
    out: list[str] = []
    for m in methods:
        key = _METHOD_KEYS.get(_method_key(m))
        if key is None:
            raise AttnvizError(f"Unknown CAM method {m!r}. Choose from: {', '.join(ALL_METHODS)}.")
        if key not in out:
            out.append(key)
    if not out:
        raise AttnvizError("Choose at least one CAM method.")
    return tuple(out)


def resolve_target(target: Target, class_names: Sequence[str], logits: torch.Tensor | np.ndarray) -> int:
    """None -> top-1; int -> that index; str -> class by name (case and separators ignored)."""
    if target is None or (isinstance(target, str) and target.strip().lower() in ("", "top-1", "top1")):
        return int(np.argmax(np.asarray(logits)))
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


@dataclass
class _Runner:
    """What the core needs of a model: the network on its device, its spec (if any), its lock."""

    net: nn.Module
    spec: ModelSpec | None
    lock: threading.Lock
    digest: str
    device: torch.device

    @property
    def name(self) -> str:
        return self.spec.name if self.spec else type(self.net).__name__


def _module_device(net: nn.Module) -> torch.device:
    tensor = next(iter(net.parameters()), None)
    if tensor is None:
        tensor = next(iter(net.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _runner(model: str | ModelSpec | LoadedModel | nn.Module, device: str | torch.device | None) -> _Runner:
    """A model of any accepted kind, on ``device``. A plain ``nn.Module`` stays where its parameters are unless
    ``device`` is given (then it is moved there, in place); registry models default to "auto"."""
    if isinstance(model, LoadedModel):
        if device is not None and resolve_device(device) != model.device:
            model = load(model.spec, device)
        return _Runner(model.model, model.spec, model.lock, model.weights_sha256, model.device)
    if isinstance(model, (str, ModelSpec)):
        loaded = load(model, device)
        return _Runner(loaded.model, loaded.spec, loaded.lock, loaded.weights_sha256, loaded.device)
    if isinstance(model, nn.Module):
        if device is not None:
            target = resolve_device(device)
            if _module_device(model) != target:
                model.to(target)
        return _Runner(model, None, _lock_for_module(model), "", _module_device(model))
    raise AttnvizError(f"explain() takes a model name, ModelSpec or nn.Module, not {type(model).__name__}")


def _prepare_inputs(images, spec: ModelSpec | None) -> tuple[torch.Tensor, list[np.ndarray | None]]:
    """(N, 3, H, W) float tensor on the CPU plus each image's uint8 model view (None for tensor inputs)."""
    if isinstance(images, torch.Tensor):
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] < 1:
            raise AttnvizError(f"A tensor input must have shape (N, 3, H, W), got {tuple(images.shape)}.")
        return images.detach().float().cpu(), [None] * images.shape[0]
    if spec is None:
        raise AttnvizError("A plain nn.Module needs an already preprocessed (N, 3, H, W) tensor as the images.")
    if isinstance(images, np.ndarray) and images.ndim == 4:
        items = list(images)
    elif isinstance(images, (list, tuple)):
        items = list(images)
    else:
        raise AttnvizError("explain_batch() takes a (N, 3, H, W) tensor or a sequence of images/paths.")
    if not items:
        raise AttnvizError("No images given.")
    views = [spec.model_view(im if (isinstance(im, np.ndarray) and im.dtype == np.uint8 and im.ndim == 3
                                    and im.shape[2] == 3) else decode_image(im)) for im in items]
    return spec.normalise(np.stack(views)), views


def _per_image(value, n: int, what: str) -> list:
    """None / one value for all / one per image -> a list of ``n``."""
    if value is None or isinstance(value, (int, np.integer, str)):
        return [value] * n
    values = list(value)
    if len(values) != n:
        raise AttnvizError(f"{len(values)} {what} given for {n} images; give one for all, or one per image.")
    return values


def _layer_names(layer: str | Sequence[str] | None, spec: ModelSpec | None, net: nn.Module) -> list[str]:
    if layer is None or (isinstance(layer, (list, tuple)) and not layer):
        name = spec.default_layer if spec else default_cam_layer(net)
        if name is None:
            raise TargetError("Pass layer='<dotted module name>' for this model (e.g. 'layer4' or 'features.18').")
        return [name]
    names = [layer] if isinstance(layer, str) else [str(n) for n in layer]
    names = list(dict.fromkeys(n.strip() for n in names if n.strip()))
    for name in names:
        if spec is not None and name not in spec.layers:
            try:  # any real module is allowed, but say which ones the model advertises if it does not exist
                net.get_submodule(name)
            except AttributeError:
                raise TargetError(f"Layer {name!r} is not in {spec.name}; choose one of: "
                                  f"{', '.join(spec.layers)}.") from None
    return names


def check_slow_budget(method: str, channels: int, forward_ms: float, name: str) -> None:
    """Score-/Ablation-CAM run one masked forward per channel of the CAM layer: refuse what would take too long."""
    if method not in SLOW_METHODS:
        return
    estimate = channels * forward_ms / 1000.0
    if estimate > SLOW_BUDGET_S:
        raise LimitExceededError(f"{method} on {name} needs about {channels} forward passes (~{estimate:.0f} s); "
                                 f"the limit is {SLOW_BUDGET_S:.0f} s. Use a one-pass method, or an earlier layer.")


class _Difference:
    """pytorch-grad-cam target "class A versus class B": logit A - logit B (for the slow, library-run methods)."""

    def __init__(self, a: int, b: int) -> None:
        self.a, self.b = a, b

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output[..., self.a] - output[..., self.b]


def _slow_cams(method: str, net: nn.Module, layers: list[nn.Module], x: torch.Tensor, targets: list[int],
               contrasts: list[int | None], input_hw: tuple[int, int], eigen_smooth: bool,
               aug_smooth: bool) -> np.ndarray:
    from pytorch_grad_cam import AblationCAM, ScoreCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = {"scorecam": ScoreCAM, "ablationcam": AblationCAM}[method]
    wanted = [ClassifierOutputTarget(t) if c is None else _Difference(t, c) for t, c in zip(targets, contrasts)]

    def reshape(t: torch.Tensor) -> torch.Tensor:
        return cam_core.to_feature_map(t, layers[0], net, input_hw)

    with torch.enable_grad(), cls(model=net, target_layers=layers, reshape_transform=reshape) as engine:
        engine.batch_size = 32
        return engine(input_tensor=x, targets=wanted, aug_smooth=aug_smooth,
                      eigen_smooth=eigen_smooth).astype(np.float32)


def _augmentations(aug_smooth: bool) -> tuple[list, int]:
    """pytorch-grad-cam's test-time augmentations (ttach: horizontal flip x multiply 0.9/1/1.1) and the index of
    the identity among them; without ``aug_smooth`` a single identity."""
    if not aug_smooth:
        return [None], 0
    import ttach as tta

    transforms = list(tta.Compose([tta.HorizontalFlip(), tta.Multiply(factors=[0.9, 1, 1.1])]))
    probe = torch.arange(12, dtype=torch.float32).view(1, 3, 2, 2)
    identity = next(i for i, t in enumerate(transforms) if torch.equal(t.augment_image(probe), probe))
    return transforms, identity


def _scores(kind: str, logits: torch.Tensor, targets: list[int], contrasts: list[int | None],
            logits_np: np.ndarray) -> torch.Tensor:
    """The summed score of every row whose gradient the methods of ``kind`` explain."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    wanted = torch.tensor(targets, device=logits.device)
    if kind == "target":
        score = logits[rows, wanted]
        if any(c is not None for c in contrasts):
            other = torch.tensor([t if c is None else c for t, c in zip(targets, contrasts)], device=logits.device)
            keep = torch.tensor([c is not None for c in contrasts], device=logits.device)
            score = score - torch.where(keep, logits[rows, other], torch.zeros_like(score))
        return score.float().sum()
    from pytorch_grad_cam.utils.model_targets import FinerWeightedTarget

    total = logits.new_zeros((), dtype=torch.float32)
    for i, (t, c) in enumerate(zip(targets, contrasts)):
        comparisons = [c] if c is not None else cam_core.finer_comparisons(logits_np[i], t)
        total = total + FinerWeightedTarget(t, comparisons, cam_core.FINER_ALPHA)(logits[i].float())
    return total


def _deaugment(maps: np.ndarray, transforms: list, batch: int) -> np.ndarray:
    """(T*b, H, W) maps of T augmented copies -> their mean in the original frame (pytorch-grad-cam's order)."""
    groups = maps.reshape(len(transforms), batch, *maps.shape[1:])
    undone = [t.deaugment_mask(torch.from_numpy(np.ascontiguousarray(g[:, None])))[:, 0].numpy()
              for t, g in zip(transforms, groups)]
    return np.mean(np.float32(undone), axis=0)


def _maps_from_layer(layer_maps: np.ndarray, input_hw: tuple[int, int]) -> cam_core.CamArrays:
    """(b, h, w) maps (rollout) normalised and upsampled exactly like a one-layer CAM."""
    import cv2
    from pytorch_grad_cam.utils.image import scale_cam_image

    height, width = input_hw
    positive = np.maximum(layer_maps, 0).astype(np.float32)
    heat = scale_cam_image(scale_cam_image(positive, (width, height)))
    raw = np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR) for m in positive])
    return cam_core.CamArrays(heat.astype(np.float32), np.maximum(raw, 0).astype(np.float32), positive)


@dataclass
class _Options:
    methods: tuple[str, ...]
    layer_names: list[str]
    names: tuple[str, ...]
    topk: int
    record: bool
    eigen_smooth: bool
    aug_smooth: bool
    amp: bool


def _explain_chunk(r: _Runner, x_cpu: torch.Tensor, views: list[np.ndarray | None], targets: list[Target],
                   contrasts: list[Target], o: _Options) -> list[Explanation]:
    """ONE forward + one backward per distinct score for a chunk of images -> one Explanation per image."""
    t0 = cam_core.now_ms()
    b = x_cpu.shape[0]
    height, width = int(x_cpu.shape[-2]), int(x_cpu.shape[-1])
    one_pass = [m for m in o.methods if m in cam_core.METHODS]
    flows = [m for m in o.methods if m in ROLLOUT_METHODS]
    slow = [m for m in o.methods if m in SLOW_METHODS]
    layer_modules = [cam_core.resolve_layer(r.net, n) for n in o.layer_names]
    attention = [probabilities_module(m) for _, m in global_attention_modules(r.net)] if flows else []
    transforms, ident = _augmentations(o.aug_smooth)
    x = x_cpu.to(r.device)
    x_in = torch.cat([t.augment_image(x) for t in transforms]) if o.aug_smooth else x
    taps = (layer_modules if (one_pass or slow) else []) + attention
    needs_grad = any(cam_core.METHODS[m].gradients for m in one_pass) or "grad-rollout" in flows
    kinds = sorted({cam_core.METHODS[m].score for m in one_pass if cam_core.METHODS[m].gradients}
                   | ({"target"} if "grad-rollout" in flows else set()))

    with r.lock:
        t1 = cam_core.now_ms()
        with ExitStack() as stack:
            if flows:
                stack.enter_context(unfused(r.net))
            recording = stack.enter_context(record_attention(r.net)) if o.record else None
            stack.enter_context(autocast(r.device, o.amp))
            logits_all, tapped = cam_core.forward_with_taps(r.net, x_in, taps, needs_grad)
            maps_per_image = [recording.maps(ident * b + i) for i in range(b)] if recording is not None else \
                [[] for _ in range(b)]
        t2 = cam_core.now_ms()
        logits_np = logits_all.detach().float().cpu().numpy()
        own = logits_np[ident * b:(ident + 1) * b]
        names = o.names or tuple(f"class_{i}" for i in range(own.shape[-1]))
        if len(names) != own.shape[-1]:
            raise AttnvizError(f"{len(names)} class names given for a model with {own.shape[-1]} outputs.")
        target_idx = [resolve_target(t, names, own[i]) for i, t in enumerate(targets)]
        contrast_idx: list[int | None] = [None if c is None else resolve_target(c, names, own[i])
                                          for i, c in enumerate(contrasts)]
        for t, c in zip(target_idx, contrast_idx):
            if c is not None and c == t:
                raise TargetError(f"The contrast class {names[c]!r} is the target itself; choose another class.")
        copies = len(transforms)
        grads: dict[str, list[torch.Tensor | None]] = {}
        for j, kind in enumerate(kinds):
            score = _scores(kind, logits_all, target_idx * copies, contrast_idx * copies,
                            np.concatenate([own] * copies) if kind == "finer" else logits_np)
            wrt = [t for t in tapped if t.requires_grad]
            found = torch.autograd.grad(score, wrt, retain_graph=j < len(kinds) - 1, allow_unused=True)
            lookup = dict(zip(map(id, wrt), found))
            grads[kind] = [lookup.get(id(t)) for t in tapped]
        t3 = cam_core.now_ms()
        for m in slow:
            channels = int(cam_core.to_feature_map(tapped[0], layer_modules[0], r.net, (height, width)).shape[1])
            check_slow_budget(m, channels, (t2 - t1) / max(1, copies), r.name)
        slow_maps = {m: _slow_cams(m, r.net, layer_modules, x, target_idx, contrast_idx, (height, width),
                                   o.eigen_smooth, o.aug_smooth) for m in slow}
        t4 = cam_core.now_ms()

    # ---- everything below runs on CPU numpy, outside the lock -----------------------------------------------
    n_layers = len(layer_modules) if (one_pass or slow) else 0

    def as_maps(tensors: list[torch.Tensor | None]) -> list[np.ndarray]:
        # a layer the score does not depend on has no gradient: zeros, as a full backward would give
        return [cam_core.to_feature_map(tapped[i] * 0 if t is None else t, layer_modules[i], r.net, (height, width))
                .detach().float().cpu().numpy() for i, t in enumerate(tensors[:n_layers])]

    computed: dict[str, cam_core.CamArrays] = {}
    if one_pass:
        acts = as_maps(tapped)
        grads_np = {kind: as_maps(g) for kind, g in grads.items()}
        computed = cam_core.compute_cams(acts, grads_np, one_pass, (height, width), o.eigen_smooth)
        if o.aug_smooth:
            computed = {m: cam_core.CamArrays(_deaugment(c.heatmap, transforms, b), _deaugment(c.raw, transforms, b),
                                              c.layer_map[ident * b:(ident + 1) * b]) for m, c in computed.items()}
    if flows:
        attn = [t.detach()[ident * b:(ident + 1) * b] for t in tapped[n_layers:]]
        prefix, grid = cam_core.token_grid(r.net, int(attn[0].shape[-1]), (height, width))
        if "rollout" in flows:
            computed["rollout"] = _maps_from_layer(rollout(attn, prefix, grid).cpu().numpy(), (height, width))
        if "grad-rollout" in flows:
            attn_grads = [g[ident * b:(ident + 1) * b] for g in grads["target"][n_layers:]]
            relevance = grad_rollout(attn, attn_grads, prefix, grid).cpu().numpy()
            computed["grad-rollout"] = _maps_from_layer(relevance, (height, width))
    for m, heat in slow_maps.items():
        computed[m] = cam_core.CamArrays(heat, heat, heat)
    t5 = cam_core.now_ms()

    probs_all = torch.softmax(torch.from_numpy(own), dim=1).numpy()
    share = {"forward": (t2 - t1) / b, "backward": (t3 - t2) / b, "cams": (t5 - t4) / b,
             "preprocess": (t1 - t0) / b}
    if slow:
        share["slow_methods"] = (t4 - t3) / b
    options = {"layers": list(o.layer_names), "eigen_smooth": o.eigen_smooth, "aug_smooth": o.aug_smooth,
               "amp": bool(o.amp and r.device.type == "cuda"), "batch": b}
    warnings: list[str] = []
    if slow:
        warnings.append("Score-/Ablation-CAM maps come normalised by pytorch-grad-cam; they cannot share a colour "
                        "scale with the others.")
    if o.amp and r.device.type != "cuda":
        warnings.append(f"--amp runs only on CUDA; the maps were computed in float32 on {r.device}.")
    out = []
    for i in range(b):
        attention_maps: list[AttentionMap] = maps_per_image[i]
        cams = {m: CamMap(m, computed[m].heatmap[i], computed[m].raw[i], computed[m].layer_map[i])
                for m in o.methods}
        theta = next((a.data for a in attention_maps if a.layout == "affine"), None)
        if theta is not None:  # a spatial transformer: CAMs live on its warped view; show them on the input
            cams = {m: CamMap(m, _renormalise(cam_core.warp_to_input(c.heatmap, theta)),
                              cam_core.warp_to_input(c.raw, theta), c.layer_map) for m, c in cams.items()}
        probs = probs_all[i]
        order = np.argsort(-probs, kind="stable")[:max(1, o.topk)]
        t, c = target_idx[i], contrast_idx[i]
        out.append(Explanation(
            model=r.name, display_name=r.spec.display_name if r.spec else type(r.net).__name__,
            attention=r.spec.attention if r.spec else _guess_attention(attention_maps),
            image=views[i], predictions=[Prediction(int(k), names[int(k)], float(probs[k])) for k in order],
            target=Prediction(t, names[t], float(probs[t])), layer="+".join(o.layer_names), cams=cams,
            attention_maps=attention_maps, stage_summaries=stage_summaries(attention_maps),
            timings={**share, "total": (t5 - t0) / b}, logits=own[i].astype(np.float32), weights_sha256=r.digest,
            warnings=list(warnings), view_resize=r.spec.resize_size if (r.spec and views[i] is not None) else 0,
            contrast=None if c is None else Prediction(c, names[c], float(probs[c])), options=dict(options),
            device=str(r.device)))
    return out


def explain_batch(model: str | ModelSpec | LoadedModel | nn.Module, images, methods: Sequence[str] = DEFAULT_METHODS,
                  targets: Target | Sequence[Target] = None, layer: str | Sequence[str] | None = None, *,
                  batch_size: int = DEFAULT_BATCH_SIZE, device: str | torch.device | None = None, record: bool = True,
                  topk: int = 5, class_names: Sequence[str] | None = None,
                  contrast: Target | Sequence[Target] = None, eigen_smooth: bool = False, aug_smooth: bool = False,
                  amp: bool = False, progress: ProgressFn | None = None) -> list[Explanation]:
    """Predictions, CAMs and attention maps for many images through one model, ``batch_size`` per pass.

    ``images``: a preprocessed (N, 3, H, W) tensor, or (registry models) a sequence of images/paths decoded and
    preprocessed as the model expects. ``targets``: None (each image's top-1), one class index/name for all,
    or one per image; ``contrast`` likewise ("target versus contrast": score = logit target - logit contrast).
    ``layer``: a dotted module name or a list of them (fused, pytorch-grad-cam's multi-layer mean).
    ``eigen_smooth`` / ``aug_smooth``: pytorch-grad-cam's options (the augmented copies run as one batch).
    ``amp``: float16 autocast on CUDA. Results are CPU numpy whatever the device.
    """
    if batch_size < 1:
        raise AttnvizError("batch_size must be at least 1.")
    methods = check_methods(methods)
    r = _runner(model, device)
    x, views = _prepare_inputs(images, r.spec)
    n = x.shape[0]
    names = tuple(class_names) if class_names else (r.spec.class_names if r.spec else ())
    opts = _Options(methods, _layer_names(layer, r.spec, r.net), names, topk, record, eigen_smooth, aug_smooth, amp)
    target_list = _per_image(targets, n, "targets")
    contrast_list = _per_image(contrast, n, "contrast classes")
    copies = 6 if aug_smooth else 1
    chunk = max(1, batch_size // copies)
    out: list[Explanation] = []
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        out.extend(_explain_chunk(r, x[start:stop], views[start:stop], target_list[start:stop],
                                  contrast_list[start:stop], opts))
        if progress:
            progress(stop, n, r.name)
    return out


def explain(model: str | ModelSpec | LoadedModel | nn.Module, image, methods: Sequence[str] = DEFAULT_METHODS,
            target: Target = None, layer: str | Sequence[str] | None = None, *, topk: int = 5,
            record: bool = True, class_names: Sequence[str] | None = None, device: str | torch.device | None = None,
            contrast: Target = None, eigen_smooth: bool = False, aug_smooth: bool = False,
            amp: bool = False) -> Explanation:
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
                         aug_smooth=aug_smooth, amp=amp)[0]


def _renormalise(heat: np.ndarray) -> np.ndarray:
    top = float(heat.max())
    return (heat / top).astype(np.float32) if top > 0 else heat


def _guess_attention(maps: list[AttentionMap]) -> str:
    kinds = sorted({m.attention for m in maps})
    return "+".join(kinds) if kinds else "none"


def compare(names: Sequence[str | ModelSpec], image, methods: Sequence[str] = DEFAULT_METHODS,
            target: Target = None, layer: str | Sequence[str] | None = None, *, topk: int = 5,
            progress: ProgressFn | None = None, mask: np.ndarray | None = None,
            timeout_s: float | None = None, device: str | torch.device | None = None, contrast: Target = None,
            eigen_smooth: bool = False, aug_smooth: bool = False, amp: bool = False) -> Comparison:
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
    wanted_layers = None if layer is None else ([layer] if isinstance(layer, str) else list(layer))
    explanations = []
    for i, name in enumerate(names):
        label = name if isinstance(name, str) else name.name
        if deadline is not None and time.monotonic() > deadline:
            raise LimitExceededError(f"The comparison took longer than {timeout_s:.0f} s and was stopped after "
                                     f"{i} of {len(names)} models; choose fewer models or faster methods.")
        if progress:
            progress(i, len(names), label)
        spec = load(name, device).spec
        if wanted_layers:
            missing = [lay for lay in wanted_layers if lay not in spec.layers]
            if missing:
                raise TargetError(f"Layer {missing[0]!r} is not available for {spec.name}; it offers: "
                                  f"{', '.join(spec.layers)}.")
        explanations.append(explain(spec, decoded, methods, target, wanted_layers, topk=topk, device=device,
                                    contrast=contrast, eigen_smooth=eigen_smooth, aug_smooth=aug_smooth, amp=amp))
    if progress:
        progress(len(names), len(names), "done")
    comparison = Comparison(image=decoded, explanations=explanations, methods=methods, target_request=target,
                            timings={"total": cam_core.now_ms() - t0}, mask=mask)
    comparison.agreement = comparison_agreement(comparison)
    return comparison
