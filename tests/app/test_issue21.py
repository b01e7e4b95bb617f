"""Issue 21 without a browser: checkpoint messages (handler, API, CLI), architecture ranking, distinct upload
names, the checkpoint's classes in the target lists, no "vs baseline" across label sets, labelled grids,
peak distance on the diagonal, the CLI's notes, defaults, command lines, output names and tables."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import models
from attnviz.app import cli, pipeline, render
from attnviz.app.batch import output_stems
from attnviz.app.web import choices, handlers, sessions
from attnviz.data.examples import EXAMPLES_DIR
from attnviz.metrics.agreement import diagonal_pct, map_agreement

SCENE = EXAMPLES_DIR / "scene000_hexagon.png"
NOT_A_CHECKPOINT = "not a PyTorch or safetensors checkpoint"


@pytest.fixture
def notes_pth(tmp_path) -> Path:
    path = tmp_path / "notes.pth"
    path.write_text("hello, these are notes\nline two\n" * 20)
    return path


@pytest.fixture
def small_ckpt(tmp_path) -> Path:
    torch.manual_seed(3)
    path = tmp_path / "x.pth"
    torch.save(models.build("small_resnet", 11).state_dict(), path)
    return path


# ---- checkpoints ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,data", [("notes.pth", b"hello\nI am text\n" * 30), ("w.safetensors", b"not json"),
                                       ("x.pt", b"\x80\x02}q\x00"), ("t.pth.tar", b"PK\x03\x04 broken zip")])
def test_a_non_checkpoint_is_one_line_on_the_page_and_the_cli(tmp_path, capsys, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    _, status, _ = handlers.on_load_checkpoint(str(path), "resnet18", None, [])
    assert NOT_A_CHECKPOINT in status and "Not loaded" in status
    for argv in (["checkpoint", "inspect", str(path)],
                 ["explain", str(SCENE), "--arch", "resnet18", "--checkpoint", str(path), "--out",
                  str(tmp_path / "o"), "--quiet"]):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and NOT_A_CHECKPOINT in err[0] and "Traceback" not in err[0], err


def test_a_non_checkpoint_through_the_pages_api(notes_pth):
    from gradio_client import Client, handle_file
    from webapp import running_app

    with running_app() as url:
        _, status = Client(url, verbose=False).predict(handle_file(str(notes_pth)), "resnet18", None, [],
                                                       api_name="/load_checkpoint")
    assert NOT_A_CHECKPOINT in status


def test_a_key_mismatch_leads_with_the_suggestion_on_the_cli(tmp_path, capsys):
    path = tmp_path / "se.pth"
    torch.save(models.build("se_resnet18", 10).state_dict(), path)
    assert cli.main(["checkpoint", "inspect", str(path), "--arch", "resnet18"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("attnviz: error: Choose se_resnet18: this looks like a SE checkpoint")


def test_exact_architecture_names_rank_first():
    ranked = choices.architectures()
    for name in ranked:
        assert next(n for n in ranked if name in n) == name, name   # what typing the name + Enter selects
    assert ranked.index("resnet18") < ranked.index("bam_resnet18")


def test_two_uploads_with_one_stem_get_distinct_names(small_ckpt, tmp_path):
    other = tmp_path / "x.pth.tar"
    other.write_bytes(small_ckpt.read_bytes())
    session = sessions.SessionModels()
    try:
        a = session.add(small_ckpt, "small_resnet")
        b = session.add(other, "small_resnet")
        again = session.add(small_ckpt, "small_resnet")     # the same file name again replaces its model
        assert a.name == "small_resnet@x" and b.name == "small_resnet@x-2" and again.name == a.name
        assert len(session.specs) == 2 and a.display_name != b.display_name
    finally:
        session.release()


def test_the_checkpoints_classes_reach_the_target_lists_and_skip_the_baseline_diff(small_ckpt, tmp_path):
    classes = tmp_path / "classes.txt"
    classes.write_text("\n".join(f"part{i}" for i in range(11)) + "\n")
    update, _, session = handlers.on_load_checkpoint(str(small_ckpt), "small_resnet", str(classes), ["baseline"])
    try:
        selected = update["value"]
        _, _, target, contrast = handlers.on_models_change(selected, None, choices.TOP1, choices.NO_CONTRAST,
                                                           session)
        assert "part3" in target["choices"] and "part3" in contrast["choices"] and "hexagon" in target["choices"]
        result = pipeline.run(pipeline.Request(image=SCENE, models=sessions.resolve(session, selected),
                                               methods=["gradcam"]))
        mine = selected[-1]
        assert mine in result.comparison.not_compared and not any(k[0] == mine for k in result.comparison.agreement)
        assert "other classes" in result.report["not_compared_with_baseline"][mine]
        cells = pipeline.grid_cells(result.comparison)
        assert cells.columns[-1][0] == "vs baseline"
        words = np.asarray(cells.rows[1].cells[-1])
        assert words.std() < 60   # a text cell ("no difference map: it predicts other classes ..."), not a map
    finally:
        session.release()


# ---- labels ---------------------------------------------------------------------------------------------

def test_row_labels_and_legend_say_target_contrast_and_smoothing():
    result = pipeline.run(pipeline.Request(image=SCENE, models=["baseline", "cbam"], methods=["gradcam"],
                                           contrast="ring", eigen_smooth=True))
    cells = pipeline.grid_cells(result.comparison)
    label = cells.rows[0].label
    assert any(line.startswith("target: ") for line in label)
    assert "compared with: ring" in label and "smoothing: eigen" in label
    assert ("attention module", render.GATE_LEGEND) in cells.columns
    legend = " ".join(cells.legend)
    assert "gate value 0–1, absolute" in legend and "red bars = the 5 largest" in legend
    assert "% of the diagonal" in legend
    assert result.grid.shape[:2] == render.grid_shape(2, 1, extra_columns=1)


def test_channel_bars_have_an_axis_and_say_what_red_means():
    chart = render.bar_chart(np.linspace(0, 1, 64), 160, 160, highlight_top=5)
    assert chart.shape == (160, 160, 3)
    left = chart[:, :12]
    assert (left < 128).any(), "the 0 / 1 tick labels are drawn left of the axis"


def test_peak_distance_on_the_diagonal_never_exceeds_100_percent():
    a, b = np.zeros((64, 64), np.float32), np.zeros((64, 64), np.float32)
    a[0, 0], b[63, 63] = 1, 1
    m = map_agreement(a, b)
    assert diagonal_pct(m["peak_distance"], a.shape) == pytest.approx(100.0) and m["peak_distance_pct"] > 100
    result = pipeline.run(pipeline.Request(image=SCENE, models=["baseline", "se"], methods=["gradcam"]))
    numbers = result.comparison.agreement[("se", "gradcam")]
    assert 0 <= numbers["peak_distance_diag_pct"] <= 100


# ---- command line --------------------------------------------------------------------------------------

def test_explain_says_the_out_of_distribution_note_on_stderr(tmp_path, capsys):
    from attnviz.app.web.choices import _skimage_data_dir

    folder = _skimage_data_dir()
    if folder is None or not (folder / "chelsea.png").is_file():
        pytest.skip("scikit-image's photos are not installed")
    assert cli.main(["explain", str(folder / "chelsea.png"), "--models", "baseline", "--methods", "gradcam",
                     "--out", str(tmp_path), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("11 drawn shapes") == 1 and "attnviz: note:" in err


def test_inputs_with_one_name_get_distinct_outputs(tmp_path, capsys):
    from PIL import Image

    for suffix in ("jpg", "webp"):
        Image.open(SCENE).convert("RGB").save(tmp_path / f"a.{suffix}")
    assert output_stems([tmp_path / "a.jpg", tmp_path / "a.webp", tmp_path / "b.png"]) == {
        str(tmp_path / "a.jpg"): "a_jpg", str(tmp_path / "a.webp"): "a_webp", str(tmp_path / "b.png"): "b"}
    out = tmp_path / "out"
    assert cli.main(["explain", str(tmp_path / "a.jpg"), str(tmp_path / "a.webp"), "--models", "baseline",
                     "--methods", "gradcam", "--out", str(out), "--quiet"]) == 0
    assert {p.name for p in out.glob("*_grid.png")} == {"a_jpg_grid.png", "a_webp_grid.png"}


def test_eval_and_sanity_write_to_their_own_folders_and_record_the_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parser = cli.build_parser()
    assert parser.parse_args(["eval"]).out == "attnviz-eval" and parser.parse_args(["sanity"]).out == "attnviz-sanity"
    helptext = parser._subparsers._group_actions[0].choices["eval"].format_help()
    assert "results.json, results.md" in helptext
    argv = ["eval", "--models", "baseline", "--n", "2", "--methods", "gradcam", "--localisation-only", "--quiet"]
    assert cli.main(argv) == 0
    text = (tmp_path / "attnviz-eval" / "results.md").read_text()
    assert "attnviz eval --models baseline --n 2 --methods gradcam --localisation-only --quiet" in text
    argv = ["sanity", "--models", "baseline", "--n", "1", "--methods", "gradcam", "--quiet"]
    assert cli.main(argv) == 0
    assert "attnviz sanity --models baseline --n 1 --methods gradcam --quiet" in \
        (tmp_path / "attnviz-sanity" / "sanity.md").read_text()
    assert json.loads((tmp_path / "attnviz-sanity" / "sanity.json").read_text())["command"].startswith("attnviz")


def test_a_one_model_sanity_plot_keeps_its_legend(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from attnviz.evaluation import sanity

    keys = ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "eigencam", "kpcacam", "finercam",
            "eigengradcam", "gradcamelementwise", sanity.OWN_MAP]
    steps = ["original", "fc", "layer3", "layer2", "layer1", "stem"]
    row = {"model": "cbam", "display_name": "CBAM", "steps": steps,
           "maps": {k: {"spearman": [1, .8, .5, .2, .1, 0], "ssim": [1, .7, .4, .2, .1, 0]} for k in keys}}
    figures = []
    monkeypatch.setattr(Figure, "savefig", lambda self, path, **k: figures.append(self))
    sanity.plot_sanity({"models": [row]}, tmp_path / "s.png")
    fig = figures[0]
    fig.canvas.draw()
    box, legend = fig.bbox, fig.legends[0].get_window_extent()
    assert legend.x0 >= box.x0 - 1 and legend.x1 <= box.x1 + 1 and legend.y1 <= box.y1 + 1, (legend, box)
    axes = fig.axes[0].get_window_extent()
    assert axes.y1 <= legend.y0 + 1, "the legend does not cover the panel"


def test_the_models_table_lines_up(capsys):
    assert cli.main(["models"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if not line.startswith(("devices:", "("))]
    header = lines[0]
    starts = [header.index(word) for word in ("model", "source", "status")]
    for line in lines[1:]:
        for s in starts:
            assert line[s - 2:s] == "  " and line[s] != " ", (line, s)


def test_readme_names_a_scene_file_that_ships():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "attnviz/assets/examples/scene000_hexagon.png" in readme
    assert os.path.isfile(Path(__file__).resolve().parents[2] / "attnviz/assets/examples/scene000_hexagon.png")
