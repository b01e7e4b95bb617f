"""Issue 15, "the page as a newcomer meets it", through the API, the CLI and the page's own functions.

The browser side of the same items is in tests/app/web/test_browser.py. Items: photos get a caveat (1), the
checkpoint widget takes the reader's suffixes (2), the whole bundled zoo in one request (3), uploaded
checkpoints stay in their session (4), display settings re-draw without a model call (5), layer choices
and the attention column (7), dead gates and one log line per user error (9).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import is_valid_file
from PIL import Image
from webapp import running_app

import models
from attnviz import api as engine  # compare / explain live in the API layer since the regroup
from attnviz.app import cli, pipeline, render, report
from attnviz.app.web import choices, downloads, handlers, views
from attnviz.app.web import page as ui
from attnviz.app.web import sessions as uploads
from attnviz.data.examples import EXAMPLES_DIR
from attnviz.results import AttentionMap
from attnviz.zoo import files as ckpt_files
from attnviz.zoo import registry as zoo

SCENES = sorted(p for p in EXAMPLES_DIR.glob("*.png") if not p.name.endswith("_mask.png"))
SCENE = SCENES[0]
STAR = next(p for p in SCENES if p.stem.endswith("_star"))  # SE's layer1.1 gate is exactly 0.5 on it


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """A photo-like input: smooth noise at 320 x 240, not one of the bundled scenes."""
    rng = np.random.default_rng(7)
    small = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("photo") / "holiday.jpg"
    Image.fromarray(small).resize((320, 240), Image.Resampling.BICUBIC).save(path, quality=90)
    return path


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory) -> Path:
    """A released-style ``.pth.tar`` for the compact ResNet (random weights, 11 classes)."""
    torch.manual_seed(3)
    model = models.build("small_resnet", num_classes=11)
    path = tmp_path_factory.mktemp("ckpt") / "my_run.pth.tar"
    torch.save({"state_dict": {"module." + k: v for k, v in model.state_dict().items()}, "epoch": 3}, path)
    return path


@pytest.fixture(scope="module")
def url():
    with running_app() as u:
        yield u


# ---- 1. photos: the out-of-domain note --------------------------------------------------------------

def test_the_note_lists_exactly_the_classes_of_the_bundled_model_cards():
    for name in zoo.bundled():
        classes = zoo.get_spec(name).class_names
        assert f"only {len(classes)} drawn shapes ({', '.join(classes)})" in pipeline.OOD_NOTE
    assert "attnviz weights download" in pipeline.OOD_NOTE and "your own checkpoint" in pipeline.OOD_NOTE


def test_api_report_warns_on_a_photo_and_not_on_a_benchmark_scene(url, photo):
    client = Client(url, verbose=False)
    _, _, on_photo = client.predict(handle_file(str(photo)), "baseline,se", api_name="/compare")
    assert on_photo["warnings"] == [pipeline.OOD_NOTE]
    _, _, on_scene = client.predict(handle_file(str(SCENE)), "baseline,se", api_name="/compare")
    assert on_scene["warnings"] == [] and on_scene["mask_source"] == "benchmark scene"


def test_cli_json_carries_the_same_sentence(tmp_path, photo):
    image_with_mask = tmp_path / "drawn.png"   # any image that comes with its mask counts as a benchmark scene
    Image.open(photo).save(image_with_mask)
    Image.fromarray(np.pad(np.full((40, 40), 255, np.uint8), ((100, 100), (140, 140)))).save(
        tmp_path / "drawn_mask.png")
    code = cli.main(["explain", str(photo), str(SCENE), str(image_with_mask), "--models", "baseline",
                     "--out", str(tmp_path / "out"), "--quiet"])
    assert code == 0
    assert json.loads((tmp_path / "out" / "holiday.json").read_text())["warnings"] == [pipeline.OOD_NOTE]
    assert json.loads((tmp_path / "out" / f"{SCENE.stem}.json").read_text())["warnings"] == []
    assert json.loads((tmp_path / "out" / "drawn.json").read_text())["warnings"] == []


def test_no_note_when_no_bundled_model_is_in_the_request(photo, small_checkpoint):
    session = uploads.SessionModels()
    try:
        spec = session.add(small_checkpoint, "small_resnet")
        result = pipeline.run(pipeline.Request(image=photo, models=[spec]))
        assert result.warnings == [] and result.report["warnings"] == []
    finally:
        session.release()


# ---- 2. the checkpoint widget takes what the reader takes ----------------------------------------------

def test_checkpoint_widget_types_are_the_readers_constant(small_checkpoint):
    app = ui.build_app()
    widget = next(b for b in app.blocks.values() if getattr(b, "elem_id", None) == "checkpoint-file")
    assert widget.file_types == list(ckpt_files.CHECKPOINT_SUFFIXES)
    for name in ("cbam_resnet50.pth.tar", "x.pth", "x.safetensors", "x.PT", "x.bin", "x.ckpt"):
        assert is_valid_file(name, widget.file_types), name   # Gradio's own server-side check
        assert ckpt_files.checkpoint_suffix(name)
    assert set(ckpt_files.read_checkpoint(small_checkpoint)) == set(models.build("small_resnet", 11).state_dict())


# ---- 3. the whole bundled zoo in one request --------------------------------------------------------------

def test_all_bundled_models_compare_in_one_request(url):
    bundled = zoo.bundled()
    assert len(bundled) >= 13 and len(bundled) <= pipeline.MAX_MODELS_PER_REQUEST
    _, table, rep = Client(url, verbose=False).predict(handle_file(str(SCENE)), ",".join(bundled),
                                                       api_name="/compare")
    assert [m["model"] for m in rep["models"]] == bundled
    assert {row[0] for row in table["data"]} == set(bundled)


def test_the_limit_is_said_when_the_model_list_is_full(monkeypatch):
    monkeypatch.setattr(pipeline, "MAX_MODELS_PER_REQUEST", 3)
    below = choices.limit_note(["baseline", "se"])
    full = choices.limit_note(["baseline", "se", "cbam"])
    assert below["visible"] is False
    assert full["visible"] is True and "3 models is the limit per request" in full["value"]


# ---- 4. uploaded checkpoints stay in their session --------------------------------------------------------

def test_a_second_client_does_not_see_the_first_clients_checkpoint(url, small_checkpoint):
    first, second = Client(url, verbose=False), Client(url, verbose=False)
    update, message = first.predict(handle_file(str(small_checkpoint)), "small_resnet", None, ["baseline"],
                                    api_name="/load_checkpoint")
    name = "small_resnet@my_run"
    assert "small_resnet (my_run.pth.tar)" in message          # the user's own file name, not a hash
    assert name in update["value"]
    _, _, rep = first.predict(handle_file(str(SCENE)), f"baseline,{name}", api_name="/compare")
    assert [m["model"] for m in rep["models"]] == ["baseline", name]
    assert rep["models"][1]["display_name"] == "small_resnet (my_run.pth.tar)"
    # the other client: not usable, not listed in the error, not in the page's choices
    with pytest.raises(AppError) as refused:
        second.predict(handle_file(str(SCENE)), f"baseline,{name}", api_name="/compare")
    assert f"Unknown model '{name}'" in str(refused.value)
    assert "Available models: " in str(refused.value) and "my_run" not in str(refused.value).split("Available")[1]
    with pytest.raises(AppError) as typo:
        second.predict(handle_file(str(SCENE)), "resnet9000", api_name="/compare")
    assert "my_run" not in str(typo.value)
    config = json.loads(__import__("urllib.request").request.urlopen(f"{url}config").read())
    assert "my_run" not in json.dumps(config)
    assert name not in [s.name for s in zoo.all_specs()]


def test_session_end_evicts_the_checkpoint_and_deletes_its_file(small_checkpoint):
    session = uploads.SessionModels()
    spec = session.add(small_checkpoint, "small_resnet")
    uploads.track("abc123", session)
    engine.compare([spec, "baseline"], str(SCENE), ("gradcam",))
    assert any(m.spec is spec for m in zoo.loaded_models()) and spec.weights.path.is_file()
    uploads.release_session("abc123")                        # Blocks.unload: the tab closed
    assert not any(m.spec is spec for m in zoo.loaded_models())
    assert not spec.weights.path.exists() and not session.folder.exists()
    assert any(m.spec.name == "baseline" for m in zoo.loaded_models())   # only the session's model left

    other = uploads.SessionModels()
    spec2 = other.add(small_checkpoint, "small_resnet")
    zoo.load(spec2)
    uploads.release_state(other)                             # gr.State's delete_callback (expired state)
    assert not any(m.spec is spec2 for m in zoo.loaded_models()) and not other.folder.exists()
    uploads.release_state(None)                              # a session that never loaded a checkpoint


def test_eviction_leaves_another_sessions_model_of_the_same_name(small_checkpoint):
    a, b = uploads.SessionModels(), uploads.SessionModels()
    try:
        spec_a, spec_b = a.add(small_checkpoint, "small_resnet"), b.add(small_checkpoint, "small_resnet")
        assert spec_a.name == spec_b.name and spec_a is not spec_b
        zoo.load(spec_b)
        assert zoo.evict(spec_a) is False                    # not a's model in the cache: b's stays
        assert any(m.spec is spec_b for m in zoo.loaded_models())
    finally:
        a.release()
        b.release()


# ---- 5. display settings: no model call ---------------------------------------------------------------------

def test_display_settings_redraw_the_stored_comparison_without_a_model_call(monkeypatch, tmp_path):
    result = pipeline.run(pipeline.Request(image=SCENE, models=["baseline", "cbam"]))
    files = downloads.write_downloads(result)
    calls = []
    real_explain = engine.explain
    monkeypatch.setattr(engine, "explain", lambda *a, **k: calls.append(a) or real_explain(*a, **k))
    monkeypatch.setattr(pipeline, "compare", lambda *a, **k: calls.append(a) or engine.compare(*a, **k))
    html, gallery, new_files = handlers.on_display(result.comparison, 0.9, "shared", "viridis", False, "cbam",
                                                   "stage summaries", None, files)
    assert calls == []
    assert "alt='shared colour scale'" in html and html.count("<tr data-model=") == 2
    # the downloadable PNG follows: the colour bar column appeared (beside the "vs baseline" column)
    png = np.asarray(Image.open(new_files[0]).convert("RGB"))
    assert png.shape[:2] == render.grid_shape(2, 2, shared_scale=True, extra_columns=1)
    assert np.array_equal(png, pipeline.render_grid(result.comparison, opacity=0.9, shared_scale=True,
                                                    cmap="viridis"))
    assert gallery and new_files[1:] == files[1:] and new_files[0] != files[0]
    dark, _, _ = handlers.on_display(result.comparison, 0.9, "shared", "viridis", True, "cbam", "stage summaries",
                                     None, files)
    assert dark != html   # placeholders and charts on the dark page's own background
    cells = pipeline.grid_cells(result.comparison, dark=True)
    assert tuple(cells.rows[0].cells[-2][0, 0]) == render.DARK.muted_paper   # the baseline's "no attention module"
    assert calls == []


# ---- 7. layers -----------------------------------------------------------------------------------------------

def test_layer_choices_are_the_layers_the_selected_models_share():
    assert choices.layer_choices(["baseline", "se"]) == [choices.DEFAULT_LAYER, "layer1", "layer2", "layer3"]
    assert choices.layer_choices(["cc"]) == [choices.DEFAULT_LAYER, "layer1", "layer2", "layer3", "cc3"]
    assert "cc3" not in choices.layer_choices(["baseline", "cc"])
    assert "danet3" not in choices.layer_choices(["cc", "danet"])
    update, _, _, _ = handlers.on_models_change(["baseline", "se"], "cc3", choices.TOP1, choices.NO_CONTRAST, None)
    assert update["value"] == [choices.DEFAULT_LAYER]                     # a layer no longer shared falls back


@pytest.mark.parametrize("model,layer,stage,layout", [
    ("se", "layer2", "layer2", "channel"),       # SE's column used to stay at layer3
    ("se", None, "layer3", "channel"),
    ("cbam", "layer1", "layer1", "spatial"),
    ("cc", "cc3", "layer3", "spatial"),
    ("nonlocal", "layer1", "layer2", "spatial"),  # no map at layer1: its only (deepest) one
])
def test_the_attention_column_follows_the_chosen_layer(model, layer, stage, layout):
    c = engine.compare([model], str(SCENE), ("gradcam",), layer=layer)
    amap = render.primary_attention(c.explanations[0])
    assert (amap.stage, amap.layout) == (stage, layout)


# ---- 9. dead gates; server log ------------------------------------------------------------------------------

def test_dead_gate_is_a_pure_function_of_the_map():
    def amap(layout, data):
        return AttentionMap("b", "layer1", "se", "channel", layout, np.asarray(data, np.float32))

    assert report.dead_gate(amap("channel", [0.5] * 32)) == "dead gate: 0.5 on all 32 channels"
    assert report.dead_gate(amap("spatial", np.full((8, 8), 0.25))) == "dead gate: 0.25 on all 64 positions"
    assert report.dead_gate(amap("channel", [0.5] * 31 + [0.51])) == ""
    assert report.dead_gate(amap("channel", [0.7])) == ""                     # one value is no spread
    assert report.dead_gate(amap("matrix", np.ones((3, 3)))) == ""            # not a gate over one axis
    assert report.dead_gate(amap("affinity", np.ones((2, 2, 2, 2)))) == ""


def test_se_dead_excitation_is_labelled_in_report_and_panel():
    result = pipeline.run(pipeline.Request(image=STAR, models=["se", "cbam"]))
    se = next(m for m in result.report["models"] if m["model"] == "se")
    assert [d["block"] for d in se["dead_gates"]] == ["layer1.1.se"]
    assert se["dead_gates"][0]["value"] == 0.5 and "32 channels" in se["dead_gates"][0]["label"]
    captions = [c for _, c in views.attention_gallery(result.comparison, "se", "every block")]
    assert sum("DEAD GATE" in c for c in captions) == 1 and "layer1.1.se" in next(c for c in captions if "DEAD" in c)
    # also among the stage summaries, where it would otherwise be averaged away
    assert any("DEAD GATE" in c for _, c in views.attention_gallery(result.comparison, "se", "stage summaries"))
    assert "layer1.1.se" in views.status_markdown(result)


def test_a_user_error_is_one_log_line_and_no_traceback(url, capfd, caplog):
    caplog.set_level(logging.WARNING, logger="attnviz")
    with pytest.raises(AppError, match="Unknown class 'dodecahedron'"):
        Client(url, verbose=False).predict(handle_file(str(SCENE)), "baseline", "gradcam", "dodecahedron",
                                           api_name="/compare")
    refused = [r for r in caplog.records if "request refused" in r.getMessage()]
    assert len(refused) == 1 and "dodecahedron" in refused[0].getMessage()
    assert "Traceback" not in capfd.readouterr().err


def test_a_real_fault_keeps_its_traceback(monkeypatch, caplog):
    import gradio as gr

    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(pipeline, "run", broken)
    with pytest.raises(gr.Error, match="Something went wrong \\(RuntimeError\\)"):
        handlers.api_compare(str(SCENE), "baseline")
    faults = [r for r in caplog.records if r.exc_info]
    assert faults and "boom" in str(faults[0].exc_info[1])


# ---- 10. memory: heavy modules only where used ----------------------------------------------------------------

def test_building_the_page_imports_neither_timm_nor_scikit_image():
    """Listing the models and the examples must not import timm (+23 MB RSS, BENCHMARKS.md) or scikit-image;
    RSS itself is measured by benchmarks/memory.py, not in a test."""
    import subprocess
    import sys

    from conftest import PROJECT_ROOT

    code = ("import sys, attnviz.app.web.page as ui; app = ui.build_app(); from attnviz.app.web.choices import example_inputs; paths, labels = example_inputs(); "
            "assert any(l.startswith('photo:') for l in labels), labels; "
            "print(sorted(m for m in ('timm', 'skimage') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "GRADIO_ANALYTICS_ENABLED": "False"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
