"""pytorch-grad-cam's options through the one-pass engine: eigen_smooth, aug_smooth, fused layers, contrastive
targets and Finer-CAM — each equal to the library called the same way (<= 1e-5)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from conftest import count_hooks
from pytorch_grad_cam import FinerCAM, GradCAM, GradCAMPlusPlus, LayerCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget, FinerWeightedTarget

from attnviz import explain, explain_batch
from attnviz.data import synth
from attnviz.errors import TargetError
from attnviz.zoo import registry as zoo

TOL = 1e-5


@pytest.fixture(scope="module")
def resnet50() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet50().eval()


@pytest.fixture(scope="module")
def cases(resnet50):
    """(label, model, layer names, input batch, targets): torchvision ResNet-50 and two bundled models."""
    scenes = synth.generate(4, seed=97, workers=1)
    out = [("resnet50", resnet50, ["layer2", "layer3", "layer4"],
            torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(8)), [1, 500, 999])]
    for name in ("se", "coord"):
        loaded = zoo.load(name, "cpu")
        out.append((name, loaded.model, ["layer1", "layer2", "layer3"], loaded.spec.preprocess(scenes.images[:3]),
                    [int(v) for v in scenes.labels[:3]]))
    return out


def _close(ours, ref, what):
    for i, e in enumerate(ours):
        err = float(np.abs(e - ref[i]).max())
        assert err <= TOL, f"{what}: image {i} differs by {err:.2e}"


# Each equality test runs per case; the default suite keeps it under ten minutes with the SE model, the slow suite
# adds Coordinate Attention and the 224 px ResNet-50 (the library's passes there are most of the time).
EACH_CASE = pytest.mark.parametrize("which", ["se", pytest.param("coord", marks=pytest.mark.slow),
                                              pytest.param("resnet50", marks=pytest.mark.slow)])


@EACH_CASE
def test_eigen_smooth_and_aug_smooth_equal_the_library(cases, which):
    for label, model, layers, x, targets in cases:
        if label != which:
            continue
        layer = model.get_submodule(layers[-1])
        # ResNet-50 at 224 px is the costly case (the library runs six passes for aug_smooth, and eigen_smooth's
        # full SVD at layer4 is 2048 x 2048): one method and two images there, every combination on the zoo models
        big = label == "resnet50"
        x, targets = (x[:2], targets[:2]) if big else (x, targets)
        methods = ((GradCAM, "gradcam"),) if big else \
            ((GradCAM, "gradcam"), (GradCAMPlusPlus, "gradcam++"), (LayerCAM, "layercam"))
        for cls, method in methods:
            for eigen, aug in ((True, False), (False, True)) + (() if big else ((True, True),)):
                with cls(model=model, target_layers=[layer]) as lib:
                    ref = lib(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets],
                              eigen_smooth=eigen, aug_smooth=aug)
                ours = explain_batch(model, x, methods=(method,), targets=targets, layer=layers[-1],
                                     eigen_smooth=eigen, aug_smooth=aug, record=False)
                _close([e.cams[method].heatmap for e in ours], ref, f"{label} {method} eigen={eigen} aug={aug}")
                assert ours[0].options["aug_smooth"] is aug and ours[0].options["eigen_smooth"] is eigen
        assert count_hooks(model) == 0


@EACH_CASE
def test_fused_layers_equal_the_library_with_the_same_target_layers(cases, which):
    for label, model, layers, x, targets in cases:
        if label != which:
            continue
        modules = [model.get_submodule(n) for n in layers]
        for cls, method in ((GradCAM, "gradcam"), (LayerCAM, "layercam")):
            with cls(model=model, target_layers=modules) as lib:
                ref = lib(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
            ours = explain_batch(model, x, methods=(method,), targets=targets, layer=layers, record=False)
            _close([e.cams[method].heatmap for e in ours], ref, f"{label} fused {method}")
            assert ours[0].layer == "+".join(layers)


def test_fused_backward_reaches_only_the_earliest_chosen_layer(resnet50):
    """Parameters before the earliest CAM layer get no gradient graph: autograd starts at layer2's output."""
    seen = []
    handle = resnet50.layer1.register_full_backward_hook(lambda *a: seen.append("layer1"))
    try:
        explain(resnet50, torch.randn(1, 3, 224, 224), layer=["layer2", "layer4"], record=False)
    finally:
        handle.remove()
    assert seen == []


@EACH_CASE
def test_contrast_is_logit_a_minus_logit_b_like_a_library_custom_target(cases, which):
    for label, model, layers, x, targets in cases:
        if label != which:
            continue
        contrasts = [(t + 1) % 3 if label != "resnet50" else (t + 7) % 1000 for t in targets]
        lib_targets = [lambda out, a=a, b=b: out[a] - out[b] for a, b in zip(targets, contrasts)]
        with GradCAM(model=model, target_layers=[model.get_submodule(layers[-1])]) as lib:
            ref = lib(input_tensor=x, targets=lib_targets)
        ours = explain_batch(model, x, methods=("gradcam",), targets=targets, contrast=contrasts, layer=layers[-1],
                             record=False)
        _close([e.cams["gradcam"].heatmap for e in ours], ref, f"{label} contrast")
        assert [e.contrast.index for e in ours] == contrasts


@EACH_CASE
def test_finercam_equals_the_library_by_default_and_with_a_contrast(cases, which):
    for label, model, layers, x, targets in cases:
        if label != which:
            continue
        layer = model.get_submodule(layers[-1])
        with FinerCAM(model=model, target_layers=[layer]) as lib:
            ref_default = lib(x)  # each image's top-1 against its 3 most similar classes
        ours = explain_batch(model, x, methods=("finercam",), layer=layers[-1], record=False)
        _close([e.cams["finercam"].heatmap for e in ours], ref_default, f"{label} finercam default")
        b = [(t + 2) % 3 for t in targets]
        with FinerCAM(model=model, target_layers=[layer]) as lib:
            ref = lib(x, targets=[FinerWeightedTarget(t, [c], 1.0) for t, c in zip(targets, b)])
        ours = explain_batch(model, x, methods=("finercam", "gradcam"), targets=targets, contrast=b,
                             layer=layers[-1], record=False)
        _close([e.cams["finercam"].heatmap for e in ours], ref, f"{label} finercam contrast")


def test_contrast_errors_are_readable():
    with pytest.raises(TargetError, match="is the target itself"):
        explain("baseline", synth.generate(1, seed=3, workers=1).images[0], target="star", contrast="star",
                device="cpu")
    with pytest.raises(TargetError, match="Did you mean"):
        explain("baseline", synth.generate(1, seed=3, workers=1).images[0], contrast="hexagom", device="cpu")
