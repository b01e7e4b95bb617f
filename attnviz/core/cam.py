"""One-pass Grad-CAM family: the layer taps that feed the formulas, and the maps made from them on the device.

Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM, HiResCAM, Grad-CAM element-wise, EigenGrad-CAM and Finer-CAM need
only the CAM layer's activations A and the gradient dS/dA of a score S; Eigen-CAM and KPCA-CAM need only A.
pytorch-grad-cam recomputes both, with a full backward through every parameter, once per method. Here the
network runs *once*, without autograd up to the earliest tapped layer; autograd switches on there (a forward
hook swaps in a leaf tensor) so the backward only spans the layers after it, and one backward per distinct
score serves every method of a whole batch. The formulas (:mod:`attnviz.core.cam_formulas`), the min-max scaling
and the resizing to the input run in torch on the model's device for the whole batch, step for step as
pytorch-grad-cam does them in numpy/OpenCV, so the maps equal the library's.

Resizing: ``cv2.resize(..., INTER_LINEAR)`` (the library's) upsamples with half-pixel centres and clamped edges,
which is ``F.interpolate(mode="bilinear", align_corners=False, antialias=False)``: equal to 1 float32 ulp
(1.2e-7) for every upsampling tried (7->224, 8->128, 5x7->160x224, 56->224). (Downsampling, a CAM layer larger
than the input, differs by up to ~2e-5; no CAM layer is.)

Adding a method: one entry in :data:`attnviz.core.methods.CATALOGUE` naming the pytorch-grad-cam class whose
maps it reproduces (its torch formula is looked up in :data:`attnviz.core.cam_formulas.BY_LIBRARY_CLASS`; a class
without one runs its own numpy formula on the host) or a torch function.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attnviz.core import cam_formulas
from attnviz.core import methods as catalogue
from attnviz.errors import TargetError

FINER_ALPHA = 1.0           # pytorch-grad-cam's FinerCAM default
FINER_COMPARISONS = 3       # and its default number of most-similar classes


def cam_formula(method: str) -> cam_formulas.Formula:
    """A one-pass method's torch formula ``(activations, gradients, eigen_smooth) -> (B, h, w)``: the one
    :data:`~attnviz.core.cam_formulas.BY_LIBRARY_CLASS` gives for the pytorch-grad-cam class the catalogue entry
    names, the library class's own numpy formula (on the host) when there is none, or the entry's function."""
    spec = catalogue.get(method)
    if isinstance(spec.compute, str) and spec.compute.startswith("pytorch_grad_cam:"):
        formula = cam_formulas.BY_LIBRARY_CLASS.get(spec.compute.partition(":")[2])
        if formula is not None:
            return formula
    compute = spec.resolve()
    return cam_formulas.library_formula(compute) if isinstance(compute, type) else compute


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> nn.Module:
    """A dotted module name (``"layer4"``, ``"blocks.11.norm1"``) or a module -> the module, with a clear error."""
    if isinstance(layer, nn.Module):
        return layer
    try:
        return model.get_submodule(layer)
    except AttributeError:
        top = [name for name, _ in model.named_children()]
        raise TargetError(f"layer {layer!r} is not in this model; top-level modules: {', '.join(top)}") from None


# ---- taps: autograd from the earliest tapped module on --------------------------------------------------

class LayerTaps:
    """Forward hooks that keep the outputs of several modules and switch autograd on at the first of them.

    The first tapped output computed without autograd becomes a leaf that requires grad, and autograd stays on
    for the rest of the forward, so later tapped outputs are in the graph: one backward reaches every tapped
    output but never the layers before the earliest one. A module used twice is tapped at its first use.
    """

    def __init__(self, modules: Sequence[nn.Module], needs_grad: bool) -> None:
        self.modules = list(modules)
        self.needs_grad = needs_grad
        self.outputs: list[torch.Tensor | None] = [None] * len(self.modules)
        self._handles: list = []

    def _hook(self, index: int):
        def hook(module: nn.Module, inputs: tuple, output) -> torch.Tensor | None:
            if self.outputs[index] is not None:
                return None
            if not isinstance(output, torch.Tensor) or output.dim() not in (3, 4):
                raise TargetError(f"the CAM layer must output a (N, C, H, W), (N, H, W, C) or (N, tokens, C) "
                                  f"tensor, got {type(output).__name__}{tuple(getattr(output, 'shape', ()))}")
            if not self.needs_grad:
                self.outputs[index] = output.detach()
                return None
            if output.requires_grad:
                kept = output
            else:
                torch.set_grad_enabled(True)  # thread-local; the caller's no_grad() context restores it
                kept = output.detach().requires_grad_(True)
            self.outputs[index] = kept
            return kept.clone()  # downstream in-place ops must not touch the kept tensor
        return hook

    def __enter__(self) -> "LayerTaps":
        for i, module in enumerate(self.modules):
            self._handles.append(module.register_forward_hook(self._hook(i)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def forward_with_taps(model: nn.Module, x: torch.Tensor, modules: Sequence[nn.Module],
                      needs_grad: bool = True, from_input: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """``model(x)`` with autograd off before the earliest tapped module (``from_input``: on all the way, for the
    methods that need dS/dx; ``x`` must then require grad). Returns (logits, tapped outputs)."""
    with (torch.enable_grad() if from_input else torch.no_grad()), LayerTaps(modules, needs_grad) as taps:
        logits = model(x)
    missing = [i for i, out in enumerate(taps.outputs) if out is None]
    if missing:
        raise TargetError("the CAM layer was not used in the forward pass")
    if isinstance(logits, (tuple, list)):  # e.g. DeiT-distilled in training mode; eval models return a tensor
        logits = logits[0]
    return logits, list(taps.outputs)  # type: ignore[arg-type]


# ---- token and channels-last layouts -> (B, C, h, w) ----------------------------------------------------

def _is_channels_last(module: nn.Module, model: nn.Module, t: torch.Tensor) -> bool:
    """A 4-D output is NHWC when the model carries NHWC stages (timm's and torchvision's Swin: see
    :mod:`attnviz.core.layers`) and the tapped module is not a convolution, or when a plain LayerNorm over its last
    axis made it (ConvNeXt-style blocks in any model)."""
    from attnviz.core.layers import _nhwc_model

    if _nhwc_model(model) and not isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
        return True
    plain_layernorm = isinstance(module, nn.LayerNorm) and type(module).forward is nn.LayerNorm.forward
    return plain_layernorm and tuple(module.normalized_shape) == (t.shape[-1],)


def token_grid(model: nn.Module, tokens: int, input_hw: tuple[int, int]) -> tuple[int, tuple[int, int]]:
    """(prefix tokens, (h, w)) for ``tokens`` transformer tokens: the model's patch embedding and prefix count
    where it has them (:func:`attnviz.core.layers.token_layout`), else the smallest prefix whose remainder tiles the
    input's aspect ratio."""
    from attnviz.core.layers import token_layout

    layout = token_layout(model, tokens, input_hw)
    if layout is not None:
        return layout
    aspect = input_hw[0] / input_hw[1]
    for p in range(0, min(tokens, 17)):
        rest = tokens - p
        h = max(1, round(math.sqrt(rest * aspect)))
        if rest % h == 0 and abs(h / (rest // h) - aspect) < 0.15:
            return p, (h, rest // h)
    raise TargetError(f"cannot fold {tokens} tokens into a grid for a {input_hw[1]}x{input_hw[0]} input; pass a "
                      f"convolutional layer or a layer whose tokens are patches")


def to_feature_map(t: torch.Tensor, module: nn.Module, model: nn.Module, input_hw: tuple[int, int]) -> torch.Tensor:
    """A tapped output as (B, C, h, w): NCHW as is, NHWC permuted, (B, N, C) tokens without prefix tokens, folded."""
    if t.dim() == 4:
        return t.permute(0, 3, 1, 2) if _is_channels_last(module, model, t) else t
    prefix, (h, w) = token_grid(model, t.shape[1], input_hw)
    return t[:, prefix:, :].reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)


# ---- maps ----------------------------------------------------------------------------------------------

@dataclass
class CamArrays:
    """Per method, for a batch: ``heatmap`` (B, H, W) in [0, 1] as pytorch-grad-cam returns it, ``raw`` (B, H, W)
    un-normalised at input size, ``layer_map`` (B, h, w) at the first CAM layer's resolution. Torch tensors on the
    model's device while the engine works on them; numpy once it has copied a chunk to the host."""

    heatmap: torch.Tensor | np.ndarray
    raw: torch.Tensor | np.ndarray
    layer_map: torch.Tensor | np.ndarray


def scale_maps(maps: torch.Tensor, inplace: bool = False) -> torch.Tensor:
    """pytorch-grad-cam's ``scale_cam_image`` without resizing: each (h, w) map minus its minimum, divided by
    1e-7 + its new maximum (float32, as the library). ``inplace``: overwrite ``maps`` (no new buffer)."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    maps = maps.sub_(low) if inplace else maps - low
    return maps.div_(1e-7 + maps.amax(dim=(-2, -1), keepdim=True))


def resize_maps(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) -> (N, H, W) like ``cv2.resize(INTER_LINEAR)`` (see the module docstring)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps.clone()
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False, antialias=False)[:, 0]


def maps_from_layers(per_layer: Sequence[torch.Tensor], input_size: tuple[int, int],
                     refine: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(heatmap, raw) at ``input_size`` from non-negative (N, h_l, w_l) maps of one or more layers: pytorch-grad-cam's
    post-processing step for step (per-layer min-max and bilinear resize, ReLU, mean over layers, min-max again);
    ``raw`` is the mean of the resized un-normalised maps. One resize call per layer for all N maps; the big
    (N, H, W) buffers are the resize's outputs, worked on in place.

    ``refine``: pytorch-grad-cam's RefineCAM instead of the mean: each layer's map post-processed as a one-layer
    CAM (min-max again after the resize), their product over layers, min-max scaled; ``raw`` is that product."""
    n = per_layer[0].shape[0]
    scaled, raws = [], []
    for cam in per_layer:
        both = resize_maps(torch.cat([scale_maps(cam), cam]), input_size)
        scaled.append(both[:n])
        raws.append(both[n:])
    if refine:
        product = torch.stack([scale_maps(m, inplace=True) for m in scaled]).prod(dim=0)
        return scale_maps(product.clone(), inplace=True), product
    if len(scaled) == 1:  # the library's ReLU and mean over one layer leave a [0, 1] map exactly as it is
        return scale_maps(scaled[0], inplace=True), raws[0].clamp_min_(0)
    heat = scale_maps(torch.stack(scaled).clamp_min_(0).mean(dim=0), inplace=True)
    return heat, torch.stack(raws).mean(dim=0).clamp_min_(0)


@torch.no_grad()
def compute_cams(activations: Sequence[torch.Tensor], gradients: dict[str, Sequence[torch.Tensor] | None],
                 methods: Sequence[str], input_size: tuple[int, int], eigen_smooth: bool = False,
                 refine: bool = False) -> dict[str, CamArrays]:
    """Every method's maps from per-layer activations and per-score gradients (each (B, C, h, w) float32 tensors on
    the model's device); the maps stay there.

    ``gradients`` maps a score kind ("target", "finer") to the per-layer gradients of that score. ``heatmap``
    reproduces pytorch-grad-cam's post-processing (:func:`maps_from_layers`), so it equals the library's output
    with the same target layers (``refine``: RefineCAM's product over the layers instead of their mean). All
    methods of a layer are scaled and resized together.
    """
    formulas = {m: cam_formula(m) for m in methods}
    per_layer: list[torch.Tensor] = []
    for i, acts in enumerate(activations):
        cams = []
        for method in methods:
            spec = catalogue.get(method)
            grads = gradients.get(spec.score) if spec.gradients else None
            cam = formulas[method](acts, grads[i] if grads is not None else None, eigen_smooth)
            cams.append(cam.float().clamp_min(0))                                 # (B, h, w)
        per_layer.append(torch.cat(cams))                                          # (M*B, h, w), method-major
    heat, raw = maps_from_layers(per_layer, input_size, refine)
    b = activations[0].shape[0]
    return {m: CamArrays(heat[j * b:(j + 1) * b], raw[j * b:(j + 1) * b], per_layer[0][j * b:(j + 1) * b])
            for j, m in enumerate(methods)}


def finer_comparisons(logits: np.ndarray, target: int, count: int = FINER_COMPARISONS) -> list[int]:
    """Finer-CAM's default comparison classes: the ``count`` classes whose logits are closest to the target's
    (pytorch-grad-cam's FinerCAM ranks all classes by |logit - target logit| and skips the first, the target)."""
    order = np.argsort(np.abs(logits - logits[target]), axis=-1)
    return [int(j) for j in order if j != target][:max(0, min(count, len(logits) - 1))]


def now_ms() -> float:
    return time.perf_counter() * 1000.0


def affine_to_pixels(theta: np.ndarray, height: int, width: int) -> np.ndarray:
    """A spatial transformer's theta (normalised ``affine_grid`` coordinates, align_corners=False) as the
    2x3 pixel-space matrix that maps output (warped) pixel centres to input pixel centres (OpenCV convention)."""
    sx, shx, tx = theta[0]
    shy, sy, ty = theta[1]
    # u_in = a u_out + c with u = pixel index + 0.5 and x_norm = 2u/W - 1
    m = np.array([[sx, shx * height / width, 0.0], [shy * width / height, sy, 0.0]], np.float64)
    m[0, 2] = width / 2 * (1 + tx) - (sx * width / 2 + shx * height / 2) + 0.5 * (sx + shx * height / width) - 0.5
    m[1, 2] = height / 2 * (1 + ty) - (shy * width / 2 + sy * height / 2) + 0.5 * (shy * width / height + sy) - 0.5
    return m


def warp_to_input(heat: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Move a map computed on a spatial transformer's output back onto the original input (0 outside)."""
    import cv2

    h, w = heat.shape
    return cv2.warpAffine(heat.astype(np.float32), affine_to_pixels(theta, h, w), (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
