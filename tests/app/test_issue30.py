"""Issue 30 without a browser: refusals that leave the page usable (1), mixed model kinds (3), the unknown-class
message (4), saved grids without missing-glyph boxes (5), fused layers and the attention column (6), and the
`explain DIR` subfolder listing (9).

The browser side of 1 and 3 is in tests/app/web/test_browser_issue30.py.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import PROJECT_ROOT
from PIL import ImageFont

from attnviz import api
from attnviz.app import batch, pipeline, render
from attnviz.app.render import draw
from attnviz.app.web import choices, handlers
from attnviz.data.examples import EXAMPLES_DIR
from attnviz.errors import TargetError

SCENE = sorted(p for p in EXAMPLES_DIR.glob("*.png") if not p.name.endswith("_mask.png"))[0]


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "attnviz", *args], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=timeout)


def _page_compare(image, models, methods, target=choices.TOP1, layer=None):
    return handlers.on_compare(image, models, methods, target, layer or [choices.DEFAULT_LAYER], 0.5, "per model",
                               "jet", None, False, None, None, [], progress=None)


# ---- 1. a refusal is a line beside Compare, not an exception ----------------------------------------------

@pytest.mark.parametrize("image, models, methods, target, says", [
    (None, ["baseline"], ["gradcam"], choices.TOP1, "Upload an image"),
    (str(SCENE), ["baseline", "se"], ["gradcam"], "zebra", "Unknown class 'zebra'"),
    (str(SCENE), ["baseline", "se"], ["rollout"], choices.TOP1, "cannot run on any of the selected models"),
])
def test_page_refusals_return_one_line_and_leave_the_results_alone(image, models, methods, target, says):
    out = _page_compare(image, models, methods, target)
    assert len(out) == handlers.COMPARE_OUTPUTS
    message = out[-1]
    assert message["visible"] is True and message["value"].startswith("**Not compared.**") and says in message["value"]
    assert all(isinstance(o, type(handlers.gr.skip())) for o in out[:-1])


def test_a_comparison_after_a_refusal_hides_the_refusal_line():
    out = _page_compare(str(SCENE), ["baseline"], ["gradcam"])
    assert out[-1]["visible"] is False and "1 model**" in out[1]


# ---- 3. mixed kinds: rollout for the ViT, an explained n/a for the CNN --------------------------------------

def test_compare_gives_the_vit_its_rollout_and_the_cnn_an_explained_na():
    c = api.compare(["baseline", "vit"], str(SCENE), ["gradcam", "rollout"], device="cpu")
    base, vit = c.explanations
    assert set(base.cams) == {"gradcam"} and set(vit.cams) == {"gradcam", "rollout"}
    assert "no transformer attention" in base.unavailable["rollout"] and vit.unavailable == {}
    cells = pipeline.grid_cells(c)
    titles = [t for t, _ in cells.columns]
    column = titles.index("Attention rollout")
    assert cells.rows[0].empty == {column: "n/a: " + base.unavailable["rollout"]} and cells.rows[1].empty == {}
    # the n/a cell is drawn with its text, not left as the "not computed" placeholder
    not_computed = render.text_image(["not computed"], cells.cell, cells.cell, 12, render.LIGHT.muted_paper,
                                     render.LIGHT.muted_ink, center=True)
    assert not np.array_equal(cells.rows[0].cells[column], not_computed)
    # the difference column explains with the first method the baseline has, and the report lists the n/a
    assert titles[-1] == "vs baseline"
    result = pipeline.run(pipeline.Request(image=str(SCENE), models=["baseline", "vit"],
                                           methods=["rollout", "gradcam"], device="cpu"))
    assert result.report["models"][0]["unavailable_methods"] == {"rollout": base.unavailable["rollout"]}
    assert pipeline.grid_cells(result.comparison).columns[-1] == ("vs baseline", "Grad-CAM")


def test_a_method_no_selected_model_can_compute_is_refused_before_any_model_runs(monkeypatch):
    from attnviz.core import engine

    def never(*a, **k):
        raise AssertionError("a model ran")

    monkeypatch.setattr(api, "explain", never)
    with pytest.raises(TargetError, match=r"Attention rollout cannot run on any of the selected models \(baseline, se\)"):
        api.compare(["baseline", "se"], str(SCENE), ["gradcam", "rollout"], device="cpu")
    assert engine.unavailable_methods(api.resolve_model("vit", "cpu").model, ["rollout", "gradcam"]) == {}


def test_explain_alone_still_refuses_rollout_on_a_cnn_and_names_the_model():
    with pytest.raises(TargetError, match=r"Baseline \(baseline\): Attention rollout needs"):
        api.explain("baseline", str(SCENE), ["gradcam", "rollout"], device="cpu")


def test_cli_mixed_kinds_writes_the_good_image(tmp_path):
    out = tmp_path / "out"
    r = run_cli("explain", str(SCENE), "--models", "baseline,vit", "--methods", "gradcam,rollout", "--out", str(out),
                "--quiet")
    assert r.returncode == 0, r.stderr
    assert "skipped" not in r.stderr and "1 of 1 images processed" in r.stderr
    with open(out / "predictions.csv") as f:
        assert {row["model"] for row in csv.DictReader(f)} == {"baseline", "vit"}
    with open(out / "scores.csv") as f:
        scored = {(row["model"], row["map"]) for row in csv.DictReader(f)}
    assert ("vit", "rollout") in scored and ("baseline", "gradcam") in scored and ("baseline", "rollout") not in scored
    report = json.loads((out / f"{SCENE.stem}.json").read_text())
    assert "rollout" in report["models"][0]["unavailable_methods"]


def test_cli_refuses_a_contradictory_command_before_reading_any_image(tmp_path, monkeypatch, capsys):
    from attnviz.app import cli

    read: list[str] = []
    monkeypatch.setattr(batch, "decode_image", lambda p, *a, **k: read.append(str(p)))
    out = tmp_path / "out"
    rc = cli.main(["explain", str(SCENE), "--models", "baseline,se", "--methods", "gradcam,rollout", "--out",
                   str(out), "--quiet", "--workers", "0"])
    assert rc == 2 and read == [] and not out.exists()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot run on any of the selected models (baseline, se)" in err


# ---- 4. the unknown-class message names the model and its classes -------------------------------------------

def test_unknown_class_names_the_model_and_lists_the_choices():
    with pytest.raises(TargetError) as caught:
        api.compare(["baseline", "se"], str(SCENE), ["gradcam"], target="zebra", device="cpu")
    message = str(caught.value)
    assert "Unknown class 'zebra' for Baseline (baseline)." in message
    assert "Its classes: circle, ring, triangle, square, pentagon, hexagon, star, cross, crescent, arrow, heart." \
        in message


def test_a_long_class_list_is_shortened():
    from attnviz.core.engine import resolve_target

    names = [f"class {i}" for i in range(1000)]
    with pytest.raises(TargetError, match=r"for my-net\. Its classes: class 0, .*class 19, \.\.\. \(1000 in all\)\."):
        resolve_target("zebra", names, np.zeros(1000), "my-net")


# ---- 5. saved grid PNGs draw only glyphs their font has ------------------------------------------------------

def _missing_glyphs(text: str, size: int) -> set[str]:
    """Characters of ``text`` that Pillow's built-in font draws as its missing-glyph box."""
    face = ImageFont.load_default(size=size)
    box = face.getmask("\U000F0000")
    box = (box.size, bytes(box))
    out = set()
    for ch in text:
        if ch.isspace():
            continue
        mask = face.getmask(ch)
        if (mask.size, bytes(mask)) == box:
            out.add(ch)
    return out


def test_the_built_in_font_lacks_the_en_dash_so_the_check_can_fail():
    assert _missing_glyphs("0–1", 12) == {"–"}


def test_every_string_a_saved_grid_draws_has_its_glyphs():
    c = api.compare(["baseline", "cbam"], str(SCENE), ["gradcam"], device="cpu")
    for shared in (False, True):
        cells = pipeline.grid_cells(c, shared_scale=shared)
        drawn = [*cells.legend, *(t for col in cells.columns for t in col), *(x for r in cells.rows for x in r.label)]
        assert any("0–1" in line for line in drawn)   # the source text has the dash; the PNG must not show a box
        for line in drawn:
            for size in (11, 12, 13, 14):
                assert _missing_glyphs(draw.drawable(line, size), size) == set(), line
    # the legend as drawn equals the same text written with a hyphen
    assert np.array_equal(render.text_image(["each map 0–1"], 120, 20, 12),
                          render.text_image(["each map 0-1"], 120, 20, 12))


# ---- 6. fused layers: the attention column follows the choice -----------------------------------------------

def test_fused_layers_show_the_attention_of_the_deepest_chosen_stage():
    from attnviz.app.render.attention import primary_attention

    fused = api.explain("cbam", str(SCENE), ["gradcam"], layer=["layer1", "layer2"], device="cpu")
    assert fused.layer == "layer1+layer2"
    assert primary_attention(fused).stage == "layer2"
    default = api.explain("cbam", str(SCENE), ["gradcam"], device="cpu")
    assert primary_attention(default).stage != "layer2"   # so the choice, not a default, picked layer2
    only_first = api.explain("cbam", str(SCENE), ["gradcam"], layer=["layer1"], device="cpu")
    assert primary_attention(only_first).stage == "layer1"


# ---- 9. explain DIR lists its subfolders -------------------------------------------------------------------

def test_explain_dir_lists_subfolders_it_does_not_search(tmp_path):
    (tmp_path / "in" / "more").mkdir(parents=True)
    (tmp_path / "in" / "a.png").write_bytes(SCENE.read_bytes())
    (tmp_path / "in" / "more" / "b.png").write_bytes(SCENE.read_bytes())
    found, unread = batch.collect_inputs([str(tmp_path / "in")])
    assert found == [tmp_path / "in" / "a.png"]
    assert [(p.name, "subfolder" in why) for p, why in unread] == [("more", True)]


# ---- 9. the CLI: a quick model list, eval's closing line and bar, "ROAD: off" -------------------------------

def test_models_lists_without_importing_torch_or_gradio():
    code = ("import sys; from attnviz.app.cli import main; rc = main(['models']); "
            "print('LOADED', sorted(m for m in ('torch', 'gradio', 'torchvision', 'cv2', 'timm') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "LOADED []" in r.stdout
    assert "baseline" in r.stdout and "tv-resnet50" in r.stdout


def test_imagenet_class_names_read_from_torchvision_source_equal_torchvision_metadata():
    from torchvision.models import ResNet50_Weights

    from attnviz.zoo.imagenet import imagenet_classes

    assert imagenet_classes() == tuple(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def test_eval_counts_steps_across_models_says_where_it_wrote_and_road_off(tmp_path, capsys):
    from attnviz.evaluation.run import run_eval

    out = tmp_path / "ev"
    run_eval(models=["baseline", "se"], n=3, methods=("gradcam",), road_scenes=0, faithfulness=False, out=out,
             progress=True)
    err = capsys.readouterr().err
    assert "6/6 image x model steps" in err and "/3 images" not in err
    assert err.rstrip().splitlines()[-1] == f"eval: results in {out}/ (results.md, results.json, results.png, per_image.csv, forest.png)"
    text = (out / "results.md").read_text()
    assert "ROAD: off." in text and "first 0 images" not in text


# ---- 10. a tiny image and an animated GIF get a note ---------------------------------------------------------

def test_a_tiny_image_and_an_animated_gif_are_explained_with_a_note(tmp_path):
    from PIL import Image

    tiny = tmp_path / "dot.png"
    Image.new("RGB", (1, 1), (200, 30, 30)).save(tiny)
    gif = tmp_path / "anim.gif"
    frames = [Image.new("RGB", (64, 48), (40 * k, 90, 160)) for k in range(3)]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    for path, says in ((tiny, "only 1x1 pixels"), (gif, "3 frames")):
        result = pipeline.run(pipeline.Request(image=str(path), models=["baseline"], methods=["gradcam"],
                                               device="cpu"))
        assert any(says in note for note in result.notes), result.notes
    plain = pipeline.run(pipeline.Request(image=str(SCENE), models=["baseline"], methods=["gradcam"], device="cpu"))
    assert plain.notes == []


# ---- 10. polish: captions whole, vs-baseline cells as large as the others ------------------------------------

def _inked_rows(band: np.ndarray, paper) -> np.ndarray:
    return np.flatnonzero((np.abs(band.astype(int) - np.array(paper)).sum(axis=2) > 60).any(axis=1))


def test_chart_captions_and_picture_titles_keep_their_descenders():
    """The channel bars' "128 channels · red: top 5" and a picture's title ("layer3 · ... gypq") are drawn whole:
    ink in their band stops above its last row (before, the band cut through the g / p / y)."""
    from attnviz.app.render.attention import TITLE_H, titled

    chart = render.bar_chart(np.linspace(0, 1, 128), 200, 200, highlight_top=5)
    foot = chart[-14:]                                    # the caption band under the axis
    rows = _inked_rows(foot, draw.LIGHT.paper)
    assert rows.size and rows.max() < foot.shape[0] - 1, rows
    pic = titled(np.zeros((200, 200, 3), np.uint8), "layer3 · spatial gating (gypq)")
    rows = _inked_rows(pic[:TITLE_H], draw.LIGHT.paper)
    assert rows.size and rows.max() < TITLE_H - 1, rows
    for size in (10, 11, 12):                             # the same text in a roomy box: nothing more is drawn
        tight = draw.text_image(["top 5 gypq"], 120, size + 4, size, top=draw.band_top(size + 4, size))
        roomy = draw.text_image(["top 5 gypq"], 120, 60, size, top=20)
        assert (tight < 128).sum() == (roomy < 128).sum(), size


def test_a_long_picture_title_is_shortened_from_the_front_to_fit():
    from attnviz.app.render.attention import titled

    title = "blocks.5.attn · head 3 of 12 · class-token attention over every patch"
    band = titled(np.zeros((160, 160, 3), np.uint8), title)[:18]
    assert draw.fit_tail(title, 152, 12).startswith("…") and draw.fit_tail(title, 152, 12).endswith("every patch")
    assert _inked_rows(band.transpose(1, 0, 2), draw.LIGHT.paper).max() < 158   # not cut at the right edge


def test_the_vs_baseline_map_fills_its_cell_like_the_other_columns():
    """The difference map is as wide as the cell (it was drawn 18 px smaller and centred, so the column looked
    narrower than the others), with its numbers on a band across the bottom, on the dark page's colours too."""
    result = pipeline.run(pipeline.Request(image=SCENE, models=["baseline", "se"], methods=["gradcam"]))
    for dark, palette in ((False, draw.LIGHT), (True, draw.DARK)):
        cells = pipeline.grid_cells(result.comparison, dark=dark)
        se = cells.rows[1].cells[-1]
        cam = cells.rows[1].cells[1]
        assert se.shape == cam.shape
        top = se[: se.shape[0] // 2]
        paper = np.array(palette.paper)
        columns = (np.abs(top.astype(int) - paper).sum(axis=2) > 30).any(axis=0)
        assert columns[0] and columns[-1], "the map reaches both edges of the cell"
        band = se[-18:]
        assert np.abs(band.astype(int) - paper).sum(axis=2).mean() < 120   # the numbers' band is the page's colour
