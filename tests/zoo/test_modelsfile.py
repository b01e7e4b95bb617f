"""models.toml: your own models on the CLI, the page and its API; bad entries are one clear message."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from conftest import PROJECT_ROOT
from safetensors.torch import save_file
from webapp import free_port, wait_until_serving

from attnviz.app import cli
from attnviz.data.examples import EXAMPLES_DIR
from attnviz.data.images import decode_image
from attnviz.errors import ModelsFileError
from attnviz.zoo import modelsfile
from attnviz.zoo import registry as zoo

SCENE = sorted(p for p in EXAMPLES_DIR.glob("*.png") if not p.name.endswith("_mask.png"))[0]
CLASSES = ("cat", "dog", "bird")
GOOD = """
[[model]]
name = "mine"
arch = "timm:resnet18"
checkpoint = "weights/mine.safetensors"
classes = "classes.txt"
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A lab folder: a 3-class timm resnet18 checkpoint (random weights), a classes file and models.toml."""
    folder = tmp_path_factory.mktemp("lab")
    torch.manual_seed(3)
    model = timm.create_model("resnet18", pretrained=False, num_classes=3).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    (folder / "weights").mkdir()
    save_file(model.state_dict(), str(folder / "weights" / "mine.safetensors"))
    (folder / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    (folder / "models.toml").write_text(GOOD)
    return folder, model


def _expected_logits(model: torch.nn.Module) -> np.ndarray:
    spec = zoo.get_spec("mine")
    with torch.no_grad():
        return model(spec.preprocess(decode_image(SCENE)))[0].numpy()


def _env() -> dict[str, str]:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def test_acceptance_explain_with_a_models_file(lab, tmp_path):
    """`python -m attnviz explain IMAGE --models-file models.toml --models mine`, run from another folder."""
    folder, model = lab
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "attnviz", "explain", str(SCENE), "--models-file",
                             str(folder / "models.toml"), "--models", "mine", "--out", str(out), "--npz", "--quiet"],
                            cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert {p.name for p in out.iterdir()} >= {f"{SCENE.stem}_grid.png", f"{SCENE.stem}.json", "predictions.csv",
                                              "scores.csv", f"{SCENE.stem}_maps.npz"}
    modelsfile.load_models_file(folder / "models.toml")  # the same spec in this process, for the reference
    expected = _expected_logits(model)
    with np.load(out / f"{SCENE.stem}_maps.npz") as z:
        np.testing.assert_allclose(z["mine/logits"], expected, rtol=1e-5, atol=1e-5)
        assert z["mine/cam/gradcam/heatmap"].shape == (224, 224)
    report = json.loads((out / f"{SCENE.stem}.json").read_text())
    assert report["models"][0]["model"] == "mine"
    assert report["models"][0]["predictions"][0]["label"] == CLASSES[int(expected.argmax())]


def test_acceptance_the_page_serves_the_models_file_through_app_py_and_the_api(lab, tmp_path):
    """ATTNVIZ_MODELS_FILE -> `python app.py` -> /compare with models="mine" through gradio_client.

    The app runs behind the test network guard (tests/netguard): building the timm model must not try
    the network either.
    """
    from gradio_client import Client, handle_file

    folder, model = lab
    port = free_port()
    log = tmp_path / "net.log"
    env = {k: v for k, v in _env().items() if k != "HF_HUB_OFFLINE"}
    env.update({"ATTNVIZ_MODELS_FILE": str(folder / "models.toml"), "GRADIO_SERVER_PORT": str(port),
                "GRADIO_SERVER_NAME": "127.0.0.1", "ATTNVIZ_TMP": str(tmp_path), "ATTNVIZ_NETLOG": str(log),
                "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT / "tests" / "netguard"), env["PYTHONPATH"]])})
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/", timeout=180)
        config = json.dumps(json.loads(__import__("urllib.request").request.urlopen(
            f"http://127.0.0.1:{port}/config").read()))
        assert "timm:resnet18 (mine.safetensors) (mine)" in config  # in the page's model list
        grid, table, report = Client(f"http://127.0.0.1:{port}/", verbose=False).predict(
            handle_file(str(SCENE)), "mine", "gradcam", "", api_name="/compare")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert not log.exists() or log.read_text() == "", log.read_text()
    assert Path(grid).is_file() and report["models"][0]["model"] == "mine"
    modelsfile.load_models_file(folder / "models.toml")
    np.testing.assert_allclose(np.asarray(report["models"][0]["logits"], np.float32), _expected_logits(model),
                               rtol=1e-5, atol=1e-4)
    assert [row[0] for row in table["data"]][:1] == ["mine"]


def test_the_page_handler_with_models_mine(lab):
    from attnviz.app.web import choices, handlers

    folder, model = lab
    modelsfile.load_models_file(folder / "models.toml")
    _, table, report = handlers.api_compare(str(SCENE), "mine,baseline", "gradcam")
    assert [m["model"] for m in report["models"]] == ["mine", "baseline"]
    assert ("mine", "baseline") == tuple(dict.fromkeys(table["model"]))
    assert "mine" in {value for _, value in choices.model_choices()}


def test_models_lists_and_options_apply(lab, tmp_path, capsys):
    folder, _ = lab
    text = GOOD.replace('classes = "classes.txt"', textwrap.dedent('''\
        classes = "classes.txt"
        layer = "layer3"
        input_size = 160
        mean = [0.5, 0.5, 0.5]
        std = [0.25, 0.25, 0.25]
        interpolation = "bilinear"
        display_name = "Our ResNet-18"'''))
    path = folder / "options.toml"
    path.write_text(text)
    assert cli.main(["models", "--models-file", str(path)]) == 0
    assert "Our ResNet-18" in capsys.readouterr().out
    spec = zoo.get_spec("mine")
    assert (spec.default_layer, spec.input_size, spec.resize_size) == ("layer3", 160, 168)  # crop_pct 0.95 kept
    assert (spec.mean, spec.std, spec.interpolation, spec.source) == ((0.5,) * 3, (0.25,) * 3, "bilinear",
                                                                      "models file")


def _entry(**fields) -> str:
    base = {"name": '"mine"', "arch": '"timm:resnet18"', "checkpoint": '"weights/mine.safetensors"',
            "classes": '"classes.txt"'}
    base.update(fields)
    return "[[model]]\n" + "".join(f"{k} = {v}\n" for k, v in base.items() if v is not None)


BAD = [  # (entry text, field, phrase); the entry is the second one, after a valid "ok" model
    (_entry(name=None), "name", "missing (required: name, arch, checkpoint, classes)"),
    (_entry(checkpiont='"x"'), "checkpiont", "unknown field (did you mean 'checkpoint'?)"),
    (_entry(name='"my model"'), "name", "no spaces or commas"),
    (_entry(name='"ok"'), "name", "already used by [[model]] #1"),
    (_entry(name='"baseline"'), "name", "already a model (bundled zoo)"),
    (_entry(arch='"timm:resnet81"'), "arch", "timm has no model 'resnet81'"),
    (_entry(arch='"resnet_18"'), "arch", "Unknown architecture 'resnet_18'"),
    (_entry(checkpoint='"weights/nothere.safetensors"'), "checkpoint", "no such file"),
    (_entry(arch='"timm:resnet34"'), "checkpoint", "not timm:resnet34. Details: 96 missing key(s)"),
    (_entry(classes='"four.txt"'), "classes", "lists 4 names but the checkpoint has 3 classes"),
    (_entry(layer='"layer9"'), "layer", "Layer 'layer9' is not in timm:resnet18"),
    (_entry(input_size="8"), "input_size", "whole number of pixels from 16 to 2048"),
    (_entry(input_size="true"), "input_size", "whole number of pixels"),
    (_entry(mean="[0.5, 0.5]"), "mean", "three numbers (one per RGB channel)"),
    (_entry(std="[0.2, 0.0, 0.2]"), "std", "three positive numbers"),
    (_entry(interpolation='"lanczos"'), "interpolation", "must be one of bilinear, bicubic"),
    (_entry(arch='"python:attnviz_no_such_module:build"'), "arch", "cannot import attnviz_no_such_module"),
]


@pytest.mark.parametrize("entry,field,phrase", BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_a_bad_entry_is_one_message_naming_the_entry_and_the_field_and_nothing_is_registered(lab, entry, field,
                                                                                              phrase):
    folder, _ = lab
    (folder / "four.txt").write_text("a\nb\nc\nd\n")
    path = folder / "bad.toml"
    path.write_text(_entry(name='"ok"') + "\n" + entry)
    before = {s.name for s in zoo.all_specs()}
    with pytest.raises(ModelsFileError) as info:
        modelsfile.load_models_file(path)
    message = str(info.value)
    assert message.startswith("bad.toml, [[model]] #2") and f"field {field!r}: " in message, message
    assert phrase in message and "\n" not in message
    if field != "name" or "missing" not in phrase:
        assert "[[model]] #2 (" in message  # the entry's name is given when it has one
    assert {s.name for s in zoo.all_specs()} == before  # the valid first entry was not registered either


@pytest.mark.parametrize("text,phrase", [
    ("[[model]\nname = 1", "is not valid TOML"),
    ('title = "x"\n', "unknown top-level key 'title'"),
    ("", "defines no models"),
    ("model = 3\n", "defines no models"),
])
def test_file_level_problems(tmp_path, text, phrase):
    path = tmp_path / "m.toml"
    path.write_text(text)
    with pytest.raises(ModelsFileError, match=phrase):
        modelsfile.read_models_file(path)
    with pytest.raises(ModelsFileError, match="Models file not found"):
        modelsfile.read_models_file(tmp_path / "absent.toml")


def test_serve_does_not_start_half_configured(lab, monkeypatch, capsys):
    from attnviz.app.web import page as ui

    folder, _ = lab
    path = folder / "half.toml"
    path.write_text(_entry(name='"ok"') + "\n" + _entry(name='"second"', layer='"layer9"'))
    monkeypatch.setattr(ui, "launch", lambda **kw: pytest.fail("the server was started"))
    assert cli.main(["serve", "--models-file", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("attnviz: error: half.toml, [[model]] #2 ('second'), field 'layer': ")
    assert len(err.splitlines()) == 1


def test_app_py_exits_with_one_line_on_a_bad_models_file(lab, tmp_path):
    folder, _ = lab
    path = folder / "broken.toml"
    path.write_text(_entry(checkpoint='"weights/nothere.safetensors"'))
    port = free_port()
    env = {**_env(), "ATTNVIZ_MODELS_FILE": str(path), "GRADIO_SERVER_PORT": str(port)}
    result = subprocess.run([sys.executable, "app.py"], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith("attnviz: error: broken.toml, [[model]] #1 ('mine'), "
                                                       "field 'checkpoint': no such file")


def test_eval_refuses_models_that_are_not_benchmark_models(lab, capsys):
    folder, _ = lab
    assert cli.main(["eval", "--models-file", str(folder / "models.toml"), "--n", "1", "--out", "unused"]) == 2
    assert "mine predicts 3 classes, not the benchmark's 11 shapes" in capsys.readouterr().err


def test_python_builders_are_imported_from_the_models_files_folder(tmp_path):
    import torchvision

    (tmp_path / "attnviz_test_labzoo.py").write_text(textwrap.dedent('''
        import torchvision

        def small(num_classes=1000):
            return torchvision.models.resnet18(weights=None, num_classes=num_classes)
    '''))
    torch.manual_seed(0)
    save_file(torchvision.models.resnet18(weights=None, num_classes=2).state_dict(), str(tmp_path / "w.safetensors"))
    (tmp_path / "c.json").write_text('["left", "right"]')
    (tmp_path / "m.toml").write_text(_entry(name='"labnet"', arch='"python:attnviz_test_labzoo:small"',
                                            checkpoint='"w.safetensors"', classes='"c.json"'))
    (spec,) = modelsfile.load_models_file(tmp_path / "m.toml")
    assert spec.class_names == ("left", "right") and spec.default_layer == "layer4"
    assert zoo.load("labnet").model.fc.out_features == 2


def test_the_readme_example_works_as_written_and_with_every_option_uncommented(lab, tmp_path):
    import re

    folder, _ = lab
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme.split("## Your own models on the page", 1)[1]
    example = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    for text in (example, re.sub(r"^# (\w+ = )", r"\1", example, flags=re.M)):
        path = folder / "readme.toml"  # beside weights/mine.safetensors and classes.txt, as the README says
        path.write_text(text)
        (spec,) = modelsfile.read_models_file(path)
        assert spec.name == "mine" and spec.class_names == CLASSES
    assert (spec.default_layer, spec.input_size, spec.resize_size, spec.display_name) == (
        "layer4", 224, 235, "Our ResNet-18")
    assert spec.interpolation == "bicubic" and spec.mean == (0.485, 0.456, 0.406)
    assert "ATTNVIZ_MODELS_FILE=/lab/models.toml" in section and "-v \"$PWD/lab:/lab:ro\"" in section


def test_eval_scores_a_models_file_model_trained_on_the_benchmark_classes(tmp_path):
    import models
    from attnviz.data import synth

    torch.manual_seed(0)
    save_file(models.build("small_resnet_se", num_classes=11).state_dict(), str(tmp_path / "bench.safetensors"))
    (tmp_path / "shapes.txt").write_text("\n".join(synth.CLASS_NAMES))
    (tmp_path / "bench.toml").write_text(_entry(name='"our-se"', arch='"small_resnet_se"',
                                                checkpoint='"bench.safetensors"', classes='"shapes.txt"'))
    out = tmp_path / "results"
    assert cli.main(["eval", "--models-file", str(tmp_path / "bench.toml"), "--n", "3", "--road", "1",
                     "--out", str(out), "--quiet"]) == 0
    result = json.loads((out / "results.json").read_text())
    (row,) = result["models"]
    assert row["model"] == "our-se" and row["attention"] == "se" and "gradcam" in row["maps"]
