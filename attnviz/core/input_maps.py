"""Maps at input resolution: SobelCAM (from the image alone), and FullGrad, Guided Backprop and Guided Grad-CAM
(from gradients of the score down to the input).

The engine runs them on its one forward of the batch: for the gradient methods that forward keeps autograd on
from the input (:func:`attnviz.core.cam.forward_with_taps` with ``from_input``), FullGrad taps every bias layer's
output, and Guided Backprop puts a :class:`GuidedSwitch` gate after every ``nn.ReLU``, closed for the ordinary
backward and open for the guided one — so every method of a batch still shares one forward.

Conventions (each reproduces pytorch-grad-cam 1.5.7; the tests hold the maps to 1e-5):

* **SobelCAM** — the library's ``sobel_cam``: grey image, 3x3 Sobel in x and y, absolute values saturated to
  uint8, their mean (uint8). The image is the model's uint8 view; a tensor input (no view) is min-max scaled to
  0..255 per image first. It never looks at the model: a sanity baseline.
* **FullGrad** (Srinivas & Fleuret 2019) — |dS/dx * x| plus, for every Conv2d / BatchNorm2d with a bias (the
  library's rule; BatchNorm's effective bias b - mean * w / sqrt(var + eps)), |bias * dS/d(output)|; each channel
  min-max scaled and resized to the input, all summed. The CAM layer is not used (as in the library). Bilinear
  resizing is linear, so channels are summed at each layer's resolution and resized once per resolution.
* **Guided Backprop** (Springenberg et al. 2015) — the library's ``GuidedBackpropReLUModel`` gradient dS/dx with
  every ``nn.ReLU`` passing only positive gradients, made one map per image as max over colour channels of |.|
  (Simonyan et al. 2014's saliency convention; the library returns the (H, W, 3) gradient, rendered as an
  image), min-max scaled.
* **Guided Grad-CAM** (Selvaraju et al. 2017) — the Grad-CAM heatmap times the guided gradient, the same
  max-abs over channels, min-max scaled (the library's example multiplies the two the same way).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from attnviz.core import cam as cam_core

# ---- SobelCAM ------------------------------------------------------------------------------------------

def sobel_image(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 edge strength: mean of |Sobel x| and |Sobel y| of the grey image."""
    import cv2

    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    gx = cv2.convertScaleAbs(cv2.Sobel(grey, cv2.CV_64F, 1, 0, ksize=3))
    gy = cv2.convertScaleAbs(cv2.Sobel(grey, cv2.CV_64F, 0, 1, ksize=3))
    return cv2.addWeighted(gx, 0.5, gy, 0.5, 0)


def as_uint8_image(x: torch.Tensor) -> np.ndarray:
    """A preprocessed (3, H, W) tensor without a uint8 view: min-max scaled to 0..255, (H, W, 3) uint8."""
    img = x.detach().float().cpu()
    img = (img - img.min()) / (img.max() - img.min() + 1e-12)
    return np.ascontiguousarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))


def sobel_maps(views: Sequence[np.ndarray | None], x: torch.Tensor) -> torch.Tensor:
    """(B, H, W) float32 SobelCAM maps of a chunk, on ``x``'s device."""
    maps = [sobel_image(v if v is not None else as_uint8_image(x[i])) for i, v in enumerate(views)]
    return torch.from_numpy(np.stack(maps).astype(np.float32)).to(x.device)


# ---- FullGrad ------------------------------------------------------------------------------------------

def bias_layers(model: nn.Module) -> list[nn.Module]:
    """FullGrad's layers: every Conv2d and BatchNorm2d (exactly those types, as the library) with a bias."""
    return [m for m in model.modules() if type(m) in (nn.Conv2d, nn.BatchNorm2d) and m.bias is not None]


def effective_bias(layer: nn.Module) -> torch.Tensor:
    """A layer's bias as FullGrad sees it; BatchNorm in eval mode: b - running_mean * w / sqrt(running_var + eps)."""
    if isinstance(layer, nn.BatchNorm2d) and layer.running_mean is not None:
        scale = layer.running_var + layer.eps
        weight = layer.weight if layer.weight is not None else torch.ones_like(scale)
        return (layer.bias - layer.running_mean * weight / torch.sqrt(scale)).detach()
    return layer.bias.detach()


def _channel_scaled_sum(t: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h, w): every channel min-max scaled (pytorch-grad-cam's ``scale_cam_image``), summed."""
    return cam_core.scale_maps(t).sum(dim=1)


def fullgrad_sums(x: torch.Tensor, x_grad: torch.Tensor, layers: Sequence[nn.Module],
             outputs_grads: Sequence[torch.Tensor | None], input_hw: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) FullGrad sums (before the final min-max) from the input, its gradient, and the gradients at the
    bias layers' outputs (None where the score does not depend on a layer: it adds nothing)."""
    total = _channel_scaled_sum((x_grad.float() * x.float()).abs())
    total = cam_core.resize_maps(total, input_hw)
    by_size: dict[tuple[int, int], torch.Tensor] = {}
    for layer, grad in zip(layers, outputs_grads):
        if grad is None or grad.dim() != 4:
            continue
        bias = effective_bias(layer).to(grad.device, torch.float32)
        part = _channel_scaled_sum((bias[None, :, None, None] * grad.float()).abs())
        size = (int(part.shape[-2]), int(part.shape[-1]))
        by_size[size] = part if size not in by_size else by_size[size].add_(part)
    for part in by_size.values():
        total = total.add_(cam_core.resize_maps(part, input_hw))
    return total


# ---- Guided Backprop -----------------------------------------------------------------------------------

class GuidedSwitch:
    """Whether the gates after the ReLUs pass only positive gradients (guided) or every gradient (plain)."""

    def __init__(self) -> None:
        self.guided = False


class _GuidedGate(torch.autograd.Function):
    """Identity forward; backward passes the gradient, or only its positive part while the switch is on. After a
    ReLU this is the guided ReLU's rule: dS/dx * (x > 0) * (dS/dy > 0)."""

    @staticmethod
    def forward(ctx, y: torch.Tensor, switch: GuidedSwitch) -> torch.Tensor:
        ctx.switch = switch
        return y.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return (grad.clamp_min(0) if ctx.switch.guided else grad), None


@contextmanager
def guided_relus(model: nn.Module) -> Iterator[GuidedSwitch]:
    """A gate after every ``nn.ReLU`` of ``model`` (the modules the library swaps for its guided ReLU) for the
    duration of the forward; yields the switch the guided backward opens."""
    switch = GuidedSwitch()

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if not isinstance(output, torch.Tensor) or not output.requires_grad:
            return None
        return _GuidedGate.apply(output, switch)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        yield switch
    finally:
        for h in handles:
            h.remove()


def guided_saliency(x_grad_guided: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) guided gradient -> (B, H, W): max over colour channels of its absolute value."""
    return x_grad_guided.float().abs().amax(dim=1)


def guided_times_cam(x_grad_guided: torch.Tensor, gradcam_heatmap: torch.Tensor) -> torch.Tensor:
    """Guided Grad-CAM: the [0, 1] Grad-CAM heatmap (B, H, W) times the guided gradient, max-abs over channels."""
    return (gradcam_heatmap[:, None].float() * x_grad_guided.float()).abs().amax(dim=1)


# ---- the catalogue's entries ---------------------------------------------------------------------------

INPUT_GRAD = "input_grad"   # dS/dx and dS/d(bias layer outputs), plain backward
GUIDED = "guided"           # dS/dx through the guided ReLU gates
GRADCAM = "gradcam"         # the Grad-CAM heatmap of the chosen CAM layer(s)


@dataclass
class InputContext:
    """What the engine hands an input-resolution method for one chunk (tensors on the model's device; the
    gradients are None unless a method of the chunk needs them)."""

    x: torch.Tensor                                  # (B, 3, H, W) the chunk as the model saw it
    views: Sequence[np.ndarray | None]               # the uint8 model views (None for tensor inputs)
    input_hw: tuple[int, int]
    x_grad: torch.Tensor | None = None               # plain dS/dx
    x_grad_guided: torch.Tensor | None = None        # guided dS/dx
    bias_layers: Sequence[nn.Module] = ()
    bias_grads: Sequence[torch.Tensor | None] = ()   # dS/d(output) of each bias layer
    gradcam: torch.Tensor | None = None              # (B, H, W) Grad-CAM heatmap in [0, 1]


InputMethod = Callable[[InputContext], torch.Tensor]


def _needs(*what: str) -> Callable[[InputMethod], InputMethod]:
    """Mark what a method needs computed (:data:`INPUT_GRAD`, :data:`GUIDED`, :data:`GRADCAM`): the engine plans
    its forward and backwards from these marks."""
    def mark(fn: InputMethod) -> InputMethod:
        fn.needs = frozenset(what)  # type: ignore[attr-defined]
        return fn
    return mark


def needs(fn: Callable) -> frozenset[str]:
    return getattr(fn, "needs", frozenset())


@_needs()
def sobel(ctx: InputContext) -> torch.Tensor:
    """SobelCAM: edges of the image; no model involved."""
    return sobel_maps(ctx.views, ctx.x)


@_needs(INPUT_GRAD)
def fullgrad(ctx: InputContext) -> torch.Tensor:
    """FullGrad: input-gradient and bias-gradient terms of every bias layer."""
    return fullgrad_sums(ctx.x, ctx.x_grad, ctx.bias_layers, ctx.bias_grads, ctx.input_hw)


@_needs(GUIDED)
def guided_backprop(ctx: InputContext) -> torch.Tensor:
    """Guided Backprop: the guided input gradient, max-abs over colour channels."""
    return guided_saliency(ctx.x_grad_guided)


@_needs(GUIDED, GRADCAM)
def guided_gradcam(ctx: InputContext) -> torch.Tensor:
    """Guided Grad-CAM: the Grad-CAM heatmap times the guided input gradient."""
    return guided_times_cam(ctx.x_grad_guided, ctx.gradcam)
