"""Deep Feature Factorization (Collins et al. 2018, "Deep Feature Factorization for Concept Discovery"): the
concepts one layer's activations are made of, found by non-negative matrix factorisation, and where each lies.

The layer's activations of a whole batch, (B, C, h, w), become a (C, B*h*w) matrix, each channel shifted by its
minimum so that it is non-negative; NMF factors it into k concept vectors (C, k) times k maps (k, B*h*w). Every
image gets k heatmaps (min-max scaled, resized to the input as pytorch-grad-cam's ``DeepFeatureFactorization``
does) and every concept (its vector with the channel minimum added back) is scored by the model's classifier, so
the page can say which classes a concept stands for. The concepts are shared by the images of one call, as in
pytorch-grad-cam; its NMF (scikit-learn, random initialisation with seed 0) is deterministic, and so is this one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from attnviz.core import cam as cam_core
from attnviz.core.specs import LoadedModel
from attnviz.errors import AttnvizError

DEFAULT_CONCEPTS = 5
NMF_SEED = 0


@dataclass
class Concepts:
    """k concepts of one layer for a batch of images."""

    layer: str
    vectors: np.ndarray           # (C, k): each concept's channel weights (the channel minimum added back)
    heatmaps: np.ndarray          # (B, k, H, W) float32 in [0, 1]: where each concept lies in each image
    scores: np.ndarray | None     # (k, classes): the classifier's logits for each concept, None without one
    class_names: tuple[str, ...] = ()

    def top_classes(self, concept: int, count: int = 2) -> list[tuple[str, float]]:
        """The classes concept ``concept`` scores highest, with the softmax of its logits."""
        if self.scores is None:
            return []
        logits = torch.from_numpy(self.scores[concept]).double()
        probs = torch.softmax(logits, dim=0).numpy()
        order = np.argsort(-probs, kind="stable")[:count]
        names = self.class_names or tuple(f"class_{i}" for i in range(len(probs)))
        return [(names[int(i)], float(probs[i])) for i in order]


def factorize(activations: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, C, h, w) activations -> concept vectors (C, k) and maps (B, k, h, w) (NaNs read as 0)."""
    import warnings

    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning

    b, c, h, w = activations.shape
    matrix = np.nan_to_num(activations.transpose(1, 0, 2, 3).reshape(c, -1), nan=0.0, posinf=0.0, neginf=0.0)
    low = matrix.min(axis=1, keepdims=True)
    nmf = NMF(n_components=k, init="random", random_state=NMF_SEED)
    with warnings.catch_warnings():  # its iteration cap, not the user's problem; the factorisation is still used
        warnings.simplefilter("ignore", ConvergenceWarning)
        weights = nmf.fit_transform(matrix - low)
    maps = nmf.components_.reshape(k, b, h, w).transpose(1, 0, 2, 3)
    return weights + low, maps


def classifier(model: nn.Module, channels: int) -> nn.Linear | None:
    """The model's final linear classifier when it reads ``channels`` features (timm's ``get_classifier()``, or a
    ``fc`` / ``classifier`` / ``head`` attribute, possibly inside a Sequential), else None."""
    found = [model.get_classifier()] if callable(getattr(model, "get_classifier", None)) else []
    found += [getattr(model, name, None) for name in ("fc", "classifier", "head")]
    for module in found:
        if isinstance(module, nn.Sequential):
            linears = [m for m in module if isinstance(m, nn.Linear)]
            module = linears[-1] if len(linears) == 1 else None
        if isinstance(module, nn.Linear) and module.in_features == channels:
            return module
    return None


def concepts(r: LoadedModel, x: torch.Tensor, layer: str, k: int, class_names: tuple[str, ...]) -> Concepts:
    """DFF of ``layer`` for the preprocessed batch ``x`` (N, 3, H, W): one forward (no autograd), NMF on the host."""
    if not 1 <= k <= 64:
        raise AttnvizError(f"Choose 1 to 64 concepts, not {k}.")
    module = cam_core.resolve_layer(r.model, layer)
    input_hw = (int(x.shape[-2]), int(x.shape[-1]))
    with r.lock:
        _, (tapped,) = cam_core.forward_with_taps(r.model, x.to(r.device), [module], needs_grad=False)
    acts = cam_core.to_feature_map(tapped, module, r.model, input_hw).float()
    vectors, maps = factorize(acts.cpu().numpy(), k)
    b, _, h, w = maps.shape
    flat = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32)).reshape(b * k, h, w)
    heat = cam_core.resize_maps(cam_core.scale_maps(flat), input_hw).reshape(b, k, *input_hw)
    head = classifier(r.model, vectors.shape[0])
    scores = None
    if head is not None:
        with torch.no_grad():
            weights = next(head.parameters())
            scores = head(torch.from_numpy(np.float32(vectors.T)).to(weights.device, weights.dtype)).float().cpu()
        scores = scores.numpy()
    return Concepts(layer, vectors, heat.numpy().astype(np.float32), scores, tuple(class_names))
