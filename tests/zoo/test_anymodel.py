"""Any architecture by name: timm:<name> and python:module:function checkpoints on the CLI, page and API."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import save_file

from attnviz.api import explain
from attnviz.app import cli
from attnviz.data.examples import EXAMPLES_DIR
from attnviz.data.images import decode_image
from attnviz.errors import CheckpointError
from attnviz.zoo import architectures, checkpoints
from attnviz.zoo import registry as zoo

SCENE = sorted(p for p in EXAMPLES_DIR.glob("*.png") if not p.name.endswith("_mask.png"))[0]


def _timm_file(tmp_path: Path, name: str, num_classes: int, seed: int = 0, **kwargs) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs).eval()
    for m in model.modules():  # non-trivial BN statistics, so a wrong load would change the logits
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    path = tmp_path / f"{name}-{num_classes}.safetensors"
    save_file(model.state_dict(), str(path))
    return path, model


# ---- names ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,message", [
    ("timm:resnet81", "timm has no model 'resnet81'. Did you mean: timm:resnet18"),
    ("timm:hf-hub:timm/resnet18", "is not a timm model name"),
    ("timm:local-dir:/tmp/x", "is not a timm model name"),
    ("python:not a target", "must look like python:package.module:function"),
    ("cbam_resnet05", "Unknown architecture 'cbam_resnet05'. Did you mean: cbam_resnet50"),
    ("", "No architecture given"),
])
def test_bad_architecture_names_are_one_readable_line(text, message):
    with pytest.raises(CheckpointError, match=message.replace("(", r"\(").replace(".", r"\.")) as info:
        architectures.parse_arch(text)
    assert "\n" not in str(info.value) and info.value.field == "arch"


def test_timm_models_are_built_without_downloading(monkeypatch):
    calls = []
    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: calls.append(k) or real(*a, **k))
    model = architectures.build("timm:resnet18.a1_in1k", num_classes=4)
    assert calls == [{"pretrained": False, "num_classes": 4}]
    assert model.fc.out_features == 4


# ---- timm checkpoints ---------------------------------------------------------------------------------

def test_timm_checkpoint_through_the_cli_gives_the_models_own_logits_and_timm_preprocessing(tmp_path):
    path, reference = _timm_file(tmp_path, "resnet18", 3)
    (tmp_path / "c.txt").write_text("cat\ndog\nbird\n")
    out = tmp_path / "out"
    code = cli.main(["explain", str(SCENE), "--arch", "timm:resnet18", "--checkpoint", str(path), "--classes",
                     str(tmp_path / "c.txt"), "--out", str(out), "--methods", "gradcam", "--npz", "--quiet"])
    assert code == 0
    spec = zoo.get_spec(f"timm:resnet18@{path.stem}")
    # timm's evaluation transform for resnet18: bicubic, crop_pct 0.95 -> shorter side floor(224 / 0.95)
    assert (spec.input_size, spec.resize_size, spec.interpolation) == (224, 235, "bicubic")
    assert spec.class_names == ("cat", "dog", "bird") and spec.default_layer == "layer4"
    with torch.no_grad():
        expected = reference(spec.preprocess(decode_image(SCENE)))[0].numpy()
    with np.load(out / f"{SCENE.stem}_maps.npz") as z:
        np.testing.assert_allclose(z[f"{spec.name}/logits"], expected, rtol=1e-5, atol=1e-5)
    report = json.loads((out / f"{SCENE.stem}.json").read_text())
    assert report["models"][0]["predictions"][0]["label"] == ("cat", "dog", "bird")[int(expected.argmax())]


@pytest.mark.parametrize("name,classes,layer", [
    ("vit_tiny_patch16_224", 5, "blocks.11.norm1"),
    ("deit_tiny_distilled_patch16_224", 4, "blocks.11.norm1"),  # two heads: head and head_dist
    ("swin_tiny_patch4_window7_224", 6, "layers.3.blocks.1.norm1"),
])
def test_transformer_checkpoints_read_their_class_count_from_the_head_and_name_the_right_layer(tmp_path, name,
                                                                                               classes, layer):
    path, reference = _timm_file(tmp_path, name, classes)
    spec = checkpoints.checkpoint_spec(f"timm:{name}", path)
    assert spec.num_classes == classes and spec.default_layer == layer
    assert spec.attention == ("swin" if "swin" in name else "vit")
    loaded = zoo.load(spec).model
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), reference(x))


def test_wrong_timm_architecture_is_a_readable_diff_and_nothing_is_allocated_for_it(tmp_path, monkeypatch):
    path, _ = _timm_file(tmp_path, "resnet18", 3)
    devices = []
    real = architectures.build

    def spy(arch, num_classes=None):
        model = real(arch, num_classes)
        devices.append(next(model.parameters()).device.type)
        return model

    monkeypatch.setattr(architectures, "build", spy)
    with pytest.raises(CheckpointError) as info:
        checkpoints.checkpoint_spec("timm:resnet34", path)
    message = str(info.value)
    assert message.startswith("Choose resnet18: this looks like a plain checkpoint") and "not timm:resnet34. Details: " in message
    assert "missing key(s): layer1.2.bn1.bias" in message and info.value.field == "checkpoint"
    assert devices and set(devices) == {"meta"}  # keys and shapes were compared on the meta device only


def test_the_page_takes_a_typed_timm_architecture(tmp_path):
    from attnviz.app.web import handlers as ui

    path, reference = _timm_file(tmp_path, "resnet18", 3, seed=2)
    update, message, session = ui.on_load_checkpoint(str(path), "timm:resnet18", None, ["baseline"])
    name = update["value"][-1]   # this browser session's own model (issue 15: never registered server-wide)
    assert name != "baseline" and "strict key match with timm:resnet18" in message
    _, _, report = ui.api_compare(str(SCENE), name, "gradcam", "", session)
    (spec,) = session.resolve([name])
    with torch.no_grad():
        expected = reference(spec.preprocess(decode_image(SCENE)))[0].numpy()
    np.testing.assert_allclose(np.asarray(report["models"][0]["logits"], np.float32), expected, rtol=1e-5, atol=1e-4)
    converted = ui.on_convert_checkpoint(str(path), "timm:resnet18")
    assert Path(converted["value"]).suffix == ".safetensors" and converted["visible"] is True


def test_the_page_refuses_python_architectures(tmp_path):
    import gradio as gr

    from attnviz.app.web import handlers as ui

    path, _ = _timm_file(tmp_path, "resnet18", 3)
    _, status, _ = ui.on_load_checkpoint(str(path), "python:os:getcwd", None, [])   # said in the checkpoint box
    assert "Not loaded" in status and "only accepted from the command line or a models file" in status
    with pytest.raises(gr.Error) as info:
        ui.on_convert_checkpoint(str(path), "python:os:getcwd")
    assert "only accepted from the command line or a models file" in info.value.message


# ---- python: builders ------------------------------------------------------------------------------

MODULE = textwrap.dedent('''
    import torchvision
    from torch import nn

    def build(num_classes=10):
        return torchvision.models.resnet18(weights=None, num_classes=num_classes)

    def fixed():
        return torchvision.models.mobilenet_v2(weights=None, num_classes=3)

    def not_a_module():
        return "resnet"

    def broken(num_classes=10):
        raise RuntimeError("the lab's builder failed")

    def pooled(num_classes=3):
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, num_classes))

    VALUE = 3
''')


@pytest.fixture()
def lab_module(tmp_path):
    folder = tmp_path / "labcode"
    folder.mkdir()
    (folder / "attnviz_test_labnets.py").write_text(MODULE)
    return folder


def test_python_builder_with_and_without_num_classes(tmp_path, lab_module):
    import torchvision

    torch.manual_seed(0)
    ref = torchvision.models.resnet18(weights=None, num_classes=5).eval()
    save_file(ref.state_dict(), str(tmp_path / "r.safetensors"))
    spec = checkpoints.checkpoint_spec("python:attnviz_test_labnets:build", tmp_path / "r.safetensors",
                                       search_path=lab_module)
    assert spec.num_classes == 5 and spec.default_layer == "layer4" and spec.input_size == 224
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(zoo.load(spec).model(x), ref(x))

    torch.manual_seed(1)
    fixed = torchvision.models.mobilenet_v2(weights=None, num_classes=3).eval()
    save_file(fixed.state_dict(), str(tmp_path / "m.safetensors"))
    spec = checkpoints.checkpoint_spec("python:attnviz_test_labnets:fixed", tmp_path / "m.safetensors",
                                       search_path=lab_module)
    assert spec.num_classes == 3 and spec.default_layer == "features.18"
    e = explain(spec, np.full((200, 260, 3), 90, np.uint8), methods=("gradcam",))
    assert e.cams["gradcam"].heatmap.shape == (224, 224)


@pytest.mark.parametrize("target,message", [
    ("python:attnviz_no_such_module:build", "cannot import attnviz_no_such_module (ModuleNotFoundError"),
    ("python:attnviz_test_labnets:nothing", "module attnviz_test_labnets has no attribute 'nothing'"),
    ("python:attnviz_test_labnets:VALUE", "is a int, not a function"),
    ("python:attnviz_test_labnets:not_a_module", "returned a str, not a torch.nn.Module"),
    ("python:attnviz_test_labnets:broken", "raised RuntimeError: the lab's builder failed"),
])
def test_python_builder_errors_are_one_line(tmp_path, lab_module, target, message):
    path, _ = _timm_file(tmp_path, "resnet18", 3)
    with pytest.raises(CheckpointError) as info:
        checkpoints.checkpoint_spec(target, path, search_path=lab_module)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert str(info.value).startswith(target) and info.value.field == "arch"


def test_a_network_without_a_spatial_layer_needs_a_named_layer(tmp_path, lab_module):
    from torch import nn

    net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3))
    save_file(net.state_dict(), str(tmp_path / "p.safetensors"))
    with pytest.raises(CheckpointError, match="no layer with a spatial") as info:
        checkpoints.checkpoint_spec("python:attnviz_test_labnets:pooled", tmp_path / "p.safetensors",
                                    search_path=lab_module)
    assert info.value.field == "layer"
    spec = checkpoints.checkpoint_spec("python:attnviz_test_labnets:pooled", tmp_path / "p.safetensors",
                                       search_path=lab_module, layer="0")
    assert spec.default_layer == "0" and spec.num_classes == 3


def test_explain_a_timm_vit_checkpoint_with_no_layer_and_no_reshape(tmp_path):
    path, _ = _timm_file(tmp_path, "vit_tiny_patch16_224", 5)
    spec = checkpoints.checkpoint_spec("timm:vit_tiny_patch16_224", path)
    e = explain(spec, np.full((240, 300, 3), 120, np.uint8), methods=("gradcam",))
    assert e.layer == "blocks.11.norm1" and e.cams["gradcam"].heatmap.shape == (224, 224)


@pytest.mark.parametrize("tagged", ["deit_small_patch16_224.fb_in1k", "vit_small_patch16_224.augreg_in1k",
                                    "resnet18.a1_in1k"])
def test_timm_preprocessing_is_exactly_timms_evaluation_transform(tagged):
    from PIL import Image

    from attnviz.core.specs import ModelSpec, WeightsSource

    pre = architectures.timm_preprocessing(tagged)
    spec = ModelSpec("t", "t", "none", lambda: None, WeightsSource(), ("a",), input_size=pre.input_size,
                     resize_size=pre.resize_size, mean=pre.mean, std=pre.std, interpolation=pre.interpolation)
    cfg = timm.data.resolve_data_config({}, pretrained_cfg=timm.models.get_pretrained_cfg(tagged).to_dict())
    transform = timm.data.create_transform(**cfg)
    rng = np.random.default_rng(0)
    for shape in [(300, 451, 3), (517, 263, 3), (150, 180, 3)]:  # wide, tall, smaller than the resize
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        torch.testing.assert_close(spec.preprocess(image)[0], transform(Image.fromarray(image)), rtol=0, atol=1e-6)
