"""The batched core of ``explain_batch``: one model (a :class:`LoadedModel`), a chunk of images per pass.

Per chunk of ``batch_size`` images, ONE forward (autograd on only from the earliest tapped layer) and one backward
of the *sum* of every sample's score. In eval mode the samples of a batch do not interact, so that backward gives
every sample its own exact gradient at the CAM layer(s); every one-pass method of every image comes from it.
Attention maps are recorded by gate hooks during the same forward. The model's lock is held while hooks are
attached, so concurrent requests never mix. Resolving names to models is :mod:`attnviz.api`'s job; everything
returned is CPU numpy.

Longer than 450 lines: the plan (which methods a model computes, and which it cannot), the locked pass and the
assembly of one chunk share the ``_Plan`` / ``_Pass`` records, and this round added input-resolution maps and
per-model applicability to all three; the plan is the part to move into its own module next. Issue 28 added
LeGrad's per-block backward (``_legrad_gradients``) and the RefineCAM / SESS options (SESS's own work is
:mod:`attnviz.core.sess`; the engine only runs its patches).
"""
from __future__ import annotations

import dataclasses
import threading
import weakref
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from attnviz.core import cam as cam_core
from attnviz.core import input_maps
from attnviz.core import methods as catalogue
from attnviz.core import sess as sess_core
from attnviz.core.devices import autocast, resolve_device, to_host
from attnviz.core.layers import default_cam_layer
from attnviz.core.recording.recorder import record_attention, stage_summaries
from attnviz.core.slow import check_slow_budget, slow_cams
from attnviz.core.specs import LoadedModel, ModelSpec
from attnviz.core.targets import Target, resolve_target
from attnviz.core.transformers import (
    attention_blocks,
    block_logits,
    global_attention_modules,
    probabilities_module,
    rollout_obstacle,
    unfused,
)
from attnviz.data.images import decode_image
from attnviz.errors import AttnvizError, TargetError
from attnviz.results import AttentionMap, CamMap, Explanation, Prediction

DEFAULT_BATCH_SIZE = 32   # images per forward of explain_batch (the API's and eval's default)

ProgressFn = Callable[[int, int, str], None]

_module_locks: "weakref.WeakKeyDictionary[nn.Module, threading.Lock]" = weakref.WeakKeyDictionary()
_module_locks_guard = threading.Lock()


def _lock_for_module(model: nn.Module) -> threading.Lock:
    with _module_locks_guard:
        lock = _module_locks.get(model)
        if lock is None:
            lock = _module_locks[model] = threading.Lock()
        return lock


def _module_device(net: nn.Module) -> torch.device:
    tensor = next(iter(net.parameters()), None)
    if tensor is None:
        tensor = next(iter(net.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def wrap_module(net: nn.Module, device: str | torch.device | None) -> LoadedModel:
    """A plain ``nn.Module`` as a :class:`LoadedModel`: it stays where its parameters are unless ``device`` is
    given (then it is moved there, in place); one lock per module object."""
    if device is not None:
        target = resolve_device(device)
        if _module_device(net) != target:
            net.to(target)
    return LoadedModel(net, None, _lock_for_module(net), "", _module_device(net))


def _prepare_inputs(images, spec: ModelSpec | None) -> tuple[torch.Tensor, list[np.ndarray | None]]:
    """(N, 3, H, W) float tensor (where a tensor input already is, else on the CPU) plus each image's uint8 model
    view (None for tensor inputs)."""
    if isinstance(images, torch.Tensor):
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] < 1:
            raise AttnvizError(f"A tensor input must have shape (N, 3, H, W), got {tuple(images.shape)}.")
        return images.detach().float(), [None] * images.shape[0]   # each chunk moves to the model's device
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
    if kind in ("target", "shapley"):
        score = logits[rows, wanted]
        if any(c is not None for c in contrasts):
            other = torch.tensor([t if c is None else c for t, c in zip(targets, contrasts)], device=logits.device)
            keep = torch.tensor([c is not None for c in contrasts], device=logits.device)
            score = score - torch.where(keep, logits[rows, other], torch.zeros_like(score))
        return score.float().sum()
    comparisons = [[c] if c is not None else cam_core.finer_comparisons(logits_np[i], t)
                   for i, (t, c) in enumerate(zip(targets, contrasts))]
    return _finer_scores(logits.float(), wanted, comparisons).sum()


def _finer_scores(logits: torch.Tensor, targets: torch.Tensor, comparisons: list[list[int]]) -> torch.Tensor:
    """pytorch-grad-cam's ``FinerWeightedTarget`` for every row at once: the softmax-weighted mean over the
    comparison classes c of (logit[target] - alpha * logit[c]); rows with fewer comparisons are padded with
    weight 0."""
    rows = torch.arange(logits.shape[0], device=logits.device)
    width = max(1, max(len(c) for c in comparisons))
    index = torch.tensor([c + [0] * (width - len(c)) for c in comparisons], device=logits.device)
    present = torch.tensor([[k < len(c) for k in range(width)] for c in comparisons], device=logits.device)
    prob = torch.softmax(logits, dim=-1)
    weights = torch.where(present, prob.gather(1, index), torch.zeros((), device=logits.device))
    main = logits[rows, targets][:, None]
    numerator = (weights * (main - cam_core.FINER_ALPHA * logits.gather(1, index))).sum(dim=1)
    return numerator / (weights.sum(dim=1) + 1e-9)


def _deaugment(maps: torch.Tensor, transforms: list, batch: int) -> torch.Tensor:
    """(T*b, H, W) maps of T augmented copies -> their mean in the original frame (pytorch-grad-cam's order), on
    the maps' device."""
    groups = maps.reshape(len(transforms), batch, *maps.shape[1:])
    return torch.stack([t.deaugment_mask(g[:, None])[:, 0] for t, g in zip(transforms, groups)]).mean(dim=0)


def _maps_from_layer(layer_maps: torch.Tensor, input_hw: tuple[int, int]) -> cam_core.CamArrays:
    """(b, h, w) maps (rollout) normalised and upsampled exactly like a one-layer CAM, on their device."""
    positive = layer_maps.detach().float().clamp_min(0)
    heat, raw = cam_core.maps_from_layers([positive], input_hw)
    return cam_core.CamArrays(heat, raw, positive)


def unavailable_methods(model: nn.Module, methods: Sequence[str]) -> dict[str, str]:
    """The methods of ``methods`` this network cannot compute, each with why (rollout needs a ViT's global
    attention). One rule for the engine's plan, ``compare``'s refusal and the CLI's check before any image."""
    flows = [m for m in methods if catalogue.get(m).kind == catalogue.ROLLOUT]
    obstacle = rollout_obstacle(model) if flows else ""
    if not obstacle:
        return {}
    return {m: f"{catalogue.title(m)} needs a ViT/DeiT's global self-attention; this model has {obstacle}"
            for m in flows}


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
    skip_unavailable: bool = False
    refine: bool = False      # RefineCAM: the CAM layers' maps multiplied, not averaged
    sess: int = 0             # SESS: scales (0: off)
    batch_size: int = DEFAULT_BATCH_SIZE


@dataclass
class _Plan:
    """What one chunk computes: the methods by kind, the modules to tap, the scores to differentiate."""

    one_pass: list[str]
    flows: list[str]
    slow: list[str]
    layer_modules: list[nn.Module]
    taps: list[nn.Module]
    needs_grad: bool
    kinds: list[str]
    inputs: list[str] = field(default_factory=list)          # input-resolution methods (input_maps)
    input_needs: frozenset[str] = frozenset()                # what they need (input_maps.INPUT_GRAD, ...)
    bias_modules: list[nn.Module] = field(default_factory=list)   # FullGrad's layers, tapped last
    n_cam: int = 0                                           # taps[:n_cam]: the CAM layers
    n_attention: int = 0                                     # then the attention weights
    n_blocks: int = 0                                        # then their blocks' outputs (LeGrad's scores)
    unavailable: dict[str, str] = field(default_factory=dict)   # method -> why this model cannot compute it

    @property
    def from_input(self) -> bool:
        """Whether the forward keeps autograd on from the input (a method needs dS/dx)."""
        return bool(self.input_needs & {input_maps.INPUT_GRAD, input_maps.GUIDED})


def _plan(r: LoadedModel, o: _Options) -> _Plan:
    """The methods this model computes, by kind; one it cannot compute is an error, or (``skip_unavailable``:
    another model of the comparison computes it) left out with its reason."""
    unavailable = unavailable_methods(r.model, o.methods)
    if unavailable and not o.skip_unavailable:
        method, why = next(iter(unavailable.items()))
        raise TargetError(f"{_described(r)}: {why}. Use a CAM method instead.")
    kind_of = {m: catalogue.get(m) for m in o.methods}
    wanted = [m for m in o.methods if m not in unavailable]
    inputs = [m for m in wanted if kind_of[m].kind == catalogue.INPUT]
    input_needs = frozenset().union(*(input_maps.needs(kind_of[m].resolve()) for m in inputs))
    one_pass = [m for m in wanted if kind_of[m].kind == catalogue.ONE_PASS]
    if input_maps.GRADCAM in input_needs and "gradcam" not in one_pass:
        one_pass.append("gradcam")  # Guided Grad-CAM's factor; computed, not returned
    flows = [m for m in wanted if kind_of[m].kind == catalogue.ROLLOUT]
    slow = [m for m in wanted if kind_of[m].kind == catalogue.SLOW]
    layer_modules = [cam_core.resolve_layer(r.model, n) for n in o.layer_names]
    attention_modules = [m for _, m in global_attention_modules(r.model)] if flows else []
    attention = [probabilities_module(m) for m in attention_modules]
    blocks = attention_blocks(r.model, attention_modules) if any(kind_of[m].score == "legrad" for m in flows) else []
    cam_layers = layer_modules if (one_pass or slow) else []
    bias = input_maps.bias_layers(r.model) if input_maps.INPUT_GRAD in input_needs else []
    taps = cam_layers + attention + blocks + bias
    graded = [catalogue.get(m) for m in one_pass + flows if catalogue.get(m).gradients]
    kinds = sorted({m.score for m in graded}, key=lambda k: (k != "shapley", k))  # ShapleyCAM's backward first
    needs_grad = bool(graded) or bool(input_needs - {input_maps.GRADCAM})
    return _Plan(one_pass, flows, slow, layer_modules, taps, needs_grad, kinds, inputs, input_needs, bias,
                 len(cam_layers), len(attention), len(blocks), unavailable)


@dataclass
class _Pass:
    """What the locked forward/backward of a chunk leaves: logits, tapped outputs, their gradients per score."""

    own: np.ndarray
    probs: np.ndarray
    tapped: list[torch.Tensor]
    grads: dict[str, list[torch.Tensor | None]]
    maps_per_image: list[list[AttentionMap]]
    target_idx: list[int]
    contrast_idx: list[int | None]
    names: tuple[str, ...]
    slow_maps: dict[str, np.ndarray] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)
    x_in: torch.Tensor | None = None                  # the (augmented) chunk the forward saw, for input maps
    input_grads: dict[str, list[torch.Tensor | None]] = field(default_factory=dict)


def _targets(own: np.ndarray, names: tuple[str, ...], targets: list[Target],
             contrasts: list[Target], model: str = "") -> tuple[list[int], list[int | None]]:
    target_idx = [resolve_target(t, names, own[i], model) for i, t in enumerate(targets)]
    contrast_idx: list[int | None] = [None if c is None else resolve_target(c, names, own[i], model)
                                      for i, c in enumerate(contrasts)]
    for t, c in zip(target_idx, contrast_idx):
        if c is not None and c == t:
            raise TargetError(f"The contrast class {names[c]!r} is the target itself; choose another class.")
    return target_idx, contrast_idx


def _forward_and_gradients(r: LoadedModel, x: torch.Tensor, plan: _Plan, o: _Options, transforms: list, ident: int,
                           targets: list[Target], contrasts: list[Target]) -> _Pass:
    """The locked part: ONE forward with taps (and attention recording), one backward per distinct score, and the
    slow methods' own passes."""
    b = x.shape[0]
    height, width = int(x.shape[-2]), int(x.shape[-1])
    x_in = torch.cat([t.augment_image(x) for t in transforms]) if o.aug_smooth else x
    if plan.from_input:
        x_in = x_in.detach().requires_grad_(True)
    with r.lock:
        t1 = cam_core.now_ms()
        with ExitStack() as stack:
            if plan.flows:
                stack.enter_context(unfused(r.model))
            switch = stack.enter_context(input_maps.guided_relus(r.model)) \
                if input_maps.GUIDED in plan.input_needs else None
            recording = stack.enter_context(record_attention(r.model)) if o.record else None
            stack.enter_context(autocast(r.device, o.amp))
            logits_all, tapped = cam_core.forward_with_taps(r.model, x_in, plan.taps, plan.needs_grad,
                                                            from_input=plan.from_input)
            maps_per_image = [recording.maps(ident * b + i) for i in range(b)] if recording is not None else \
                [[] for _ in range(b)]
        t2 = cam_core.now_ms()
        scores = logits_all.detach().float()  # logits and probabilities leave the device in one copy
        logits_np, probs_np = to_host([scores, torch.softmax(scores[ident * b:(ident + 1) * b], dim=1)])
        own = logits_np[ident * b:(ident + 1) * b]
        names = o.names or tuple(f"class_{i}" for i in range(own.shape[-1]))
        if len(names) != own.shape[-1]:
            raise AttnvizError(f"{len(names)} class names given for a model with {own.shape[-1]} outputs.")
        target_idx, contrast_idx = _targets(own, names, targets, contrasts, _described(r))
        copies = len(transforms)
        grads: dict[str, list[torch.Tensor | None]] = {}
        graded = tapped[:plan.n_cam + plan.n_attention]
        for j, kind in enumerate(plan.kinds):
            if kind == "target" and "shapley" in grads:
                continue  # ShapleyCAM's backward left the first-order gradients of the same score
            more = j < len(plan.kinds) - 1 or plan.from_input
            if kind == "legrad":
                grads[kind] = [None] * plan.n_cam + _legrad_gradients(
                    r.model, tapped[plan.n_cam:plan.n_cam + plan.n_attention + plan.n_blocks], plan.n_attention,
                    lambda lg: _scores("target", lg, target_idx * copies, contrast_idx * copies, logits_np), more)
                continue
            score = _scores(kind, logits_all, target_idx * copies, contrast_idx * copies,
                            np.concatenate([own] * copies) if kind == "finer" else logits_np)
            wrt = [t for t in graded if t.requires_grad]
            found = torch.autograd.grad(score, wrt, retain_graph=more or kind == "shapley",
                                        create_graph=kind == "shapley", allow_unused=True)
            lookup = dict(zip(map(id, wrt), found))
            grads[kind] = [lookup.get(id(t)) for t in graded]
            if kind == "shapley":
                grads["target"] = [None if g is None else g.detach() for g in grads["shapley"]]
                grads["shapley"] = _shapley_gradients(grads["shapley"], graded, plan.n_cam, more)
        input_grads = _input_gradients(plan, logits_all, x_in, tapped, switch, target_idx * copies,
                                       contrast_idx * copies, logits_np) if plan.from_input else {}
        tapped = [t.detach() for t in tapped]  # the graph is no longer needed
        t3 = cam_core.now_ms()
        for m in plan.slow:
            channels = int(cam_core.to_feature_map(tapped[0], plan.layer_modules[0], r.model,
                                                   (height, width)).shape[1])
            check_slow_budget(m, channels, (t2 - t1) / max(1, copies), r.name)
        slow_maps = {m: slow_cams(m, r.model, plan.layer_modules, x, target_idx, contrast_idx, (height, width),
                                  o.eigen_smooth, o.aug_smooth) for m in plan.slow}
        t4 = cam_core.now_ms()
    return _Pass(own, probs_np, tapped, grads, maps_per_image, target_idx, contrast_idx, names, slow_maps,
                 {"t1": t1, "t2": t2, "t3": t3, "t4": t4}, x_in.detach(), input_grads)


def _shapley_gradients(first: list[torch.Tensor | None], acts: list[torch.Tensor], n_cam: int,
                       retain: bool) -> list[torch.Tensor | None]:
    """ShapleyCAM's "gradient" at each CAM layer: dS/dA - 1/2 H A, the Hessian-vector product H A from a second
    backward through the first one's graph (pytorch-grad-cam: ``autograd.grad(grads, activations,
    grad_outputs=activations)``; none where dS/dA does not depend on A, e.g. a linear head after the layer)."""
    out: list[torch.Tensor | None] = []
    for i, (g, a) in enumerate(zip(first, acts)):
        if g is None or i >= n_cam or not g.requires_grad:
            out.append(None if g is None else g.detach())
            continue
        (hvp,) = torch.autograd.grad(g, a, grad_outputs=a.detach(), retain_graph=retain or i < n_cam - 1,
                                     allow_unused=True)
        out.append(g.detach() if hvp is None else g.detach() - 0.5 * hvp)
    return out


def _legrad_gradients(model: nn.Module, tapped: list[torch.Tensor], n: int,
                      score: Callable[[torch.Tensor], torch.Tensor], retain: bool) -> list[torch.Tensor]:
    """LeGrad's gradients: for each block, d(its own score)/d(its attention weights), ``tapped`` being the n
    attention weights then the n block outputs. Each backward spans one block and the head only."""
    out = []
    for i, (attn, tokens) in enumerate(zip(tapped[:n], tapped[n:])):
        (g,) = torch.autograd.grad(score(block_logits(model, tokens)), [attn], retain_graph=retain or i < n - 1)
        out.append(g)
    return out


def _input_gradients(plan: _Plan, logits: torch.Tensor, x_in: torch.Tensor, tapped: list[torch.Tensor],
                     switch: input_maps.GuidedSwitch | None, targets: list[int], contrasts: list[int | None],
                     logits_np: np.ndarray) -> dict[str, list[torch.Tensor | None]]:
    """dS/dx (with dS/d(output) at FullGrad's bias layers) by a plain backward, and the guided dS/dx with the
    ReLU gates open; S the target score, as for the CAMs."""
    score = _scores("target", logits, targets, contrasts, logits_np)
    guided = switch is not None
    out: dict[str, list[torch.Tensor | None]] = {}
    if input_maps.INPUT_GRAD in plan.input_needs:
        bias_outputs = tapped[plan.n_cam + plan.n_attention + plan.n_blocks:]
        wrt = [x_in] + [t for t in bias_outputs if t.requires_grad]
        found = torch.autograd.grad(score, wrt, retain_graph=guided, allow_unused=True)
        lookup = dict(zip(map(id, wrt), found))
        out[input_maps.INPUT_GRAD] = [found[0]] + [lookup.get(id(t)) for t in bias_outputs]
    if guided:
        switch.guided = True
        try:
            out[input_maps.GUIDED] = list(torch.autograd.grad(score, [x_in], allow_unused=True))
        finally:
            switch.guided = False
    return out


def _cam_arrays(r: LoadedModel, plan: _Plan, p: _Pass, o: _Options, transforms: list, ident: int, b: int,
                input_hw: tuple[int, int]) -> dict[str, cam_core.CamArrays]:
    """Every requested method's maps for the chunk, from the tapped outputs and gradients (outside the lock), as
    tensors on the model's device."""
    n_layers = plan.n_cam

    def as_maps(tensors: list[torch.Tensor | None]) -> list[torch.Tensor]:
        # a layer the score does not depend on has no gradient: zeros, as a full backward would give
        return [cam_core.to_feature_map(torch.zeros_like(p.tapped[i]) if t is None else t, plan.layer_modules[i],
                                        r.model, input_hw).detach().float() for i, t in enumerate(tensors[:n_layers])]

    computed: dict[str, cam_core.CamArrays] = {}
    if plan.one_pass:
        grads = {kind: as_maps(g) for kind, g in p.grads.items() if kind != "legrad"}
        computed = cam_core.compute_cams(as_maps(p.tapped), grads, plan.one_pass, input_hw, o.eigen_smooth,
                                         o.refine)
        if o.aug_smooth:
            computed = {m: cam_core.CamArrays(_deaugment(c.heatmap, transforms, b), _deaugment(c.raw, transforms, b),
                                              c.layer_map[ident * b:(ident + 1) * b]) for m, c in computed.items()}
    if plan.flows:
        attn = [t.detach()[ident * b:(ident + 1) * b] for t in p.tapped[n_layers:n_layers + plan.n_attention]]
        prefix, grid = cam_core.token_grid(r.model, int(attn[0].shape[-1]), input_hw)
        for m in plan.flows:
            score = catalogue.get(m).score
            attn_grads = [g[ident * b:(ident + 1) * b] for g in p.grads[score][n_layers:n_layers + plan.n_attention]] \
                if catalogue.get(m).gradients else None
            computed[m] = _maps_from_layer(catalogue.get(m).resolve()(attn, attn_grads, prefix, grid), input_hw)
    return computed


def _input_arrays(plan: _Plan, p: _Pass, o: _Options, computed: dict[str, cam_core.CamArrays], transforms: list,
                  ident: int, b: int, input_hw: tuple[int, int], views: list[np.ndarray | None]
                  ) -> dict[str, cam_core.CamArrays]:
    """The input-resolution methods' maps (:mod:`attnviz.core.input_maps`). With ``aug_smooth`` FullGrad runs on
    every augmented copy and is averaged back, as the library's FullGrad; Guided Backprop and SobelCAM (which
    the library cannot augment) use the unaugmented image, Guided Grad-CAM's Grad-CAM factor is the smoothed one."""
    rows = slice(ident * b, (ident + 1) * b)
    plain = p.input_grads.get(input_maps.INPUT_GRAD)
    guided = p.input_grads.get(input_maps.GUIDED)
    everything = input_maps.InputContext(
        x=p.x_in, views=list(views) * len(transforms), input_hw=input_hw, x_grad=plain[0] if plain else None,
        x_grad_guided=guided[0] if guided else None, bias_layers=plan.bias_modules,
        bias_grads=plain[1:] if plain else ())
    own = input_maps.InputContext(
        x=p.x_in[rows], views=views, input_hw=input_hw, x_grad=None if plain is None else plain[0][rows],
        x_grad_guided=None if guided is None else guided[0][rows], bias_layers=plan.bias_modules,
        bias_grads=[None if g is None else g[rows] for g in plain[1:]] if plain else (),
        gradcam=computed["gradcam"].heatmap if "gradcam" in computed else None)
    out: dict[str, cam_core.CamArrays] = {}
    for m in plan.inputs:
        method = catalogue.get(m).resolve()
        if o.aug_smooth and input_maps.INPUT_GRAD in input_maps.needs(method):
            c = _input_resolution(method(everything))
            out[m] = cam_core.CamArrays(_deaugment(c.heatmap, transforms, b), _deaugment(c.raw, transforms, b),
                                        c.layer_map[rows])
        else:
            out[m] = _input_resolution(method(own))
    return out


def _input_resolution(maps: torch.Tensor) -> cam_core.CamArrays:
    """(b, H, W) maps already at input size, min-max scaled once as the library does (a CAM layer's map is scaled
    before and after resizing; for small-valued input gradients the second scaling's 1e-7 would show)."""
    positive = maps.detach().float().clamp_min(0)
    return cam_core.CamArrays(cam_core.scale_maps(positive), positive, positive)


def _to_host(computed: dict[str, cam_core.CamArrays], slow_maps: dict[str, np.ndarray]
             ) -> dict[str, cam_core.CamArrays]:
    """The chunk's maps as numpy: ONE device->host copy for all of them (:func:`to_host`); the slow methods' maps
    come from pytorch-grad-cam as numpy already."""
    tensors = [t for c in computed.values() for t in (c.heatmap, c.raw, c.layer_map)]
    arrays = iter(to_host(tensors))
    out = {m: cam_core.CamArrays(next(arrays), next(arrays), next(arrays)) for m in computed}
    for m, heat in slow_maps.items():
        out[m] = cam_core.CamArrays(heat, heat, heat)
    return out


def _explanations(r: LoadedModel, p: _Pass, computed: dict[str, cam_core.CamArrays], o: _Options,
                  views: list[np.ndarray | None], share: dict[str, float], plan: _Plan) -> list[Explanation]:
    """One :class:`Explanation` per image of the chunk."""
    names = p.names
    options = {"layers": list(o.layer_names), "eigen_smooth": o.eigen_smooth, "aug_smooth": o.aug_smooth,
               "refine": o.refine, "sess": o.sess, "amp": bool(o.amp and r.device.type == "cuda"),
               "batch": len(views)}
    warnings: list[str] = []
    if plan.slow:
        warnings.append("Score-/Ablation-CAM maps come normalised by pytorch-grad-cam; they cannot share a colour "
                        "scale with the others.")
    unsmoothed = [catalogue.title(m) for m in o.methods if catalogue.get(m).kind == catalogue.INPUT]
    if o.eigen_smooth and unsmoothed:
        warnings.append(f"eigen smooth applies to the CAM-layer methods; {', '.join(unsmoothed)} are computed "
                        "without it.")
    elsewhere = [catalogue.title(m) for m in o.methods
                 if catalogue.get(m).kind != catalogue.ONE_PASS and m not in plan.unavailable]
    for name, on in (("RefineCAM", o.refine), ("SESS", o.sess)):
        if on and elsewhere:
            warnings.append(f"{name} applies to the one-pass CAM-layer methods; {', '.join(elsewhere)} "
                            f"{'is' if len(elsewhere) == 1 else 'are'} computed without it.")
    if o.amp and r.device.type != "cuda":
        warnings.append(f"--amp runs only on CUDA; the maps were computed in float32 on {r.device}.")
    out = []
    for i in range(len(views)):
        attention_maps: list[AttentionMap] = p.maps_per_image[i]
        cams = {m: CamMap(m, computed[m].heatmap[i], computed[m].raw[i], computed[m].layer_map[i])
                for m in o.methods if m in computed}
        theta = next((a.data for a in attention_maps if a.layout == "affine"), None)
        if theta is not None:  # a spatial transformer: CAMs live on its warped view; show them on the input
            cams = {m: c if catalogue.get(m).kind == catalogue.INPUT else  # input maps are on the input already
                    CamMap(m, _renormalise(cam_core.warp_to_input(c.heatmap, theta)),
                           cam_core.warp_to_input(c.raw, theta), c.layer_map) for m, c in cams.items()}
        probs = p.probs[i]
        order = np.argsort(-probs, kind="stable")[:max(1, o.topk)]
        t, c = p.target_idx[i], p.contrast_idx[i]
        out.append(Explanation(
            model=r.name, display_name=r.spec.display_name if r.spec else type(r.model).__name__,
            attention=r.spec.attention if r.spec else _guess_attention(attention_maps),
            image=views[i], predictions=[Prediction(int(k), names[int(k)], float(probs[k])) for k in order],
            target=Prediction(t, names[t], float(probs[t])), layer="+".join(o.layer_names), cams=cams,
            attention_maps=attention_maps, stage_summaries=stage_summaries(attention_maps),
            timings=dict(share), logits=p.own[i].astype(np.float32), weights_sha256=r.weights_sha256,
            warnings=list(warnings), view_resize=r.spec.resize_size if (r.spec and views[i] is not None) else 0,
            contrast=None if c is None else Prediction(c, names[c], float(probs[c])), options=dict(options),
            device=str(r.device), unavailable=dict(plan.unavailable)))
    return out


def _explain_chunk(r: LoadedModel, x_chunk: torch.Tensor, views: list[np.ndarray | None], targets: list[Target],
                   contrasts: list[Target], o: _Options) -> list[Explanation]:
    """ONE forward + one backward per distinct score for a chunk of images -> one Explanation per image."""
    t0 = cam_core.now_ms()
    b = x_chunk.shape[0]
    input_hw = (int(x_chunk.shape[-2]), int(x_chunk.shape[-1]))
    plan = _plan(r, o)
    transforms, ident = _augmentations(o.aug_smooth)
    p = _forward_and_gradients(r, x_chunk.to(r.device), plan, o, transforms, ident, targets, contrasts)
    computed = _cam_arrays(r, plan, p, o, transforms, ident, b, input_hw)
    if plan.inputs:
        computed.update(_input_arrays(plan, p, o, computed, transforms, ident, b, input_hw, views))
    computed = _to_host({m: c for m, c in computed.items() if m in o.methods}, p.slow_maps)
    t1, t2, t3, t4, t5 = p.times["t1"], p.times["t2"], p.times["t3"], p.times["t4"], cam_core.now_ms()
    share = {"forward": (t2 - t1) / b, "backward": (t3 - t2) / b, "cams": (t5 - t4) / b,
             "preprocess": (t1 - t0) / b, "total": (t5 - t0) / b}
    if plan.slow:
        share["slow_methods"] = (t4 - t3) / b
    return _explanations(r, p, computed, o, views, share, plan)


def explain_loaded(r: LoadedModel, images, methods: Sequence[str], targets: Target | Sequence[Target] = None,
                   layer: str | Sequence[str] | None = None, *, batch_size: int = DEFAULT_BATCH_SIZE,
                   record: bool = True, topk: int = 5, class_names: Sequence[str] | None = None,
                   contrast: Target | Sequence[Target] = None, eigen_smooth: bool = False, aug_smooth: bool = False,
                   amp: bool = False, progress: ProgressFn | None = None,
                   skip_unavailable: bool = False, refine: bool = False, sess: int | bool = 0) -> list[Explanation]:
    """:func:`attnviz.api.explain_batch` on a model already resolved to a :class:`LoadedModel`."""
    if batch_size < 1:
        raise AttnvizError("batch_size must be at least 1.")
    methods = catalogue.check_methods(methods)
    x, views = _prepare_inputs(images, r.spec)
    n = x.shape[0]
    names = tuple(class_names) if class_names else (r.spec.class_names if r.spec else ())
    opts = _Options(methods, _layer_names(layer, r.spec, r.model), names, topk, record, eigen_smooth, aug_smooth,
                    amp, skip_unavailable, refine, sess_core.check_scales(sess), batch_size)
    _check_meta_options(opts)
    target_list = _per_image(targets, n, "targets")
    contrast_list = _per_image(contrast, n, "contrast classes")
    copies = 6 if aug_smooth else 1
    chunk = max(1, batch_size // copies)
    out: list[Explanation] = []
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        explained = _explain_chunk(r, x[start:stop], views[start:stop], target_list[start:stop],
                                   contrast_list[start:stop], opts)
        if opts.sess:
            _with_sess(r, x[start:stop], explained, opts)
        out.extend(explained)
        if progress:
            progress(stop, n, r.name)
    return out


def _check_meta_options(o: _Options) -> None:
    """RefineCAM multiplies the maps of several layers; SESS's patches run without test-time augmentation (as
    pytorch-grad-cam's SESS, which takes no aug_smooth)."""
    if o.refine and len(o.layer_names) < 2:
        raise AttnvizError("RefineCAM multiplies the maps of several CAM layers; choose at least two layers "
                           "(e.g. layer3 and layer4).")
    if o.sess and o.aug_smooth:
        raise AttnvizError("SESS and augmentation smooth cannot be combined; choose one of them.")


def _with_sess(r: LoadedModel, x: torch.Tensor, explanations: list[Explanation], o: _Options) -> None:
    """The one-pass methods' maps of a chunk replaced by SESS's (:mod:`attnviz.core.sess`): every image's patches
    run through this engine, ``batch_size`` patches per pass, for the image's target and contrast."""
    methods = tuple(m for m in o.methods if catalogue.get(m).kind == catalogue.ONE_PASS)
    if not methods:
        return
    base = dataclasses.replace(o, methods=methods, record=False, sess=0)
    t0 = cam_core.now_ms()

    def run(stack: torch.Tensor, target: int, contrast: int | None) -> list[Explanation]:
        out: list[Explanation] = []
        for start in range(0, len(stack), o.batch_size):
            n = len(stack[start:start + o.batch_size])
            out.extend(_explain_chunk(r, stack[start:start + n], [None] * n, [target] * n, [contrast] * n, base))
        return out

    sess_core.apply(explanations, x, o.sess, methods, run)
    for e in explanations:
        e.timings["sess"] = (cam_core.now_ms() - t0) / len(explanations)


def _described(r: LoadedModel) -> str:
    """How a message names a model: "SE-ResNet (se)", or the module's class name."""
    if r.spec is None:
        return type(r.model).__name__
    return r.spec.name if r.spec.display_name == r.spec.name else f"{r.spec.display_name} ({r.spec.name})"


def _renormalise(heat: np.ndarray) -> np.ndarray:
    top = float(heat.max())
    return (heat / top).astype(np.float32) if top > 0 else heat


def _guess_attention(maps: list[AttentionMap]) -> str:
    kinds = sorted({m.attention for m in maps})
    return "+".join(kinds) if kinds else "none"
