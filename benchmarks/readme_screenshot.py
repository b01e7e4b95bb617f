"""Retake the README's screenshot (docs/screenshot.png): the page at 1050 px after comparing a benchmark scene with
the default models and methods, the whole page (grid with its "vs baseline" column, tables, attention panel).

Run:  python benchmarks/readme_screenshot.py [--out docs/screenshot.png]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from webapp import CHROMIUM, FLAGS, running_app  # noqa: E402

SCENE = ROOT / "attnviz" / "assets" / "examples" / "scene000_hexagon.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screenshot.png"))
    parser.add_argument("--width", type=int, default=1050)
    args = parser.parse_args()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from playwright.sync_api import expect, sync_playwright

    with running_app() as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": args.width, "height": 1000})
        page.set_default_timeout(300_000)
        page.goto(url, wait_until="load")
        page.locator("#compare-button").wait_for(state="visible")
        page.locator("#input-image input[type=file]").set_input_files(str(SCENE))
        page.wait_for_timeout(1500)
        page.click("#compare-button")
        expect(page.locator("#status")).to_contain_text("models", timeout=300_000)
        page.wait_for_function("() => !document.querySelector('#compare-button').disabled")
        page.locator("#attention-gallery img").first.wait_for(state="visible")
        for picture in ("#attention-gallery img", "#query-image img"):   # lazy pictures load when seen
            page.locator(picture).last.scroll_into_view_if_needed()
            page.wait_for_timeout(800)
        page.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth > 0)")
        page.evaluate("() => window.scrollTo(0, 0)")
        page.wait_for_timeout(1500)
        page.screenshot(path=args.out, full_page=True)
        browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
