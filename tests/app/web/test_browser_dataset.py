"""The Data set tab in Debian's Chromium (Playwright), at 1400 px and 390 px: upload a zip of 24 exported scenes,
run 3 models x 2 methods, watch the progress, read the table, the forest plot and a "where they disagree" row,
open that row on the Compare tab; Stop a longer run and keep its partial table; the Compare tab answers while a
data-set job runs. Screenshots go to test-output/dataset_*.png."""
from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from conftest import zip_folder
from playwright.sync_api import expect
from test_browser import compare, in_viewport, upload
from webapp import running_app

from attnviz.data.examples import EXAMPLES_DIR
from attnviz.data.export import export_scenes

pytestmark = pytest.mark.browser
MODELS = ["baseline", "se", "cbam"]
SLOW = 300_000       # ms: a data-set job on a busy 2-core machine
WAIT = 60_000


@pytest.fixture(scope="module")
def url():
    with running_app(MODELS, heartbeat_s=0.5) as u:
        yield u


@pytest.fixture(scope="module")
def scenes_zip(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dataset")
    folder = export_scenes(root / "scenes", 24, 777).root
    return zip_folder(folder, root / "scenes24.zip", wrapper="scenes24/")


@pytest.fixture
def watchable(monkeypatch):
    """Every model pass of a data-set job reports, then waits 0.4 s (the server runs in this process), so even a
    warm 24-image job runs long enough for the page to show its progress advancing."""
    from attnviz.app.web.dataset import jobs

    real = jobs.DatasetJob._on_progress

    def slow(self, p):
        real(self, p)
        time.sleep(0.4)

    monkeypatch.setattr(jobs.DatasetJob, "_on_progress", slow)


def _each_row_is_whole_and_compact(page, width: int) -> None:
    """Every "where they disagree" picture is drawn whole (not cropped by a scroll box, not letterboxed in a square
    tile) and the gallery is no taller than its rows; two pictures side by side on a wide screen."""
    fit = page.evaluate("""() => {
      const g = document.querySelector('#ds-gallery');
      const items = [...g.querySelectorAll('.thumbnail-item')];
      const frame = g.getBoundingClientRect();
      const boxes = items.map(b => { const i = b.querySelector('img').getBoundingClientRect();
        const c = b.querySelector('.caption-label').getBoundingClientRect();
        return {img: [i.left, i.top, i.right, i.bottom], cap: [c.left, c.top, c.right, c.bottom]}; });
      const last = items[items.length - 1].getBoundingClientRect();
      return {frame: [frame.left, frame.top, frame.right, frame.bottom], boxes, bottom: last.bottom,
              scroll: g.querySelector('.grid-wrap').scrollHeight, client: g.querySelector('.grid-wrap').clientHeight};
    }""")
    left, top, right, bottom = fit["frame"]
    assert fit["scroll"] <= fit["client"] + 1, fit                        # nothing hidden in a scroll box
    assert bottom - fit["bottom"] < 40, fit                                # no tall empty frame under the rows
    for b in fit["boxes"]:
        x0, y0, x1, y1 = b["img"]
        assert x0 >= left and x1 <= right + 1 and y0 >= top and y1 <= bottom, (b, fit["frame"])
        assert abs((x1 - x0) / (y1 - y0) - 524 / 146) < 0.1, b          # the whole picture, not a square tile
        assert b["cap"][1] >= y1 - 1, b                                    # the caption under it, not over it
    lefts = {round(b["img"][0]) for b in fit["boxes"]}
    assert len(lefts) == (2 if width >= 1200 else 1), lefts


def open_tab(browser, url: str, width: int):
    page = browser.new_page(viewport={"width": width, "height": 1000})
    page.set_default_timeout(WAIT)
    page.goto(url, wait_until="load")
    page.get_by_role("tab", name="Data set").click()
    expect(page.locator("#ds-run")).to_be_visible()
    return page


def run_uploaded(page, scenes_zip: Path) -> None:
    page.locator("#ds-source").get_by_text("your .zip").click()
    page.locator("#ds-archive input[type=file]").set_input_files(str(scenes_zip))
    expect(page.locator("#ds-archive")).to_contain_text("scenes24.zip")
    page.locator("#ds-run").click()


@pytest.mark.parametrize("width", [1400, 390])
def test_upload_a_zip_and_read_the_results(browser, url, scenes_zip, output_dir, width, watchable):
    page = open_tab(browser, url, width)
    run_uploaded(page, scenes_zip)
    status = page.locator("#ds-status")
    expect(status).to_contain_text(re.compile(r"Starting|Scoring"), timeout=WAIT)
    expect(page.locator("#ds-stop")).to_be_enabled()
    seen = set()
    for _ in range(600):
        text = status.inner_text()
        seen.add(text)
        if "Done:" in text:
            break
        page.wait_for_timeout(250)
    assert any("model pass" in s and "images/s" in s for s in seen), seen
    passes = {int(m[1]) for s in seen for m in [re.search(r"model pass (\d+) /", s)] if m}
    assert len(passes) >= 2, seen                                       # the progress advanced while we watched
    expect(status).to_contain_text("Done: 24 images", timeout=SLOW)
    table = page.locator("#ds-table table")
    expect(table).to_contain_text("CBAM")
    assert table.locator("tbody tr").count() == 3 * 2 + 1          # 3 models x 2 methods + CBAM's own map
    expect(table).to_contain_text("Δ")
    page.locator("#ds-forest").scroll_into_view_if_needed()      # the browser loads it once it is near the view
    expect(page.locator("#ds-forest img")).to_be_visible()
    rows = page.locator("#ds-gallery .thumbnail-item")
    expect(rows.first.locator("img")).to_be_visible(timeout=SLOW)
    assert rows.count() >= 1
    _each_row_is_whole_and_compact(page, width)
    assert page.locator("#ds-gallery button[aria-label=\"Download All\"]").count() == 0   # nothing over a row
    expect(page.locator("#ds-downloads")).to_contain_text("results.json")
    if width < 500:
        assert page.evaluate("document.documentElement.scrollWidth") <= width + 2
    page.screenshot(path=str(output_dir / f"dataset_{width}.png"), full_page=True)
    page.locator("#ds-gallery").screenshot(path=str(output_dir / f"dataset_{width}_disagree.png"))
    variant = page.locator("#ds-variant input").input_value()          # "SE": the first variant
    method = page.locator("#ds-method input").input_value()            # "Grad-CAM"
    rows.first.click()                  # a disagreement row opens on Compare: its image, both models, its method
    expect(page.get_by_role("tab", name="Compare")).to_have_attribute("aria-selected", "true", timeout=WAIT)
    expect(page.locator("#input-image img")).to_be_visible(timeout=WAIT)
    chosen = page.locator("#models").inner_text()
    others = [m for m in ("SE", "CBAM") if m != variant]
    assert "Baseline (baseline)" in chosen and f"{variant} (" in chosen, chosen
    assert not any(f"{m} (" in chosen for m in others), chosen
    checked = page.locator("#cam-methods label:has(input:checked)")
    expect(checked).to_have_count(1)
    expect(checked).to_have_text(method)
    page.wait_for_timeout(500)
    assert in_viewport(page, "#compare-button") and in_viewport(page, "#input-image img")
    page.screenshot(path=str(output_dir / f"dataset_{width}_opened_on_compare.png"))
    page.close()


@pytest.mark.parametrize("width", [1400, 390])
def test_compare_answers_while_a_job_runs_and_stop_keeps_a_partial_table(browser, url, output_dir, width):
    page = open_tab(browser, url, width)
    page.locator("#ds-n input").fill("500")
    page.locator("#ds-run").click()
    status = page.locator("#ds-status")
    expect(status).to_contain_text(re.compile(r"[1-9]\d* / 500 images finished"), timeout=SLOW)
    # the Compare tab, meanwhile: one scene through the three models, answered while the job is still scoring
    page.get_by_role("tab", name="Compare").click()
    scene = sorted(p for p in EXAMPLES_DIR.glob("*.png") if not p.name.endswith("_mask.png"))[0]
    upload(page, scene)
    compare(page)
    expect(page.locator("#predictions")).to_contain_text("Baseline")
    page.screenshot(path=str(output_dir / f"dataset_compare_during_job_{width}.png"))
    page.get_by_role("tab", name="Data set").click()
    assert "Scoring" in status.inner_text(), status.inner_text()      # the job had not ended meanwhile
    page.locator("#ds-stop").click()
    expect(status).to_contain_text("Stopped:", timeout=WAIT)
    done = int(re.search(r"Stopped: (\d+) of 500 images", status.inner_text())[1])
    assert 0 < done < 500
    table = page.locator("#ds-table table")
    expect(table).to_contain_text(f"over {done} images")               # the partial table: the finished images
    expect(table).to_contain_text("SE")
    expect(page.locator("#ds-run")).to_be_enabled()
    expect(page.locator("#ds-stop")).to_be_disabled()
    if width < 500:
        assert page.evaluate("document.documentElement.scrollWidth") <= width + 2
    page.screenshot(path=str(output_dir / f"dataset_stopped_{width}.png"), full_page=True)
    page.close()
