"""Issue 30 in a real browser: the page never locks up after a refusal (1), a tab's files die with the tab (2),
mixed model kinds on the page (3), the progress text at 1400 and 390 px (7), the phone's first screen (8).

Screenshots go to test-output/issue30_*.png.
"""
from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from playwright.sync_api import expect
from test_browser import SCENES, SLOW, WAIT, compare, open_page, pick_example, upload
from webapp import running_app

import models

pytestmark = pytest.mark.browser
ENABLED_AGAIN_MS = 1000


@pytest.fixture(scope="module")
def url():
    with running_app(heartbeat_s=0.5) as u:   # a closed tab is noticed within a second
        yield u


@pytest.fixture(scope="module")
def mixed_url():
    with running_app(["baseline", "vit"]) as u:
        yield u


def _gap_under_compare(page, selector: str) -> float:
    """Pixels between the bottom of Compare and the top of ``selector``."""
    return page.evaluate("""s => document.querySelector(s).getBoundingClientRect().top -
        document.querySelector('#compare-button').getBoundingClientRect().bottom""", selector)


def _refused(page, says: str, shot: Path) -> None:
    """Compare is refused with one line beside it (right under it on a phone, no empty band between), and is
    enabled again within a second; no error badge."""
    page.click("#compare-button")
    message = page.locator("#run-message")
    expect(message).to_be_visible(timeout=SLOW)
    expect(message).to_contain_text(says)
    if page.viewport_size["width"] < 640:
        assert 0 <= _gap_under_compare(page, "#run-message") <= 24
    expect(page.locator("#compare-button")).to_be_enabled(timeout=ENABLED_AGAIN_MS)
    page.screenshot(path=str(shot))
    assert page.locator(".toast-body.error").count() == 0
    assert page.get_by_text("Error", exact=True).count() == 0


def _set_target(page, text: str) -> None:
    box = page.locator("#target input")
    box.fill(text)
    box.press("Enter")
    page.wait_for_timeout(300)


def test_compare_is_enabled_again_after_each_refusal_and_the_next_compare_succeeds(browser, url, output_dir):
    for width in (1400, 390):
        page = open_page(browser, url, width=width)
        _refused(page, "Upload an image", output_dir / f"issue30_refused_no_image_{width}.png")
        pick_example(page, "scene: " + SCENES[0].stem.split("_", 1)[-1])   # an example, as the newcomer did
        compare(page)                                    # the next Compare succeeds
        expect(page.locator("#run-message")).to_be_hidden()
        _set_target(page, "zebra")
        _refused(page, "Unknown class 'zebra' for", output_dir / f"issue30_refused_zebra_{width}.png")
        expect(page.locator("#run-message")).to_contain_text("circle")   # the choices are listed
        _set_target(page, "top-1 (each model)")
        page.locator("#cam-methods").get_by_text("Attention rollout", exact=True).click()
        _refused(page, "Attention rollout cannot run on any of the selected models",
                 output_dir / f"issue30_refused_rollout_{width}.png")
        page.locator("#cam-methods").get_by_text("Attention rollout", exact=True).click()
        compare(page)
        expect(page.locator("#run-message")).to_be_hidden()
        page.close()


def test_mixed_kinds_give_the_vit_its_rollout_and_the_baseline_an_explained_na(browser, mixed_url, output_dir):
    page = open_page(browser, mixed_url)
    upload(page, SCENES[1])
    page.locator("#cam-methods").get_by_text("Attention rollout", exact=True).click()
    compare(page)
    expect(page.locator("#grid thead")).to_contain_text("Attention rollout")
    baseline = page.locator("#grid tr[data-model='baseline'] img[alt*='Attention rollout']")
    vit = page.locator("#grid tr[data-model='vit'] img[alt*='Attention rollout']")
    expect(baseline).to_have_count(1)
    expect(vit).to_have_count(1)
    assert "n/a: Attention rollout needs a ViT/DeiT's global self-attention; this model has no transformer " \
           "attention" in baseline.get_attribute("alt")
    assert "n/a" not in vit.get_attribute("alt")
    assert baseline.get_attribute("title").startswith("n/a:")
    page.locator("#grid").scroll_into_view_if_needed()
    page.locator("#grid").screenshot(path=str(output_dir / "issue30_mixed_kinds_grid.png"))
    page.close()


def _progress_boxes(page) -> dict:
    """The Compare button's box, the progress area's, and every text/bar element inside the progress area."""
    return page.evaluate("""() => {
      const r = e => { const b = e.getBoundingClientRect(); return [b.left, b.top, b.right, b.bottom]; };
      const area = document.querySelector('#run-progress');
      const parts = [...area.querySelectorAll('*')].filter(e => e.children.length === 0 &&
          (e.innerText || '').trim() && e.offsetParent !== null).map(e => ({text: e.innerText.trim(), box: r(e)}));
      // the bar itself (its frame) and the timer's backdrop, not .progress-level: that holds the text too
      const bars = [...area.querySelectorAll('.progress-bar-wrap, .eta-bar')].filter(
          e => e.offsetParent !== null).map(r);
      return {button: r(document.querySelector('#compare-button')), area: r(area), parts, bars};
    }""")


def _overlap(a, b) -> bool:
    return min(a[2], b[2]) - max(a[0], b[0]) > 1 and min(a[3], b[3]) - max(a[1], b[1]) > 1


@pytest.fixture
def slow_models(monkeypatch):
    """Each model of a comparison takes 1.5 s longer (the server runs in this process), so the progress text stays
    on screen long enough to be measured."""
    from attnviz.app import pipeline

    real = pipeline.compare

    def slow(*args, progress=None, **kwargs):
        def report(i: int, n: int, name: str) -> None:
            if progress is not None:
                progress(i, n, name)
            time.sleep(1.5)

        return real(*args, progress=report, **kwargs)

    monkeypatch.setattr(pipeline, "compare", slow)


@pytest.mark.parametrize("width", [1400, 390])
def test_progress_text_is_readable_beside_compare(browser, url, output_dir, width, slow_models):
    page = open_page(browser, url, width=width)
    upload(page, SCENES[0])
    page.click("#compare-button")
    page.locator("#run-progress").get_by_text("running", exact=False).first.wait_for(timeout=SLOW)
    page.wait_for_timeout(300)
    boxes = _progress_boxes(page)
    page.locator("#run-row").screenshot(path=str(output_dir / f"issue30_progress_{width}.png"))
    texts = [p for p in boxes["parts"]]
    assert any("running" in p["text"] for p in texts) and any("steps" in p["text"] for p in texts), texts
    assert boxes["bars"], boxes
    for p in texts:
        assert not _overlap(p["box"], boxes["button"]), p
        for q in texts:
            if q is not p:
                assert not _overlap(p["box"], q["box"]), (p, q)
        for bar in boxes["bars"]:
            assert not _overlap(p["box"], bar), (p, bar)
        assert p["box"][2] <= width + 1, p      # not cut off at the right edge
        area = boxes["area"]                    # nor by the progress box (it clips what leaves it)
        assert area[0] - 1 <= p["box"][0] and p["box"][2] <= area[2] + 1, (p, area)
        assert area[1] - 1 <= p["box"][1] and p["box"][3] <= area[3] + 1, (p, area)
    expect(page.locator("#status")).to_contain_text("models", timeout=SLOW)
    page.close()


def test_the_phones_first_screen_shows_compare_and_the_examples(browser, url, output_dir):
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.set_default_timeout(WAIT)
    page.goto(url, wait_until="load")
    page.locator("#compare-button").wait_for(state="visible")
    page.wait_for_timeout(500)
    page.screenshot(path=str(output_dir / "issue30_phone_first_screen.png"))
    box = page.locator("#compare-button").bounding_box()
    assert box["y"] + box["height"] <= 844, box
    assert 0 <= _gap_under_compare(page, "#examples") <= 24       # no empty progress band under Compare
    assert page.evaluate("() => scrollY") == 0
    for sel in ("#target", "#contrast"):   # the Target / compared-with boxes show their whole value
        clipped = page.evaluate("""s => { const i = document.querySelector(s + ' input');
            return i.scrollWidth > i.clientWidth + 1; }""", sel)
        assert not clipped, sel
    page.close()


# ---- 2. two clients: after A's tab closes, B gets nothing A was served ---------------------------------------

def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_after_a_tab_closes_every_file_url_it_was_served_is_gone_for_another_client(browser, url, tmp_path,
                                                                                     output_dir):
    rng = np.random.default_rng(30)
    photo = tmp_path / "tab_a_photo.png"
    Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(photo)
    torch.manual_seed(30)
    checkpoint = tmp_path / "tab_a_run.pth.tar"
    torch.save({"state_dict": models.build("small_resnet", 11).state_dict()}, checkpoint)

    a = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = a.new_page()
    page.set_default_timeout(WAIT)
    served: set[str] = set()
    page.on("response", lambda r: served.add(r.url) if "/gradio_api/file=" in r.url else None)
    page.goto(url, wait_until="load")
    page.locator("#compare-button").wait_for(state="visible")
    page.locator("#checkpoint-box").get_by_text("Your own checkpoint").click()
    page.locator("#checkpoint-file input[type=file]").set_input_files(str(checkpoint))
    expect(page.locator("#checkpoint-file")).to_contain_text("tab_a_run.pth.tar", timeout=WAIT)
    page.locator("#checkpoint-arch input").fill("small_resnet")
    page.get_by_role("option", name="small_resnet", exact=True).click()
    page.click("#checkpoint-load")
    expect(page.locator("#checkpoint-status")).to_contain_text("tab_a_run.pth.tar", timeout=SLOW)
    upload(page, photo)
    compare(page)
    links = page.locator("#downloads a[href], #checkpoint-file a[href]").evaluate_all(
        "as => as.map(a => a.href)")
    served.update(u for u in links if "/gradio_api/file=" in u)
    names = {u.rsplit("/", 1)[-1].split("?")[0] for u in served}
    for wanted in ("tab_a_photo.png", "attnviz-grid.png", "attnviz-maps.npz", "attnviz-report.json",
                   "tab_a_run.pth.tar"):
        assert wanted in names, (wanted, sorted(names))
    urls = set(served)          # a snapshot: the page's response listener may still add to `served`
    b = browser.new_context()   # another visitor: no cookies, no session
    assert {u: b.request.get(u).status for u in urls} == {u: 200 for u in urls}   # the test could fail
    page.screenshot(path=str(output_dir / "issue30_tab_a_before_close.png"))
    a.close()
    deadline = time.monotonic() + 30
    status = {}
    while time.monotonic() < deadline:
        status = {u: b.request.get(u).status for u in urls}
        if all(s in (403, 404) for s in status.values()):
            break
        time.sleep(0.5)
    assert all(s in (403, 404) for s in status.values()), {u: s for u, s in status.items() if s not in (403, 404)}
    b.close()
