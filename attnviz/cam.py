"""One-pass Grad-CAM family.

Grad-CAM, Grad-CAM++, XGrad-CAM, LayerCAM and HiResCAM all derive from the same two arrays: the target
layer's activations A and the gradient dS/dA of the class score S. pytorch-grad-cam recomputes both,
with a full backward through every parameter, once per method. Here the network runs *once*, without
autograd up to the target layer; autograd switches on at the layer (a forward hook swaps in a leaf
tensor) so the backward only spans the layers after it. The per-method formulas are pytorch-grad-cam's
own (``get_cam_image`` of each class), so the maps equal the library's.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.image import scale_cam_image

from .errors import TargetError

ONE_PASS_METHODS: dict[str, type[BaseCAM]] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "hirescam": HiResCAM,
}


class _NoHooks:
    """Stands in for ``ActivationsAndGradients`` so a formula-only CAM object owns no hooks."""

    def release(self) -> None:
        return None


def _formula(cls: type[BaseCAM]) -> BaseCAM:
    """An instance of a pytorch-grad-cam class used only for its formulas (``__init__`` would hook the model)."""
    obj = cls.__new__(cls)
    obj.activations_and_grads = _NoHooks()
    return obj


_FORMULAS: dict[str, BaseCAM] = {name: _formula(cls) for name, cls in ONE_PASS_METHODS.items()}


@dataclass
class LayerCapture:
    """What one forward + restricted backward yields."""

    logits: torch.Tensor          # (1, K), detached
    activations: np.ndarray       # (1, C, h, w) float32
    gradients: np.ndarray | None  # (1, C, h, w) float32, None until ``backward`` runs
    timings: dict[str, float]


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> nn.Module:
    """A dotted module name (``"layer4"``, ``"features.18"``) or a module -> the module, with a clear error."""
    if isinstance(layer, nn.Module):
        return layer
    try:
        return model.get_submodule(layer)
    except AttributeError:
        top = [name for name, _ in model.named_children()]
        raise TargetError(f"layer {layer!r} is not in this model; top-level modules: {', '.join(top)}") from None


class _LayerTap:
    """Forward hook that turns autograd on at the target layer and keeps its output as a grad leaf."""

    def __init__(self) -> None:
        self.leaf: torch.Tensor | None = None

    def __call__(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if self.leaf is not None:  # a module reused later in the network: explain its first use only
            return None
        if not isinstance(output, torch.Tensor) or output.dim() != 4:
            raise TargetError(f"the CAM layer must output a (N, C, H, W) tensor, got "
                              f"{type(output).__name__}{tuple(getattr(output, 'shape', ()))}")
        torch.set_grad_enabled(True)  # thread-local; the caller's no_grad() context restores it
        self.leaf = output.detach().requires_grad_(True)
        return self.leaf.clone()  # downstream in-place ops must not touch the leaf


def forward_to_layer(model: nn.Module, x: torch.Tensor, layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``model(x)`` with autograd off before ``layer`` and on after it. Returns (logits, layer leaf)."""
    tap = _LayerTap()
    handle = layer.register_forward_hook(tap)
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        handle.remove()
    if tap.leaf is None:
        raise TargetError("the CAM layer was not used in the forward pass")
    return logits, tap.leaf


def class_gradient(logits: torch.Tensor, leaf: torch.Tensor, target: int) -> torch.Tensor:
    """d logit[target] / d layer output, backpropagating only through the layers after the target layer."""
    if not 0 <= target < logits.shape[-1]:
        raise TargetError(f"class index {target} is out of range for {logits.shape[-1]} classes")
    (grad,) = torch.autograd.grad(logits[0, target], leaf)
    return grad


def compute_cams(activations: np.ndarray, gradients: np.ndarray, methods: Sequence[str],
                 input_size: tuple[int, int]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per method: (heatmap in [0,1] at input size, raw upsampled map, raw layer-resolution map).

    ``heatmap`` reproduces pytorch-grad-cam's post-processing step for step (ReLU, per-map min-max,
    bilinear resize, aggregation over one layer, min-max again), so it equals the library's output.
    """
    import cv2  # local: keeps module import light for the CLI's --help

    width, height = input_size[1], input_size[0]
    out = {}
    for method in methods:
        cam = _FORMULAS[method].get_cam_image(None, None, None, activations, gradients, False)
        cam = np.maximum(cam, 0)                                    # (1, h, w)
        scaled = scale_cam_image(cam, (width, height))[:, None, :]  # library: per-layer scaling
        heat = scale_cam_image(np.mean(np.maximum(scaled, 0), axis=1))[0]
        raw_layer = cam[0].astype(np.float32)
        raw = cv2.resize(raw_layer, (width, height), interpolation=cv2.INTER_LINEAR)
        out[method] = (heat.astype(np.float32), np.maximum(raw, 0).astype(np.float32), raw_layer)
    return out


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
