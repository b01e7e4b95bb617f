"""The one-pass CAM formulas in torch: pytorch-grad-cam's ``get_cam_image`` arithmetic, for a whole batch, on the
tensors' own device.

Every formula takes the CAM layer's activations A and the gradient dS/dA (both (B, C, h, w) float32, on the model's
device; the gradient is None for methods that read A only) and ``eigen_smooth``, and returns the (B, h, w) map
before any ReLU or scaling. Each line follows the library's numpy code operation for operation (same epsilons,
same order), so the maps equal the library's to float32 rounding (the equality tests hold them to 1e-5).

The decompositions are the library's own per-image numpy code, run on the host (:func:`library_projection`):
Eigen-CAM, EigenGrad-CAM and ``eigen_smooth`` project on the first principal component, whose sign the SVD does
not fix — a torch SVD (batched, on the device) would agree with LAPACK's only up to that sign, and the maps are
held equal to the library's; KPCA-CAM is scikit-learn's KernelPCA. They cost one device->host copy each.

:data:`BY_LIBRARY_CLASS` maps the pytorch-grad-cam class a catalogue entry names to its formula here, so the
catalogue keeps naming the class whose maps a method reproduces (:mod:`attnviz.core.methods`).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

Formula = Callable[[torch.Tensor, "torch.Tensor | None", bool], torch.Tensor]

_SPATIAL = (2, 3)


def library_projection(weighted: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's ``get_2d_projection`` (first principal component, per image) on the host, back on the
    tensor's device."""
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    return torch.from_numpy(get_2d_projection(weighted.detach().float().cpu().numpy())).to(weighted.device)


def library_kernel_projection(activations: torch.Tensor) -> torch.Tensor:
    """pytorch-grad-cam's ``get_2d_projection_kernel`` with KPCA_CAM's defaults (sigmoid kernel), on the host."""
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_kernel

    maps = get_2d_projection_kernel(activations.detach().float().cpu().numpy(), "sigmoid", None)
    return torch.from_numpy(maps).to(activations.device)


def _channel_sum(weighted: torch.Tensor, eigen_smooth: bool) -> torch.Tensor:
    """The library's last step: the sum over channels, or the first principal component with ``eigen_smooth``."""
    return library_projection(weighted) if eigen_smooth else weighted.sum(dim=1)


def _weighted(weights: torch.Tensor, activations: torch.Tensor, eigen_smooth: bool) -> torch.Tensor:
    """``BaseCAM.get_cam_image``: per-channel weights (B, C) times the activations."""
    return _channel_sum(weights[:, :, None, None] * activations, eigen_smooth)


def gradcam(activations: torch.Tensor, gradients: torch.Tensor, eigen_smooth: bool) -> torch.Tensor:
    """Grad-CAM: channel weights = the gradient's spatial mean."""
    return _weighted(gradients.mean(dim=_SPATIAL), activations, eigen_smooth)


def gradcam_plus_plus(activations: torch.Tensor, gradients: torch.Tensor, eigen_smooth: bool) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhay et al. 2018, eq. 19), with the library's eps and its zeroing where dS/dA = 0.
    In place where the arithmetic allows it: on the CPU every fresh (B, C, h, w) temporary costs page faults."""
    grads_power_2 = gradients.square()
    buffer = (grads_power_2 * gradients).mul_(activations.sum(dim=_SPATIAL, keepdim=True))      # sum_A * g^3
    buffer.add_(grads_power_2, alpha=2).add_(0.000001)                 # 2 g^2 + sum_A g^3 + eps (2 g^2 is exact)
    aij = grads_power_2.div_(buffer).masked_fill_(gradients == 0, 0)
    weights = torch.clamp(gradients, min=0, out=buffer).mul_(aij).sum(dim=_SPATIAL)   # two big temporaries only
    return _weighted(weights, activations, eigen_smooth)


def xgradcam(activations: torch.Tensor, gradients: torch.Tensor, eigen_smooth: bool) -> torch.Tensor:
    """XGrad-CAM: activation-weighted gradient sums, normalised by the activations' spatial sum."""
    sum_activations = activations.sum(dim=_SPATIAL, keepdim=True)
    weights = (gradients * activations).div_(sum_activations + 1e-7).sum(dim=_SPATIAL)
    return _weighted(weights, activations, eigen_smooth)


def layercam(activations: torch.Tensor, gradients: torch.Tensor, eigen_smooth: bool) -> torch.Tensor:
    """LayerCAM: positive gradients times activations, position by position."""
    return _channel_sum(torch.clamp_min(gradients, 0).mul_(activations), eigen_smooth)


def hirescam(activations: torch.Tensor, gradients: torch.Tensor, eigen_smooth: bool) -> torch.Tensor:
    """HiResCAM: gradients times activations, position by position (the library also prints a warning with
    ``eigen_smooth``; the map is the same)."""
    return _channel_sum(gradients * activations, eigen_smooth)


def gradcam_elementwise(activations: torch.Tensor, gradients: torch.Tensor, eigen_smooth: bool) -> torch.Tensor:
    """Grad-CAM element-wise: ReLU of gradients times activations before the channel sum."""
    return _channel_sum((gradients * activations).clamp_min_(0), eigen_smooth)


def eigengradcam(activations: torch.Tensor, gradients: torch.Tensor, eigen_smooth: bool) -> torch.Tensor:
    """EigenGrad-CAM: first principal component of gradients times activations (library code, host)."""
    return library_projection(gradients * activations)


def eigencam(activations: torch.Tensor, gradients: torch.Tensor | None, eigen_smooth: bool) -> torch.Tensor:
    """Eigen-CAM: first principal component of the activations (library code, host)."""
    return library_projection(activations)


def kpcacam(activations: torch.Tensor, gradients: torch.Tensor | None, eigen_smooth: bool) -> torch.Tensor:
    """KPCA-CAM: kernel PCA of the activations (library code: scikit-learn, host)."""
    return library_kernel_projection(activations)


FEM_K = 2              # pytorch-grad-cam's FEM default: a channel's "on" positions lie k sigma above its mean
RANDOM_CAM_SEED = 0    # RandomCAM's weights: numpy's legacy generator seeded with this, drawn anew per call


def fem(activations: torch.Tensor, gradients: torch.Tensor | None, eigen_smooth: bool) -> torch.Tensor:
    """FEM (Fuad et al. 2020), gradient-free: a channel's weight is the share of its positions above its mean +
    k standard deviations (population std, as numpy's); the map is the weighted channel sum (the library ignores
    ``eigen_smooth`` here, so does this)."""
    means = activations.mean(dim=_SPATIAL, keepdim=True)
    stds = activations.std(dim=_SPATIAL, keepdim=True, correction=0)
    weights = (activations > means + FEM_K * stds).float().mean(dim=_SPATIAL)
    return (weights[:, :, None, None] * activations).sum(dim=1)


def random_cam(activations: torch.Tensor, gradients: torch.Tensor | None, eigen_smooth: bool) -> torch.Tensor:
    """RandomCAM, the baseline a sanity check should reject: channel weights uniform in [-1, 1]. The library draws
    them from numpy's global generator (a different map every call); here they come from
    ``np.random.RandomState(RANDOM_CAM_SEED)``, fresh per call, so a map is reproducible and equals the library's
    after ``np.random.seed(RANDOM_CAM_SEED)``. The same seed for every target class makes the map class-blind by
    construction, which is what the random-target sanity check should catch."""
    b, c = activations.shape[:2]
    weights = np.random.RandomState(RANDOM_CAM_SEED).uniform(-1, 1, size=(b, c))
    return _weighted(torch.from_numpy(weights).to(activations.device, activations.dtype), activations, eigen_smooth)


BY_LIBRARY_CLASS: dict[str, Formula] = {
    "GradCAM": gradcam,
    "GradCAMPlusPlus": gradcam_plus_plus,
    "XGradCAM": xgradcam,
    "LayerCAM": layercam,
    "HiResCAM": hirescam,
    "GradCAMElementWise": gradcam_elementwise,
    "EigenGradCAM": eigengradcam,
    "EigenCAM": eigencam,
    "KPCA_CAM": kpcacam,
    "FEM": fem,
    "RandomCAM": random_cam,
    # ShapleyCAM (Cai et al. 2025) weighs channels by the spatial mean of dS/dA - 1/2 H A, H the Hessian of S in
    # A: Grad-CAM's formula on that "gradient", which the engine computes as the score kind "shapley"
    "ShapleyCAM": gradcam,
}


def library_formula(cls: type) -> Formula:
    """A pytorch-grad-cam class without a torch formula here: its own numpy ``get_cam_image`` on the host (one
    device->host copy of A and dS/dA per layer), so any library class still works as a catalogue entry."""
    obj = cls.__new__(cls)  # ``__init__`` would hook the model; only the formula is used

    class _NoHooks:
        def release(self) -> None:
            return None

    obj.activations_and_grads = _NoHooks()

    def formula(activations: torch.Tensor, gradients: torch.Tensor | None, eigen_smooth: bool) -> torch.Tensor:
        acts = activations.detach().float().cpu().numpy()
        grads = None if gradients is None else gradients.detach().float().cpu().numpy()
        cam = obj.get_cam_image(None, None, None, acts, grads, eigen_smooth)
        return torch.from_numpy(np.ascontiguousarray(cam, dtype=np.float32)).to(activations.device)
    return formula
