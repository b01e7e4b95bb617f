"""Issue 21 in a real browser: results where the user looks, a grid that fits any screen, checkpoint messages
in their box. Screenshots go to test-output/ (each was looked at when the test was written)."""
from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect
from test_browser import SCENES, SLOW, WAIT, compare, in_viewport, open_page, upload
from webapp import running_app

from attnviz.zoo import registry as zoo

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def url():
    with running_app() as u:
        yield u


@pytest.fixture(scope="module")
def all_models_url():
    """The page with every bundled model selected (13), as a user who picked them all."""
    with running_app(zoo.bundled()) as u:
        yield u


def test_compare_is_disabled_while_running_and_the_results_come_into_view(browser, url, output_dir):
    page = open_page(browser, url)
    assert in_viewport(page, "#examples"), "the examples are beside the upload box, above the fold"
    expect(page.locator("#results")).to_be_hidden()     # no empty placeholders before a run
    assert page.evaluate("() => document.documentElement.scrollHeight") < 1600
    upload(page, SCENES[0])
    page.click("#compare-button")
    page.wait_for_function("() => document.querySelector('#compare-button').disabled", timeout=WAIT)
    page.screenshot(path=str(output_dir / "issue21_running_1400.png"))
    expect(page.locator("#status")).to_contain_text("models", timeout=SLOW)
    page.wait_for_function("() => !document.querySelector('#compare-button').disabled", timeout=WAIT)
    page.wait_for_timeout(500)
    assert in_viewport(page, "#status") or in_viewport(page, "#grid")
    assert in_viewport(page, "#grid")
    page.screenshot(path=str(output_dir / "issue21_after_compare_1400.png"))
    page.close()


def _four_methods(page) -> None:
    for name in ("XGrad-CAM", "LayerCAM"):
        page.locator("#cam-methods").get_by_text(name, exact=True).click()


def test_all_models_and_four_methods_fit_the_frame_with_titles_in_view(browser, all_models_url, output_dir):
    page = open_page(browser, all_models_url)
    _four_methods(page)
    upload(page, SCENES[1])
    compare(page)
    expect(page.locator("#grid tbody tr")).to_have_count(len(zoo.bundled()), timeout=WAIT)
    fit = page.evaluate("""() => { const g = document.querySelector('#grid'), t = g.querySelector('table');
        const th = [...g.querySelectorAll('thead th')].pop().getBoundingClientRect();
        return {table: t.getBoundingClientRect().width, scroll: t.scrollWidth, frame: g.clientWidth,
                vs_right: th.right, vs_width: th.width, doc: document.documentElement.scrollWidth}; }""")
    assert fit["table"] <= fit["frame"] + 1 and fit["scroll"] <= fit["frame"] + 1, fit
    assert fit["vs_right"] <= 1400 and fit["vs_width"] > 60 and fit["doc"] <= 1400, fit
    titles = page.locator("#grid thead th").all_inner_texts()
    assert titles[-1].startswith("vs baseline") and "attention module" in " ".join(titles)
    page.screenshot(path=str(output_dir / "issue21_all_models_1400.png"))
    page.locator("#grid tbody tr").last.scroll_into_view_if_needed()   # far down the grid: titles stay in view
    page.wait_for_timeout(300)
    top = page.evaluate("() => document.querySelector('#grid thead th').getBoundingClientRect().top")
    assert 0 <= top < 60, top
    page.screenshot(path=str(output_dir / "issue21_all_models_scrolled_1400.png"))
    page.close()


def test_a_phone_sees_a_heatmap_and_the_agreement_numbers(browser, all_models_url, output_dir):
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.set_default_timeout(WAIT)
    page.goto(all_models_url, wait_until="load")
    page.locator("#compare-button").wait_for(state="visible", timeout=WAIT)
    _four_methods(page)
    upload(page, SCENES[1])
    compare(page)
    page.locator("#results").scroll_into_view_if_needed()
    page.evaluate("() => document.querySelector('#results').scrollIntoView({block: 'start'})")
    page.wait_for_timeout(300)
    heat = page.locator("#grid tbody tr").first.locator("td img").nth(1)   # the first model's Grad-CAM
    box = heat.bounding_box()
    assert box and box["y"] >= 0 and box["y"] + box["height"] <= 844 and box["x"] + box["width"] <= 390, box
    assert box["width"] > 120, "the heatmap is big enough to read"
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 390, "no sideways scrolling"
    page.screenshot(path=str(output_dir / "issue21_phone_grid.png"))
    page.locator("#agreement").scroll_into_view_if_needed()
    first = page.locator("#agreement tbody tr").first
    first.scroll_into_view_if_needed()
    for label in ("Spearman", "top-20 % IoU", "peak distance"):
        cell = first.locator(f"td[data-label='{label}']")
        b = cell.bounding_box()
        assert b and b["x"] >= 0 and b["x"] + b["width"] <= 390 and 0 <= b["y"] < 844, (label, b)
    assert "% of the diagonal" in first.inner_text()
    page.screenshot(path=str(output_dir / "issue21_phone_agreement.png"))
    page.close()


def test_checkpoint_messages_stay_in_their_box_and_exact_names_win(browser, url, tmp_path, output_dir):
    notes = tmp_path / "notes.pth"
    notes.write_text("these are my notes, not weights\n" * 40)
    page = open_page(browser, url)
    page.locator("#checkpoint-box").get_by_text("Your own checkpoint").click()
    arch = page.locator("#checkpoint-arch input")
    arch.fill("resnet18")
    arch.press("Enter")
    page.wait_for_timeout(500)
    assert arch.input_value() == "resnet18"
    page.locator("#checkpoint-file input[type=file]").set_input_files(str(notes))
    expect(page.locator("#checkpoint-file")).to_contain_text("notes.pth", timeout=WAIT)
    page.click("#checkpoint-load")
    status = page.locator("#checkpoint-status")
    expect(status).to_contain_text("not a PyTorch or safetensors checkpoint", timeout=SLOW)
    time.sleep(1)
    assert page.get_by_text("Error", exact=True).count() == 0   # no toast, no red "Error" badge
    status.scroll_into_view_if_needed()
    page.screenshot(path=str(output_dir / "issue21_checkpoint_refused.png"))
    page.close()
