"""The page in a real browser: Debian's Chromium driven by Playwright (no browser download).

Uploads a benchmark scene, runs the comparison, checks the grid, the predictions table, the
localisation scores and the attention panel appear, downloads the JSON report, saves a screenshot.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import expect

from attnviz.pipeline import EXAMPLES_DIR
from webapp import running_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's Chromium is required for the browser test: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()


def test_upload_compare_and_download_report(browser, output_dir, tmp_path):
    scene = sorted(p for p in EXAMPLES_DIR.glob("*.png") if not p.name.endswith("_mask.png"))[0]
    with running_app() as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
        errors: list[str] = []
        outside: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith((url, "data:", "blob:")) else None)
        # Not "networkidle": Gradio keeps a connection open, so the network never goes quiet.
        page.goto(url, wait_until="load")
        page.locator("#compare-button").wait_for(state="visible", timeout=60_000)
        page.locator("#input-image input[type=file]").set_input_files(str(scene))
        page.wait_for_timeout(500)
        page.click("#compare-button")
        page.locator("#grid img").wait_for(state="visible", timeout=180_000)
        # Gradio's table also renders hidden measuring cells, so wait on the table's visible text instead
        expect(page.locator("#predictions")).to_contain_text("baseline", timeout=60_000)
        table_text = page.locator("#predictions").inner_text()
        for model in ("baseline", "se", "cbam", "triplet", "coord"):
            assert model in table_text
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
        assert report["mask_source"] == "benchmark scene"
        page.screenshot(path=str(output_dir / "browser_page.png"), full_page=True)
        assert not errors, errors
        assert not outside, f"the page fetched from outside the server: {outside}"  # no web fonts, CDNs, analytics
        page.close()
