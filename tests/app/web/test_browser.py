"""The page in a real browser: Debian's Chromium driven by Playwright (no browser download).

One server and one browser for the module. Every wait is on visible text or an element, with generous
timeouts, so a slow shared machine only makes the tests slower. Screenshots go to test-output/.
"""
from __future__ import annotations

import gc
import io
import json
import time
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from playwright.sync_api import expect
from webapp import running_app

import models
from attnviz import api as engine  # compare / explain live in the API layer since the regroup
from attnviz.app import pipeline
from attnviz.data.examples import EXAMPLES_DIR
from attnviz.zoo import registry as zoo

SCENES = sorted(p for p in EXAMPLES_DIR.glob("*.png") if not p.name.endswith("_mask.png"))
SLOW = 180_000   # ms: a comparison on a busy 2-core machine
WAIT = 60_000

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def url():
    with running_app(heartbeat_s=0.5) as u:   # a closed tab is noticed within a second
        yield u


@pytest.fixture
def model_calls(monkeypatch):
    """Every model run of the page goes through pipeline.compare -> engine.explain: count both."""
    calls: list[str] = []
    real_compare, real_explain = pipeline.compare, engine.explain

    def compare(*a, **k):
        calls.append("compare")
        return real_compare(*a, **k)

    def explain(*a, **k):
        calls.append("explain")
        return real_explain(*a, **k)

    monkeypatch.setattr(pipeline, "compare", compare)
    monkeypatch.setattr(engine, "explain", explain)
    return calls


def open_page(browser, url: str, width: int = 1400, theme: str = "", console: list | None = None):
    page = browser.new_page(viewport={"width": width, "height": 1000}, accept_downloads=True)
    page.set_default_timeout(WAIT)
    if console is not None:
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}") if m.type in ("warning", "error") else None)
    # Not "networkidle": Gradio keeps a connection open, so the network never goes quiet.
    page.goto(url + (f"?__theme={theme}" if theme else ""), wait_until="load")
    page.locator("#compare-button").wait_for(state="visible", timeout=WAIT)
    return page


def _input_src(page) -> str:
    return page.evaluate("() => document.querySelector('#input-image img')?.getAttribute('src') || ''")


def _wait_new_input(page, old: str) -> None:
    page.wait_for_function("old => { const i = document.querySelector('#input-image img');"
                           " return i && i.getAttribute('src') && i.getAttribute('src') !== old; }",
                           arg=old, timeout=WAIT)


def upload(page, path: Path) -> None:
    old = _input_src(page)
    page.locator("#input-image input[type=file]").set_input_files(str(path))
    _wait_new_input(page, old)


def pick_example(page, label: str) -> None:
    old = _input_src(page)
    page.get_by_role("button", name=label).click()
    _wait_new_input(page, old)


def compare(page) -> None:
    # the results (and #status in them) are not on the page before the first comparison
    before = page.locator("#status").inner_text() if page.locator("#status").count() else ""
    page.click("#compare-button")
    expect(page.locator("#status")).not_to_have_text(before or "\u0000", timeout=SLOW)
    expect(page.locator("#status")).to_contain_text("models", timeout=SLOW)
    # the grid <img> is lazy-loaded: like a user, scroll to it (the option rows push it below the fold)
    page.locator("#grid").scroll_into_view_if_needed()
    page.locator("#grid img").first.wait_for(state="visible", timeout=SLOW)


GRID_KEY = "[...document.querySelectorAll('#grid img')].map(i => i.src.length + ':' + i.src.slice(-48)).join('|')"


def grid_src(page) -> str:
    """A fingerprint of every picture of the grid (any re-drawn cell changes it)."""
    return page.evaluate(f"() => {GRID_KEY}")


CELL_CHANGED = f"old => {GRID_KEY} !== old"


def in_viewport(page, selector: str) -> bool:
    """Some of the element is inside the viewport, vertically and horizontally."""
    return page.evaluate("""s => { const r = document.querySelector(s).getBoundingClientRect();
        return r.bottom > 0 && r.top < innerHeight && r.right > 0 && r.left < innerWidth; }""", selector)


def test_upload_compare_and_download_report(browser, url, output_dir, tmp_path):
    errors: list[str] = []
    outside: list[str] = []
    page = open_page(browser, url)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((url, "data:", "blob:")) else None)
    upload(page, SCENES[0])
    compare(page)
    expect(page.locator("#predictions")).to_contain_text("Baseline", timeout=WAIT)
    table_text = page.locator("#predictions").inner_text()
    for model in ("Baseline", "SE", "CBAM", "Triplet Attention", "Coordinate Attention"):   # display names
        assert model in table_text
    headers = page.locator("#predictions thead").inner_text()
    assert "top-1" in headers and "probability" in headers
    scores_text = page.locator("#scores").inner_text()
    assert "pointing game" in scores_text and ("hit" in scores_text or "miss" in scores_text)
    assert page.locator("#attention-gallery img").count() >= 1
    link = page.locator("#downloads a[download='attnviz-report.json']")
    with page.expect_download() as info:
        link.click()
    saved = tmp_path / "report.json"
    info.value.save_as(saved)
    report = json.loads(saved.read_text())
    assert [m["model"] for m in report["models"]] == ["baseline", "se", "cbam", "triplet", "coord"]
    assert report["mask_source"] == "benchmark scene" and report["warnings"] == []
    # 9: the attention panel names models as people do, not by registry key
    page.locator("#attention-model input").click()
    options = page.get_by_role("option")
    expect(options.first).to_be_visible()
    labels = options.all_inner_texts()
    assert "Coordinate Attention" in labels and "coord" not in labels
    page.keyboard.press("Escape")
    page.screenshot(path=str(output_dir / "browser_page.png"), full_page=True)
    assert not errors, errors
    assert not outside, f"the page fetched from outside the server: {outside}"  # no web fonts, CDNs, analytics
    page.close()


def test_photo_gets_the_note_and_a_benchmark_scene_does_not(browser, url):
    """1: a photo shown to bundled models gets #ood-note with the results; a benchmark scene does not."""
    page = open_page(browser, url)
    expect(page.locator("#ood-note")).to_be_hidden()
    pick_example(page, "photo: chelsea")
    compare(page)
    note = page.locator("#ood-note")
    expect(note).to_be_visible(timeout=WAIT)
    expect(note).to_contain_text("11 drawn shapes")
    expect(note).to_contain_text("attnviz weights download")
    pick_example(page, "scene: star")
    compare(page)
    expect(page.locator("#status")).to_contain_text("benchmark scene", timeout=SLOW)
    expect(note).to_be_hidden(timeout=WAIT)
    page.close()


def test_display_settings_redraw_without_running_a_model(browser, url, model_calls):
    """5: colour map, colour scale and opacity change the grid from the stored comparison."""
    page = open_page(browser, url)
    upload(page, SCENES[1])
    compare(page)
    runs = len(model_calls)
    assert runs >= 5  # the comparison itself ran the models (the counter sees the page's calls)
    src = grid_src(page)
    page.locator("#cmap input").click()
    page.get_by_role("option", name="viridis", exact=True).click()
    page.wait_for_function(CELL_CHANGED, arg=src, timeout=WAIT)
    src2 = grid_src(page)
    page.locator("#colour-scale").get_by_text("shared").click()
    page.wait_for_function(CELL_CHANGED, arg=src2, timeout=WAIT)
    page.locator("#grid img[alt='shared colour scale']").wait_for(state="attached", timeout=WAIT)  # colour bar
    src3 = grid_src(page)
    page.locator("#opacity input[type=number]").fill("0.9")
    page.locator("#opacity input[type=number]").press("Enter")
    page.wait_for_function(CELL_CHANGED, arg=src3, timeout=WAIT)
    assert len(model_calls) == runs, "a display setting ran a model"
    page.close()


def test_checkpoint_upload_accepts_pth_tar_shows_the_file_name_and_ends_with_the_tab(browser, url, tmp_path):
    """2 + 4: the widget takes .pth.tar; the model is this tab's, under the user's file name, and leaves the
    model cache when the tab closes."""
    torch.manual_seed(5)
    path = tmp_path / "my_run.pth.tar"
    torch.save({"state_dict": {"module." + k: v for k, v in models.build("small_resnet", 11).state_dict().items()}},
               path)
    page = open_page(browser, url)
    page.locator("#checkpoint-box").get_by_text("Your own checkpoint").click()
    page.locator("#checkpoint-file input[type=file]").set_input_files(str(path))
    expect(page.locator("#checkpoint-file")).to_contain_text("my_run.pth.tar", timeout=WAIT)
    page.locator("#checkpoint-arch input").fill("small_resnet")
    page.get_by_role("option", name="small_resnet", exact=True).click()
    page.click("#checkpoint-load")
    expect(page.locator("#checkpoint-status")).to_contain_text("small_resnet (my_run.pth.tar)", timeout=SLOW)
    expect(page.locator("#models")).to_contain_text("small_resnet (my_run.pth.tar)")
    upload(page, SCENES[2])
    compare(page)
    expect(page.locator("#predictions")).to_contain_text("small_resnet (my_run.pth.tar)", timeout=WAIT)
    loaded = next(m for m in zoo.loaded_models() if m.spec.name == "small_resnet@my_run")
    network = weakref.ref(loaded.model)   # issue 21: its memory is returned when the tab closes
    del loaded
    other = open_page(browser, url)   # another visitor: the checkpoint is not in their list
    other.locator("#models input").click()
    expect(other.get_by_role("option").first).to_be_visible()
    assert not any("my_run" in t for t in other.get_by_role("option").all_inner_texts())
    other.close()
    page.close()
    deadline = time.monotonic() + 60
    while any(m.spec.name == "small_resnet@my_run" for m in zoo.loaded_models()) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not any(m.spec.name == "small_resnet@my_run" for m in zoo.loaded_models())
    deadline = time.monotonic() + 30
    while network() is not None and time.monotonic() < deadline:   # Gradio drops the tab's state, then gc
        gc.collect()
        time.sleep(0.25)
    assert network() is None, [type(r).__name__ for r in gc.get_referrers(network())]


def test_a_bad_image_is_refused_on_upload_with_one_message(browser, url, tmp_path):
    """6: checked on upload: one readable message, the box emptied, no red badges on the panels."""
    bad = tmp_path / "holiday.png"
    bad.write_text("these are my notes, not a photo\n" * 20)
    page = open_page(browser, url)
    page.locator("#input-image input[type=file]").set_input_files(str(bad))
    expect(page.locator("#image-error")).to_be_visible(timeout=WAIT)
    expect(page.locator("#image-error")).to_contain_text("not a recognised image")
    expect(page.locator("#input-image img")).to_have_count(0, timeout=WAIT)
    page.wait_for_timeout(1500)   # emptying the box must not take the message away
    expect(page.locator("#image-error")).to_be_visible()
    assert page.get_by_text("Error", exact=True).count() == 0
    upload(page, SCENES[0])  # a good image clears the message
    expect(page.locator("#image-error")).to_be_hidden(timeout=WAIT)
    page.close()


def test_not_downloaded_models_are_listed_apart_with_their_command(browser, url):
    """6: ImageNet models without weights are not selectable; they are listed with the download command."""
    missing = [s for s in zoo.all_specs() if s.source not in ("random",) and not s.weights.available()]
    if not missing:
        pytest.skip("every ImageNet model is downloaded on this machine")
    page = open_page(browser, url)
    page.locator("#models input").click()
    expect(page.get_by_role("option").first).to_be_visible()
    options = page.get_by_role("option").all_inner_texts()
    assert not any(s.name in o for s in missing for o in options)
    page.keyboard.press("Escape")
    page.locator("#not-downloaded-box").get_by_text("ImageNet models (not downloaded)").click()
    listing = page.locator("#not-downloaded")
    expect(listing).to_contain_text(f"attnviz weights download {missing[0].name}", timeout=WAIT)
    expect(listing).to_contain_text("attnviz weights download --set imagenet")
    page.close()


def test_layer_choices_are_the_shared_layers(browser, url):
    """7: the layer dropdown offers each model's default plus what the selected models share."""
    page = open_page(browser, url)
    page.locator("#layer input").click()
    expect(page.get_by_role("option").first).to_be_visible()
    options = [o.replace("✓", "").strip() for o in page.get_by_role("option").all_inner_texts()]
    assert options == ["each model's default", "layer1", "layer2", "layer3"]
    page.keyboard.press("Escape")
    page.locator("#models input").click()
    page.get_by_role("option", name="Criss-Cross (cc)").click()
    page.keyboard.press("Escape")
    page.locator("#layer input").click()
    expect(page.get_by_role("option").first).to_be_visible()
    assert "cc3" not in page.get_by_role("option").all_inner_texts()
    page.close()


def test_narrow_dark_screen_keeps_the_grid_readable(browser, url, output_dir):
    """8 + issue 21: at 390 px each model is a card (no sideways scroll); dark mode darkens placeholders and
    gallery."""
    page = open_page(browser, url, width=390, theme="dark")
    page.set_viewport_size({"width": 390, "height": 844})
    upload(page, SCENES[3])
    compare(page)
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390
    placeholder = page.locator("#grid tbody tr").first.locator("td img").nth(3)   # the baseline's "no attention module"
    placeholder.scroll_into_view_if_needed()
    tile = Image.open(io.BytesIO(placeholder.screenshot())).convert("RGB")
    assert np.asarray(tile).mean() < 100, "the grid's placeholders stay white in dark mode"
    thumb = page.locator("#attention-gallery img").first
    thumb.wait_for(state="visible", timeout=WAIT)
    tile = Image.open(io.BytesIO(thumb.screenshot())).convert("RGB")
    assert np.asarray(tile).mean() < 150, "the attention maps stay white in dark mode"
    page.screenshot(path=str(output_dir / "browser_390_dark.png"), full_page=True)
    page.close()


def test_tiny_scene_is_shown_large_and_a_box_is_easy_to_draw(browser, url):
    """8: a 128 px scene fills the upload box; the box picker draws it at 384 px and maps clicks back."""
    page = open_page(browser, url)
    upload(page, SCENES[4])
    page.wait_for_function("() => document.querySelector('#input-image img').getBoundingClientRect().width >= 250",
                           timeout=WAIT)
    page.locator("#box-accordion").get_by_text("Object box").first.click()
    picker = page.locator("#box-picker img")
    picker.wait_for(state="visible", timeout=WAIT)
    page.wait_for_function("() => document.querySelector('#box-picker img').naturalWidth === 384", timeout=WAIT)
    box = picker.bounding_box()
    shown = box["width"] / 384   # display px per picture px (1 unless the column is narrow)
    for x, y in ((32, 40), (96, 100)):   # upload pixels; the picture is 3x
        picker.click(position={"x": (x * 3 + 1.5) * shown, "y": (y * 3 + 1.5) * shown})
        page.wait_for_timeout(300)
    expect(page.locator("#box-info")).to_contain_text("Object box: (32, 40) – (96, 100)", timeout=WAIT)
    compare(page)
    expect(page.locator("#status")).to_contain_text("drawn box")
    page.close()


def test_query_picture_and_gallery_titles_are_not_covered(browser, url):
    """8: no label floats over the query picture or the first gallery tile; captions are not cut."""
    page = open_page(browser, url)
    upload(page, SCENES[5])
    compare(page)
    page.locator("#query-image").scroll_into_view_if_needed()   # its picture loads lazily
    query = page.locator("#query-image img")
    query.wait_for(state="visible", timeout=WAIT)
    q = query.bounding_box()
    top = page.evaluate("([x, y]) => document.elementFromPoint(x, y).tagName", [q["x"] + q["width"] / 2, q["y"] + 4])
    assert top == "IMG", f"something covers the top of the query picture: {top}"
    tile = page.locator("#attention-gallery img").first
    tile.scroll_into_view_if_needed()
    t = tile.bounding_box()
    assert page.evaluate("([x, y]) => document.elementFromPoint(x, y).tagName", [t["x"] + 10, t["y"] + 4]) == "IMG"
    caption = page.locator("#attention-gallery .caption-label").first
    assert caption.evaluate("e => e.scrollWidth <= e.clientWidth + 1"), "the caption is cut"
    page.close()


def test_first_load_keyboard_and_console(browser, url):
    """9: clean console on load, table headers, the intro's attention types, focus ring, Tab to Compare."""
    console: list[str] = []
    page = open_page(browser, url, console=console)
    page.wait_for_timeout(1500)
    assert console == [], console   # (Gradio's upload widget warns "Method not implemented." on uploads)
    # issue 21: no empty result placeholders before a run
    for hidden in ("#results", "#grid", "#predictions", "#attention-gallery", "#downloads"):
        expect(page.locator(hidden)).to_be_hidden()
    intro = page.locator("#intro").inner_text()
    for name in zoo.bundled():
        spec = zoo.get_spec(name)
        if spec.attention != "none":
            assert spec.display_name in intro
    page.mouse.click(5, 5)
    presses = 0
    while page.evaluate("() => document.activeElement.id") != "compare-button":
        page.keyboard.press("Tab")
        presses += 1
        assert presses <= 16, "Compare is more than 16 Tab presses away"
    for _ in range(20):   # past the examples beside the upload box: the first CAM checkbox
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.type") == "checkbox":
            break
    ring = page.evaluate("""() => { const e = document.activeElement, s = getComputedStyle(e);
        return [e.type, s.outlineStyle, parseFloat(s.outlineWidth)]; }""")
    assert ring[0] == "checkbox" and ring[1] != "none" and ring[2] >= 2, ring
    # The only console output an upload causes is Gradio's own: its upload-progress widget calls close() on
    # the client's stream stand-in, whose close() is a stub that warns (gradio-app/gradio#12002). Not ours.
    upload(page, SCENES[0])
    page.wait_for_timeout(1000)
    assert set(console) <= {"warning: Method not implemented."}, console
    page.close()


def test_the_page_says_the_model_limit_when_the_list_is_full(browser, monkeypatch):
    """3: a dropdown at its limit stops taking models; the page says why (limit lowered for the test)."""
    monkeypatch.setattr(pipeline, "MAX_MODELS_PER_REQUEST", 6)
    with running_app() as small_url:
        page = open_page(browser, small_url)
        expect(page.locator("#model-limit")).to_be_hidden()
        page.locator("#models input").click()
        page.get_by_role("option", name="ECA (eca)").click()
        note = page.locator("#model-limit")
        expect(note).to_be_visible(timeout=WAIT)
        expect(note).to_contain_text("6 models is the limit per request")
        page.close()


def test_vs_baseline_column_and_agreement_table(browser, url, output_dir):
    """Issue 16: with the baseline among the models, the grid gains a "vs baseline" column and the page an
    agreement table (Spearman, top-20 % IoU, peak distance) — same numbers as Comparison.agreement."""
    page = open_page(browser, url)
    upload(page, SCENES[2])
    compare(page)
    table = page.locator("#agreement")
    expect(table).to_be_visible(timeout=WAIT)
    expect(table).to_contain_text("Spearman")
    text = table.inner_text()
    for variant in ("SE", "CBAM", "Triplet Attention", "Coordinate Attention"):
        assert variant in text
    assert "Baseline" not in text.replace("baseline", "")  # the reference row is not compared with itself
    grid = page.locator("#grid")
    titles = page.locator("#grid thead th").all_inner_texts()
    assert len(titles) == 1 + 1 + 2 + 1 + 1 and titles[-1].startswith("vs baseline")   # model, input, 2, attn, vs
    assert page.locator("#grid tbody tr").count() == 5
    grid.screenshot(path=str(output_dir / "vs_baseline_grid.png"))
    table.screenshot(path=str(output_dir / "agreement_table.png"))
    page.close()


def test_a_vit_shows_per_head_maps_and_the_query_point_view(browser, tmp_path, output_dir):
    """Issue 14: a ViT (the zoo's size, random weights, through a models file) on the page: per-head attention maps
    in the attention panel, and clicking the query picture moves the point every head's map is drawn for."""
    from safetensors.torch import save_file

    from attnviz.data import synth
    from attnviz.zoo import modelsfile

    torch.manual_seed(0)
    save_file(models.build("small_vit", num_classes=11).state_dict(), str(tmp_path / "vit.safetensors"))
    (tmp_path / "classes.txt").write_text("\n".join(synth.CLASS_NAMES) + "\n")
    (tmp_path / "models.toml").write_text('[[model]]\nname = "vit-demo"\narch = "small_vit"\n'
                                          'checkpoint = "vit.safetensors"\nclasses = "classes.txt"\n'
                                          'input_size = 128\n')
    specs = modelsfile.load_models_file(tmp_path / "models.toml")
    try:
        with running_app(["baseline", "vit-demo"]) as vit_url:
            page = open_page(browser, vit_url)
            upload(page, SCENES[1])
            compare(page)
            page.locator("#attention-model input").click()
            page.get_by_role("option", name=specs[0].display_name).click()
            page.get_by_text("every block", exact=True).click()
            captions = page.locator("#attention-gallery .caption-label")
            expect(captions.filter(has_text="blocks.5.attn · head 3")).to_have_count(1, timeout=WAIT)
            texts = captions.all_inner_texts()
            for block in range(6):
                for head in (1, 2, 3):
                    assert any(t.startswith(f"blocks.{block}.attn · head {head}") for t in texts), (block, head)
            assert any("mean of heads" in t for t in texts) and any("class-token attention" in t for t in texts)
            first = page.locator("#attention-gallery img").first.get_attribute("src")
            query = page.locator("#query-image img")
            query.scroll_into_view_if_needed()
            box = query.bounding_box()
            page.mouse.click(box["x"] + 0.2 * box["width"], box["y"] + 0.8 * box["height"])
            page.wait_for_function(
                "old => document.querySelector('#attention-gallery img').getAttribute('src') !== old",
                arg=first, timeout=WAIT)
            page.screenshot(path=str(output_dir / "vit_heads.png"), full_page=True)
            page.close()
    finally:
        for spec in specs:
            zoo.evict(spec)
