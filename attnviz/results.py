"""Plain result types shared by the engine, the renderer, the CLI, the web page and the tests.

Everything here is numpy arrays and Python scalars — never Gradio objects or tensors — so one
code path serves the UI, the command line, the Python API and notebooks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

# How an attention array should be shown:
#   "spatial"   (H, W) values in [0, 1] over the feature map — drawn as a heatmap over the image
#   "channel"   (C,)   one weight per channel — drawn as a bar chart
#   "profile_h" (H,)   a weight per row;  "profile_w" (W,) a weight per column — drawn as line plots
#   "matrix"    (A, B) any other 2-D map (Triplet's C-W / H-C planes, channel affinities) — drawn as an image
#   "affinity"  (Hq, Wq, Hk, Wk) for every query position, its weights over key positions (Non-local,
#               criss-cross, DANet PAM, self-attention) — drawn for one query point the user picks
#   "affine"    (2, 3) a spatial transformer's theta in affine_grid's normalised coordinates — drawn as
#               the sampled region on the input plus the warped input
MapLayout = Literal["spatial", "channel", "profile_h", "profile_w", "matrix", "affinity", "affine"]


@dataclass(frozen=True)
class AttentionMap:
    """One displayable map recorded from an attention module's gate during the forward pass."""

    block: str          # dotted module name of the attention module, e.g. "layer2.0.cbam"
    stage: str          # the stage it belongs to, e.g. "layer2" ("" when unknown)
    attention: str      # attention type key ("se", "cbam", "triplet", "coord", ...)
    name: str           # what the map is ("channel", "spatial", "h_profile", "ca_product", ...)
    layout: MapLayout
    data: np.ndarray    # float32, shape per ``layout``
    axes: tuple[str, ...] = ()   # axis labels for "matrix" maps, e.g. ("C", "W")
    note: str = ""      # one line for the page: how the map was derived

    @property
    def label(self) -> str:
        return f"{self.block} · {self.name}"


@dataclass(frozen=True)
class CamMap:
    """A class-activation map for one method, at the model's input resolution."""

    method: str                 # "gradcam", "gradcam++", ..., "rollout", "grad-rollout"
    heatmap: np.ndarray         # (H, W) float32 in [0, 1], exactly what pytorch-grad-cam returns
    raw: np.ndarray             # (H, W) float32 >= 0, un-normalised (for a colour scale shared across maps)
    layer_map: np.ndarray       # (h, w) float32 >= 0 at the (first) target layer's resolution, un-normalised


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    probability: float


@dataclass
class Explanation:
    """Everything attnviz computes for one model on one image."""

    model: str                          # registry name (or the class name of a plain nn.Module)
    display_name: str
    attention: str                      # "none" or the attention type key
    image: np.ndarray | None            # (H, W, 3) uint8: the model's view of the input (after resize/crop)
    predictions: list[Prediction]       # top-k, highest first
    target: Prediction                  # the class the CAMs explain
    layer: str                          # dotted name of the CAM target layer ("a+b+c" for fused layers)
    cams: dict[str, CamMap]
    attention_maps: list[AttentionMap]
    stage_summaries: list[AttentionMap]
    timings: dict[str, float]           # milliseconds: "preprocess", "forward", "backward", "cams", "total", ...
    logits: np.ndarray                  # (num_classes,) float32
    weights_sha256: str = ""            # of the weights file, for reports
    view_resize: int = 0                # shorter side the upload was resized to before the centre crop
    warnings: list[str] = field(default_factory=list)
    contrast: Prediction | None = None  # "target versus this class" (score = logit target - logit contrast)
    options: dict = field(default_factory=dict)   # how the maps were made: eigen_smooth, aug_smooth, amp, layers
    device: str = "cpu"                 # where the model ran
    # requested methods this model cannot compute (rollout on a CNN): method -> why; the grid shows "n/a"
    unavailable: dict[str, str] = field(default_factory=dict)

    @property
    def top1(self) -> Prediction:
        return self.predictions[0]


@dataclass
class Comparison:
    """Several models on one image: rows of the side-by-side grid."""

    image: np.ndarray                   # (H, W, 3) uint8, the decoded upload
    explanations: list[Explanation]
    methods: tuple[str, ...]
    target_request: str | int | None    # what the user asked for (None = each model's top-1)
    timings: dict[str, float] = field(default_factory=dict)
    mask: np.ndarray | None = None      # (H, W) bool ground truth when known (benchmark scenes, drawn boxes)
    # "what attention changed": (variant model, method) -> {"spearman", "top20_iou", "peak_distance", ...}
    # against the baseline row's map of the same method, target and layer (empty without a baseline row)
    agreement: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    # variant model -> why it has no agreement with the baseline (e.g. it predicts other classes)
    not_compared: dict[str, str] = field(default_factory=dict)
