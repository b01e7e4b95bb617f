"""``ModelSpec``: everything the engine needs to know about one selectable model.

A spec is data (names, weights source, classes, preprocessing, layers); building and caching the
network is :mod:`attnviz.zoo.registry`'s job. Preprocessing lives here so training, evaluation, the engine
and the page all feed a model exactly the same tensor. torch and OpenCV are imported when a spec first
preprocesses: listing the models (``attnviz models``) reads specs without loading either.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class WeightsSource:
    """Where a model's weights come from. ``path`` None means random initialisation (tests, benchmarks)."""

    path: Path | None = None
    sha256: str = ""
    kind: str = "random"            # "bundled", "cache" (downloaded ImageNet weights), "upload", "random"
    download_hint: str = ""         # shown when the file is missing, e.g. "attnviz weights download resnet50"

    def available(self) -> bool:
        return self.path is None or self.path.is_file()


@dataclass(frozen=True)
class ModelSpec:
    """One selectable model: architecture + weights + label set + how to feed it."""

    name: str
    display_name: str
    attention: str                                  # "none", "se", "eca", "cbam", "triplet", "coord", ...
    builder: Callable[[], nn.Module]                # returns the network with random weights
    weights: WeightsSource
    class_names: tuple[str, ...]
    input_size: int = 224                           # square side the model is fed
    resize_size: int = 256                          # shorter side before the centre crop
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"                 # resampling to resize_size: "bilinear" or "bicubic" (timm)
    default_layer: str = "layer4"
    layers: tuple[str, ...] = ("layer4",)           # selectable CAM layers, deepest last
    source: str = ""                                 # "bundled zoo", "torchvision", "timm", "checkpoint"
    card: dict = field(default_factory=dict, compare=False, hash=False)  # model card (bundled models)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def model_view(self, image: np.ndarray) -> np.ndarray:
        """The uint8 (h, w, 3) crop the model actually sees: shorter side to ``resize_size``, centre crop.

        ``interpolation="bicubic"`` resizes as timm's evaluation transform does (PIL bicubic, which
        antialiases when shrinking); the default is OpenCV's area / bilinear resampling.
        """
        import cv2

        h, w = image.shape[:2]
        scale = self.resize_size / min(h, w)
        if scale != 1.0 and self.interpolation == "bicubic":
            image = _pil_bicubic(image, self.resize_size)
        elif scale != 1.0:
            new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            image = cv2.resize(image, (new_w, new_h), interpolation=interp)
        h, w = image.shape[:2]
        side = self.input_size
        if h < side or w < side:  # only when resize_size < input_size; pad by edge replication
            image = cv2.copyMakeBorder(image, 0, max(0, side - h), 0, max(0, side - w), cv2.BORDER_REPLICATE)
            h, w = image.shape[:2]
        if self.interpolation == "bicubic":  # torchvision's CenterCrop rounds the offset
            top, left = int(round((h - side) / 2.0)), int(round((w - side) / 2.0))
        else:
            top, left = (h - side) // 2, (w - side) // 2
        return np.ascontiguousarray(image[top:top + side, left:left + side])

    def preprocess(self, images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
        """uint8 (N,H,W,3) or one (H,W,3) image -> normalised float tensor (N,3,input,input)."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = images[None]
        views = np.stack([self.model_view(np.asarray(im)) for im in images])
        return self.normalise(views)

    def normalise(self, views: np.ndarray) -> torch.Tensor:
        """uint8 (N,h,w,3) already at input size -> float tensor; the training loop calls this directly."""
        import torch

        x = torch.from_numpy(np.array(views, dtype=np.uint8)).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return (x - mean) / std


def _pil_bicubic(image: np.ndarray, short_side: int) -> np.ndarray:
    """Shorter side to ``short_side`` like torchvision's ``Resize(int)`` on a PIL image (long side truncated)."""
    from PIL import Image

    h, w = image.shape[:2]
    if h <= w:
        size = (int(short_side * w / h), short_side)
    else:
        size = (short_side, int(short_side * h / w))
    return np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))


def _cpu() -> torch.device:
    import torch

    return torch.device("cpu")


@dataclass
class LoadedModel:
    """A ready network (eval mode, on ``device``) with its spec and the lock every hooked pass must hold.

    ``spec`` is None for a plain ``nn.Module`` handed to the API (it then has no class names or preprocessing).
    """

    model: nn.Module
    spec: ModelSpec | None
    lock: threading.Lock = field(default_factory=threading.Lock)
    weights_sha256: str = ""
    device: torch.device = field(default_factory=lambda: _cpu())

    @property
    def name(self) -> str:
        return self.spec.name if self.spec else type(self.model).__name__
