"""RefineCAM and SESS (issue 28), pytorch-grad-cam 1.5.7's two meta-methods, as options on a base method: equal to
the library's ``RefineCAM`` / ``SESS`` wrapped around the same base class, on the same model, layers, batch and
targets (max abs <= 1e-5, maps in [0, 1]): torchvision's ResNet-50 with random weights (64 px, batch 2) and the
bundled CBAM model.

Both references are deterministic: RefineCAM is a product of per-layer CAMs; SESS has no random step (its patch
order is an ``argsort`` of the patch scores, which attnviz computes the same way, and its fusion, resizing and
blur are the same OpenCV calls). SESS runs with 3 scales here instead of its default 12 (1 + 4 + 4 patches per
64 px image instead of 122): the same code path, a tenth of the work. Where the library's ``RefineCAM`` loop
"normalises" each layer's map it rebinds a loop variable and changes nothing; attnviz follows what it computes.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import count_hooks
from pytorch_grad_cam import SESS, GradCAM, GradCAMPlusPlus, LayerCAM, RefineCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from attnviz import explain_batch
from attnviz.data import synth
from attnviz.data.scenes import EVAL_SEED, cached_scenes
from attnviz.errors import AttnvizError
from attnviz.zoo import registry as zoo
from benchmarks.reference_nets import resnet50_random

TARGETS = [3, 7]
BASES = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "layercam": LayerCAM}


@pytest.fixture(scope="module")
def resnet50() -> torch.nn.Module:
    return resnet50_random()


@pytest.fixture(scope="module")
def cbam():
    return zoo.load("cbam", "cpu")


def _heat(explanations, method: str) -> np.ndarray:
    out = np.stack([e.cams[method].heatmap for e in explanations])
    assert out.dtype == np.float32 and 0 <= out.min() and out.max() <= 1 + 1e-6
    return out


def _wanted(targets: list[int]) -> list:
    return [ClassifierOutputTarget(t) for t in targets]


def _check_refine(net, images, x, layers: list[str], bases: tuple[str, ...]) -> None:
    ours = explain_batch(net, images, bases, targets=TARGETS, layer=layers, refine=True)
    plain = explain_batch(net, images, bases, targets=TARGETS, layer=layers)
    modules = [net.get_submodule(n) for n in layers]
    for name in bases:
        reference = RefineCAM(net, modules, base_method=BASES[name])(x, _wanted(TARGETS))
        assert reference.max(axis=(1, 2)).min() > 0.5, name   # no all-zero map to agree on trivially
        assert float(np.abs(_heat(ours, name) - reference).max()) <= 1e-5, name
        # the product is not the library's multi-layer mean
        assert float(np.abs(_heat(ours, name) - _heat(plain, name)).max()) > 0.05, name
    assert ours[0].options["refine"] is True


def _check_sess(model, images, x, layer: str, bases: tuple[str, ...]) -> None:
    ours = explain_batch(model, images, bases, targets=TARGETS, layer=layer, sess=3)
    net = getattr(model, "model", model)   # a registry model: its nn.Module
    module = net.get_submodule(layer)
    for name in bases:
        with SESS(net, [module], base_method=BASES[name], num_scales=3) as sess:
            reference = sess(x, _wanted(TARGETS))
        assert reference.max(axis=(1, 2)).min() > 0.5, name
        assert float(np.abs(_heat(ours, name) - reference).max()) <= 1e-5, name
    assert ours[0].options["sess"] == 3 and "sess" in ours[0].timings


def test_refine_and_sess_equal_pytorch_grad_cam_on_resnet50(resnet50):
    """Grad-CAM's map of this random network is all zero at layer4 for these targets (the ReLU of negative
    weights): it would agree trivially, so Grad-CAM++ and LayerCAM are the bases here."""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    _check_refine(resnet50, x, x, ["layer2", "layer3", "layer4"], ("gradcam++", "layercam"))
    _check_sess(resnet50, x, x, "layer4", ("gradcam++", "layercam"))
    assert count_hooks(resnet50) == 0


def test_refine_and_sess_equal_pytorch_grad_cam_on_the_bundled_cbam_model(cbam):
    scenes = cached_scenes(2, EVAL_SEED, synth.IMAGE_SIZE)
    images = list(scenes.images)
    x = cbam.spec.normalise(np.stack([cbam.spec.model_view(im) for im in images]))
    _check_refine(cbam.model, x, x, ["layer1", "layer2"], tuple(BASES))
    _check_sess(cbam, images, x, "layer2", ("gradcam", "gradcam++"))
    assert count_hooks(cbam.model) == 0


def test_refine_needs_two_layers_and_sess_refuses_aug_smooth(resnet50):
    x = torch.randn(1, 3, 64, 64)
    with pytest.raises(AttnvizError, match="at least two layers"):
        explain_batch(resnet50, x, ("gradcam",), layer="layer4", refine=True)
    with pytest.raises(AttnvizError, match="cannot be combined"):
        explain_batch(resnet50, x, ("gradcam",), layer="layer4", sess=True, aug_smooth=True)
    with pytest.raises(AttnvizError, match="1 to 32 scales"):
        explain_batch(resnet50, x, ("gradcam",), layer="layer4", sess=-1)


def test_sess_leaves_the_other_kinds_plain_and_says_so(resnet50):
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    (plain,) = explain_batch(resnet50, x, ("gradcam++", "sobelcam"), targets=3, layer="layer4")
    (with_sess,) = explain_batch(resnet50, x, ("gradcam++", "sobelcam"), targets=3, layer="layer4", sess=2)
    np.testing.assert_array_equal(plain.cams["sobelcam"].heatmap, with_sess.cams["sobelcam"].heatmap)
    assert not np.allclose(plain.cams["gradcam++"].heatmap, with_sess.cams["gradcam++"].heatmap, atol=0.01)
    assert any("SESS applies to the one-pass" in w and "SobelCAM" in w for w in with_sess.warnings)
