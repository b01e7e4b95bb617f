"""Deep Feature Factorization (issue 28): attnviz's concepts equal pytorch-grad-cam 1.5.7's
``DeepFeatureFactorization`` (concept vectors, per-concept heatmaps in [0, 1] at the input size, the classifier's
logits per concept) on torchvision's ResNet-50 with random weights and on the bundled CBAM model, and the page's
attention panel shows them as "concepts".

The reference is deterministic: its NMF is scikit-learn's with ``init="random", random_state=0``, which attnviz
uses too; both factorise the same activations (the whole batch at once). Its heatmaps are resized by OpenCV,
attnviz's by torch's bilinear upsampling (equal to one float32 ulp, see attnviz.core.cam).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import count_hooks
from pytorch_grad_cam import DeepFeatureFactorization

from attnviz import compare, concepts
from attnviz.app.web import views
from attnviz.data import synth
from attnviz.data.scenes import EVAL_SEED, cached_scenes
from attnviz.errors import AttnvizError
from attnviz.zoo import registry as zoo
from benchmarks.reference_nets import resnet50_random


def _library(net, layer, head, x, k):
    vectors, heatmaps, scores = DeepFeatureFactorization(net, layer, computation_on_concepts=head)(x, k)
    return vectors, np.stack(heatmaps), scores


def _assert_equal(ours, reference, k: int, batch: int, side: int) -> None:
    vectors, heatmaps, scores = reference
    assert ours.heatmaps.shape == (batch, k, side, side) and ours.heatmaps.dtype == np.float32
    assert 0 <= ours.heatmaps.min() and ours.heatmaps.max() <= 1 + 1e-6
    assert float(np.abs(ours.heatmaps - heatmaps).max()) <= 1e-5
    scale = max(1.0, float(np.abs(vectors).max()))
    assert float(np.abs(ours.vectors - vectors).max()) <= 1e-5 * scale
    assert float(np.abs(ours.scores - scores).max()) <= 1e-5 * max(1.0, float(np.abs(scores).max()))
    # k different concepts, not one map repeated
    assert min(float(np.abs(ours.heatmaps[:, i] - ours.heatmaps[:, j]).max())
               for i in range(k) for j in range(i + 1, k)) > 0.05


def test_concepts_equal_pytorch_grad_cam_on_resnet50():
    net = resnet50_random()
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    ours = concepts(net, x, k=4, layer="layer4")
    _assert_equal(ours, _library(net, net.layer4, net.fc, x, 4), 4, 2, 96)
    assert ours.layer == "layer4" and len(ours.top_classes(0)) == 2
    assert count_hooks(net) == 0


def test_concepts_equal_pytorch_grad_cam_on_the_bundled_cbam_model():
    cbam = zoo.load("cbam", "cpu")
    images = list(cached_scenes(3, EVAL_SEED, synth.IMAGE_SIZE).images)
    ours = concepts(cbam, images, k=3)   # the default layer: the last stage
    x = cbam.spec.normalise(np.stack([cbam.spec.model_view(im) for im in images]))
    side = int(x.shape[-1])
    _assert_equal(ours, _library(cbam.model, cbam.model.get_submodule(ours.layer), cbam.model.fc, x, 3), 3, 3, side)
    assert ours.layer == cbam.spec.default_layer
    names = {name for i in range(3) for name, _ in ours.top_classes(i)}
    assert names <= set(cbam.spec.class_names)


def test_concepts_refuse_a_bad_count():
    with pytest.raises(AttnvizError, match="1 to 64 concepts"):
        concepts("cbam", list(cached_scenes(1, EVAL_SEED, synth.IMAGE_SIZE).images), k=0)


def test_the_attention_panel_shows_concepts():
    image = cached_scenes(1, EVAL_SEED, synth.IMAGE_SIZE).images[0]
    comparison = compare(["baseline", "cbam"], image, ("gradcam",))
    gallery = views.attention_gallery(comparison, "cbam", views.CONCEPTS)
    assert len(gallery) == views.CONCEPT_COUNT
    assert all(caption.startswith(f"layer3 · concept {i + 1}: ") for i, (_, caption) in enumerate(gallery))
    assert all(img.ndim == 3 and img.dtype == np.uint8 for img, _ in gallery)
    assert not any("concept" in caption for _, caption in views.attention_gallery(comparison, "cbam",
                                                                                   "stage summaries"))
