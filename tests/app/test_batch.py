"""The batched core: one pass per chunk equals pytorch-grad-cam on the same batch and explain() image by image."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from conftest import count_hooks
from pytorch_grad_cam import (
    KPCA_CAM,
    EigenCAM,
    EigenGradCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from attnviz import explain, explain_batch
from attnviz.core.methods import CATALOGUE as METHODS
from attnviz.data import synth
from attnviz.errors import AttnvizError
from attnviz.zoo import registry as zoo

LIBRARY = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "xgradcam": XGradCAM, "layercam": LayerCAM,
           "hirescam": HiResCAM, "gradcamelementwise": GradCAMElementWise, "eigengradcam": EigenGradCAM,
           "eigencam": EigenCAM, "kpcacam": KPCA_CAM}
EIGEN = ("eigengradcam", "eigencam", "kpcacam")   # a principal component has no sign of its own


def assert_close_maps(ours: np.ndarray, ref: np.ndarray, method: str, tol: float = 1e-5) -> None:
    """Equal to ``tol``. The Eigen family (EIGEN) projects on a principal component whose sign pytorch-grad-cam does
    not fix; both sides run the same SVD on the same activations, so they agree in sign too, and are held to the
    same tolerance."""
    err = float(np.abs(ours - ref).max())
    assert err <= tol, f"{method}: max difference {err:.2e}"


@pytest.fixture(scope="module")
def scenes() -> synth.Scenes:
    return synth.generate(16, seed=4321, workers=1)


@pytest.fixture(scope="module")
def resnet50() -> torch.nn.Module:
    torch.manual_seed(0)
    return torchvision.models.resnet50().eval()


def _library_maps(model, layer, x, targets, method):
    with LIBRARY[method](model=model, target_layers=[layer]) as reference:
        return reference(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])


GRADIENT_FAMILY = tuple(m for m in LIBRARY if m not in EIGEN)


@pytest.mark.parametrize("methods,n", [
    (GRADIENT_FAMILY, 4),   # batch 16 of every method is the slow suite's (the default suite stays under 10 min)
    (EIGEN, 2),   # the library's SVD at layer4 builds a 2048 x 2048 basis per image
    pytest.param(tuple(LIBRARY), 16, marks=pytest.mark.slow),
], ids=["gradient-family-4", "eigen-family-2", "every-method-16"])
def test_resnet50_batch_every_one_pass_method_equals_library_and_single_image_path(resnet50, methods, n):
    x = torch.randn(16, 3, 224, 224, generator=torch.Generator().manual_seed(3))[:n]
    targets = [int(t) for t in torch.randint(0, 1000, (16,), generator=torch.Generator().manual_seed(4))][:n]
    batch = explain_batch(resnet50, x, methods=methods, targets=targets, layer="layer4", batch_size=16, record=False)
    assert [e.target.index for e in batch] == targets
    for method in methods:
        ref = _library_maps(resnet50, resnet50.layer4, x, targets, method)
        for i, e in enumerate(batch):
            assert_close_maps(e.cams[method].heatmap, ref[i], method)
    for i in sorted({0, n // 2, n - 1}):  # the one-image path gives the same maps (explain() is the batch of one)
        single = explain(resnet50, x[i:i + 1], methods=methods, target=targets[i], layer="layer4", record=False)
        for method in methods:
            assert_close_maps(single.cams[method].heatmap, batch[i].cams[method].heatmap, method)
        np.testing.assert_allclose(single.logits, batch[i].logits, atol=1e-4)
    assert count_hooks(resnet50) == 0


@pytest.mark.parametrize("name", ["cbam", "triplet"])
def test_bundled_models_batch_equals_library_per_image_targets(scenes, name):
    loaded = zoo.load(name, "cpu")
    x = loaded.spec.preprocess(scenes.images[:8])
    targets = [int(v) for v in scenes.labels[:8]]
    methods = tuple(LIBRARY)
    batch = explain_batch(loaded, x, methods=methods, targets=targets, batch_size=8)
    layer = loaded.model.get_submodule(loaded.spec.default_layer)
    for method in methods:
        ref = _library_maps(loaded.model, layer, x, targets, method)
        for i, e in enumerate(batch):
            assert_close_maps(e.cams[method].heatmap, ref[i], method)


@pytest.mark.parametrize("name", zoo.bundled())
def test_every_bundled_model_batch_equals_image_by_image(scenes, name):
    """Eval-mode samples do not interact, so the backward of the summed scores gives each sample its own exact
    gradient — also through DANet's, MHSA's and Non-local's position mixing, which stays within a sample."""
    images = list(scenes.images[:5])
    methods = ("gradcam", "gradcam++", "layercam", "hirescam", "gradcamelementwise")
    batch = explain_batch(name, images, methods=methods, batch_size=3, device="cpu")  # chunks of 3 + 2
    assert len(batch) == 5
    for image, e in zip(images, batch):
        single = explain(name, image, methods=methods, device="cpu")
        assert [p.index for p in single.predictions] == [p.index for p in e.predictions]
        assert single.target.index == e.target.index
        np.testing.assert_allclose([p.probability for p in single.predictions],
                                   [p.probability for p in e.predictions], atol=1e-6)
        np.testing.assert_allclose(single.logits, e.logits, atol=1e-4)
        for m in methods:
            np.testing.assert_allclose(single.cams[m].heatmap, e.cams[m].heatmap, atol=1e-5, err_msg=m)
            np.testing.assert_allclose(single.cams[m].raw, e.cams[m].raw, rtol=1e-4, atol=1e-6, err_msg=m)
        assert [(a.block, a.name) for a in single.attention_maps] == [(a.block, a.name) for a in e.attention_maps]
        for a, b in zip(single.attention_maps, e.attention_maps):
            # float32 convolutions pick batch-size-dependent kernels: ~1e-6 differences in the logits of a peaked
            # softmax show as up to ~2e-5 in its weights; samples that interacted would differ by orders more
            np.testing.assert_allclose(a.data, b.data, atol=1e-4, err_msg=a.label)


def test_targets_none_one_for_all_or_per_image_and_readable_errors(scenes):
    images = list(scenes.images[:3])
    top1 = explain_batch("baseline", images, device="cpu")
    assert [e.target.index for e in top1] == [e.top1.index for e in top1]
    assert [e.target.label for e in explain_batch("baseline", images, targets="star", device="cpu")] == ["star"] * 3
    per = explain_batch("baseline", images, targets=[0, "ring", 2], device="cpu")
    assert [e.target.index for e in per] == [0, 1, 2]
    with pytest.raises(AttnvizError, match="2 targets given for 3 images"):
        explain_batch("baseline", images, targets=[0, 1], device="cpu")
    with pytest.raises(AttnvizError, match=r"\(N, 3, H, W\)"):
        explain_batch(torch.nn.Identity(), torch.zeros(3, 8, 8))
    with pytest.raises(AttnvizError, match="batch_size"):
        explain_batch("baseline", images, batch_size=0)


def test_paths_decode_like_arrays_and_results_are_cpu_numpy(tmp_path, scenes):
    import cv2

    paths = []
    for i in range(2):
        p = tmp_path / f"s{i}.png"
        cv2.imwrite(str(p), cv2.cvtColor(scenes.images[i], cv2.COLOR_RGB2BGR))
        paths.append(str(p))
    from_paths = explain_batch("se", paths, device="cpu")
    from_arrays = explain_batch("se", list(scenes.images[:2]), device="cpu")
    for a, b in zip(from_paths, from_arrays):
        np.testing.assert_array_equal(a.cams["gradcam"].heatmap, b.cams["gradcam"].heatmap)
        assert isinstance(a.logits, np.ndarray) and a.device == "cpu"
        assert all(isinstance(m.data, np.ndarray) for m in a.attention_maps)


def test_method_registry_covers_the_library_classes():
    assert {m: METHODS[m].resolve() for m in LIBRARY} == LIBRARY
    assert not METHODS["eigencam"].gradients and not METHODS["kpcacam"].gradients
