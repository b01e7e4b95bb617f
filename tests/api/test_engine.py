"""The one-pass CAM engine: equal to pytorch-grad-cam, thread-safe, hook-clean, readable errors."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from conftest import count_hooks
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import models
from attnviz import compare, explain
from attnviz.errors import AttnvizError, TargetError
from attnviz.zoo import registry as zoo

LIBRARY = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "xgradcam": XGradCAM,
           "layercam": LayerCAM, "hirescam": HiResCAM}
ALL_ONE_PASS = tuple(LIBRARY)

CASES = [  # (architecture, CAM layer, input side, classes)
    ("resnet50", "layer4", 224, 1000),
    ("resnet50", "layer3", 224, 1000),
    ("mobilenet_v2", "features.18", 224, 1000),
    ("small_resnet_cbam", "layer3", 128, 11),
    ("triplet_resnet18", "layer4", 160, 10),
]


@pytest.fixture(scope="module")
def nets() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {arch: models.build(arch, num_classes=k).eval() for arch, _, _, k in CASES}


@pytest.mark.parametrize("arch,layer,side,classes", CASES, ids=[f"{a}-{lay}" for a, lay, _, _ in CASES])
def test_every_one_pass_method_equals_pytorch_grad_cam(nets, arch, layer, side, classes):
    model = nets[arch]
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(side))
    for target in (None, 3):
        ours = explain(model, x, methods=ALL_ONE_PASS, layer=layer, target=target)
        expected_target = ours.target.index if target is None else target
        if target is None:
            assert expected_target == int(model(x).argmax())
        for method, cls in LIBRARY.items():
            with cls(model=model, target_layers=[model.get_submodule(layer)]) as reference:
                ref = reference(input_tensor=x, targets=[ClassifierOutputTarget(expected_target)])[0]
            heat = ours.cams[method].heatmap
            assert heat.shape == (side, side) and heat.dtype == np.float32
            assert float(np.abs(heat - ref).max()) <= 1e-5, method
    assert count_hooks(model) == 0


def test_raw_maps_keep_relative_scale_and_heatmap_is_normalised(nets):
    model = nets["small_resnet_cbam"]
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    e = explain(model, x, methods=("gradcam", "layercam"), layer="layer3")
    for cam in e.cams.values():
        assert cam.heatmap.min() >= 0 and cam.heatmap.max() <= 1 + 1e-6
        assert cam.raw.shape == (128, 128) and cam.raw.min() >= 0
        assert cam.layer_map.shape == (8, 8)
        if cam.layer_map.max() > 0:  # the un-normalised map is not rescaled to [0, 1]
            assert not np.isclose(cam.layer_map.max(), 1.0)


def test_explain_reports_topk_target_timings_and_logits(nets):
    model = nets["small_resnet_cbam"]
    x = torch.randn(1, 3, 128, 128)
    e = explain(model, x, layer="layer3", topk=5, class_names=[f"shape{i}" for i in range(11)])
    probs = [p.probability for p in e.predictions]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True)
    assert e.target == e.predictions[0]
    assert e.predictions[0].label == f"shape{int(np.argmax(e.logits))}"
    assert set(e.timings) >= {"forward", "backward", "cams", "total"}
    assert list(e.cams) == ["gradcam", "gradcam++"]


def test_target_by_name_and_readable_target_errors(nets):
    model = nets["small_resnet_cbam"]
    x = torch.randn(1, 3, 128, 128)
    names = ["circle", "ring", "triangle", "square", "pentagon", "hexagon", "star", "cross", "crescent", "arrow", "heart"]
    assert explain(model, x, layer="layer3", target="Hexagon", class_names=names).target.index == 5
    with pytest.raises(TargetError, match="Did you mean: hexagon"):
        explain(model, x, layer="layer3", target="hexagom", class_names=names)
    with pytest.raises(TargetError, match="out of range"):
        explain(model, x, layer="layer3", target=11, class_names=names)
    with pytest.raises(TargetError, match="not in this model"):
        explain(model, x, layer="layer9")
    with pytest.raises(AttnvizError, match="Unknown CAM method"):
        explain(model, x, layer="layer3", methods=("gradcam", "smoothgrad"))
    with pytest.raises(AttnvizError, match="preprocessed"):
        explain(model, np.zeros((8, 8, 3), np.uint8), layer="layer3")
    assert count_hooks(model) == 0


def test_method_names_are_normalised_and_slow_methods_run_through_the_library(nets):
    model = nets["small_resnet_cbam"]
    x = torch.randn(1, 3, 128, 128)
    e = explain(model, x, layer="layer3", methods=("Grad-CAM++", "eigencam", "scorecam"))
    assert list(e.cams) == ["gradcam++", "eigencam", "scorecam"]
    for m in ("eigencam", "scorecam"):
        assert e.cams[m].heatmap.shape == (128, 128)
        assert 0 <= e.cams[m].heatmap.min() and e.cams[m].heatmap.max() <= 1 + 1e-6
    assert e.warnings and count_hooks(model) == 0


def _register_random(arch: str, name: str, classes: int = 11) -> str:
    zoo.register(zoo.random_spec(arch, classes, name=name, input_size=128, resize_size=128), replace=True)
    return name


def test_eight_threads_on_shared_models_equal_serial_and_leave_no_hooks():
    names = [_register_random("small_resnet_triplet", "t-triplet"), _register_random("small_resnet_coord", "t-coord")]
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (128, 128, 3), dtype=np.uint8) for _ in range(8)]
    methods = ("gradcam", "gradcam++", "layercam")
    serial = [[explain(n, im, methods) for n in names] for im in images]
    results: list = [None] * 8
    errors: list = []
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        try:
            barrier.wait()
            results[i] = [explain(n, images[i], methods) for n in names]
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got, want in zip(results, serial):
        for g, w in zip(got, want):
            assert g.target == w.target
            np.testing.assert_array_equal(g.logits, w.logits)
            for m in methods:
                np.testing.assert_array_equal(g.cams[m].heatmap, w.cams[m].heatmap)
            assert [a.name for a in g.attention_maps] == [a.name for a in w.attention_maps]
            for a, b in zip(g.attention_maps, w.attention_maps):
                np.testing.assert_array_equal(a.data, b.data)
    for loaded in zoo.loaded_models():
        assert count_hooks(loaded.model) == 0


def test_compare_runs_models_with_shared_class_name_target_and_reports_progress():
    names = [_register_random("small_resnet", "t-base"), _register_random("small_resnet_se", "t-se")]
    image = np.random.default_rng(1).integers(0, 255, (150, 200, 3), dtype=np.uint8)
    seen = []
    c = compare(names, image, methods=("gradcam",), target="class_4", progress=lambda i, n, name: seen.append((i, n)))
    assert [e.target.index for e in c.explanations] == [4, 4]
    assert c.image.shape == (150, 200, 3)
    assert all(e.image.shape == (128, 128, 3) for e in c.explanations)  # centre crop after shorter-side resize
    assert seen[0] == (0, 2) and seen[-1] == (2, 2)
    with pytest.raises(AttnvizError, match="at least one model"):
        compare([], image)


class _Boom(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


def test_hooks_are_removed_when_the_forward_raises():
    model = models.build("small_resnet_cbam", num_classes=11).eval()
    model.fc = _Boom()  # fails after the CAM layer and after every attention gate has fired
    with pytest.raises(RuntimeError, match="boom"):
        explain(model, torch.randn(1, 3, 128, 128), layer="layer3")
    assert count_hooks(model) == 0
    assert torch.is_grad_enabled()  # the engine's grad-mode switch does not leak out either
