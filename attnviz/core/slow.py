"""Slow methods (Score-CAM, Ablation-CAM): pytorch-grad-cam run as is, one masked forward per channel.

Kept apart from the one-pass engine: they need the library's own hooks and many forwards, so the engine only
checks their budget and hands them the batch.
"""
from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
import torch
from torch import nn

from attnviz.core import cam as cam_core
from attnviz.core import methods
from attnviz.errors import LimitExceededError

SLOW_BUDGET_S = float(os.environ.get("ATTNVIZ_SLOW_BUDGET_S", "120"))


def check_slow_budget(method: str, channels: int, forward_ms: float, name: str) -> None:
    """Score-/Ablation-CAM run one masked forward per channel of the CAM layer: refuse what would take too long."""
    if methods.get(method).kind != methods.SLOW:
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


@lru_cache(maxsize=1)
def _silence_library_bars() -> None:
    """pytorch-grad-cam's Score-/Ablation-CAM draw a tqdm bar on stderr for every call (a server's log filled with
    them); attnviz reports progress itself. Their modules get a tqdm whose bars are off — only theirs."""
    import importlib
    from functools import partial
    from types import ModuleType, SimpleNamespace

    import tqdm

    for name in ("pytorch_grad_cam.score_cam", "pytorch_grad_cam.ablation_cam"):
        module = importlib.import_module(name)
        if isinstance(getattr(module, "tqdm", None), ModuleType):
            module.tqdm = SimpleNamespace(tqdm=partial(tqdm.tqdm, disable=True))


def slow_cams(method: str, net: nn.Module, layers: list[nn.Module], x: torch.Tensor, targets: list[int],
               contrasts: list[int | None], input_hw: tuple[int, int], eigen_smooth: bool,
               aug_smooth: bool) -> np.ndarray:
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    _silence_library_bars()

    cls = methods.get(method).resolve()
    wanted = [ClassifierOutputTarget(t) if c is None else _Difference(t, c) for t, c in zip(targets, contrasts)]

    def reshape(t: torch.Tensor) -> torch.Tensor:
        return cam_core.to_feature_map(t, layers[0], net, input_hw)

    with torch.enable_grad(), cls(model=net, target_layers=layers, reshape_transform=reshape) as engine:
        engine.batch_size = 32
        return engine(input_tensor=x, targets=wanted, aug_smooth=aug_smooth,
                      eigen_smooth=eigen_smooth).astype(np.float32)
