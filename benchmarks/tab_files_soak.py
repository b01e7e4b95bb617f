"""Soak: browser tabs that upload a photo, compare, download nothing and close — does the temp folder stay
bounded? (issue 30)

One in-process server, Debian's Chromium. Each round opens a fresh browser context (a new visitor), uploads a
photo nobody else has, runs one comparison and closes the tab. After every round the script sums the files under
Gradio's upload cache and attnviz's own temp folders. The same rounds run twice, side by side: with the tab-files
registry (``sessions.tab_files``; the product) and with its release switched off (what Gradio alone does within
the hour before its cache sweep)::

    python benchmarks/tab_files_soak.py --rounds 15
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # before tests/: its models/ folder would shadow the models package
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ["GRADIO_HEARTBEAT_INTERVAL"] = "0.5"   # a closed tab is noticed within a second

from webapp import CHROMIUM, FLAGS, free_port, wait_until_serving  # noqa: E402


def folder_size(roots: list[Path]) -> tuple[int, int]:
    """(bytes, files) under ``roots``."""
    total = count = 0
    for root in roots:
        for dirpath, _, files in os.walk(root):
            for name in files:
                try:
                    total += (Path(dirpath) / name).stat().st_size
                    count += 1
                except OSError:
                    continue
    return total, count


def one_tab(browser, url: str, photo: Path) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(180_000)
    page.goto(url, wait_until="load")
    page.locator("#compare-button").wait_for(state="visible")
    page.locator("#input-image input[type=file]").set_input_files(str(photo))
    page.wait_for_function("() => document.querySelector('#input-image img')?.getAttribute('src')")
    page.click("#compare-button")
    page.locator("#status").get_by_text("models").wait_for()
    page.locator("#downloads a[href]").first.wait_for(state="attached")
    context.close()


def run(rounds: int, release: bool, photos: Path) -> list[tuple[int, int]]:
    from playwright.sync_api import sync_playwright

    from attnviz.app.web import page as ui
    from attnviz.app.web import sessions

    real = sessions.release_tab_files
    if not release:
        sessions.release_tab_files = lambda tab: []
    port = free_port()
    app = ui.launch(host="127.0.0.1", port=port, models=["baseline", "se"], prevent_thread_lock=True)
    url = f"http://127.0.0.1:{port}/"
    wait_until_serving(url)
    from gradio.utils import get_upload_folder

    roots = [Path(get_upload_folder()), sessions.TMP_ROOT / f"{sessions.TMP_PREFIX}downloads"]
    sizes = [folder_size(roots)]
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            for k in range(rounds):
                photo = photos / f"{'on' if release else 'off'}_{k}.jpg"
                rng = np.random.default_rng(1000 * release + k)
                small = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
                Image.fromarray(small).resize((1024, 768), Image.Resampling.BICUBIC).save(photo, quality=92)
                one_tab(browser, url, photo)
                time.sleep(2.0)   # the heartbeat notices the closed tab; its unload event runs
                sizes.append(folder_size(roots))
                print(f"  release {'on ' if release else 'off'} round {k + 1}: {sizes[-1][0] / 2**20:6.1f} MB, "
                      f"{sizes[-1][1]} files", flush=True)
            browser.close()
    finally:
        app.close()
        sessions.release_tab_files = real
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        on = run(args.rounds, True, Path(tmp))
        off = run(args.rounds, False, Path(tmp))
    for label, sizes in (("registry on (product)", on), ("release off (Gradio alone)", off)):
        start, end = sizes[0], sizes[-1]
        peak = max(s[0] for s in sizes)
        print(f"{label}: start {start[0] / 2**20:.1f} MB / {start[1]} files, after {args.rounds} tabs "
              f"{end[0] / 2**20:.1f} MB / {end[1]} files, peak {peak / 2**20:.1f} MB; growth per tab "
              f"{(end[0] - start[0]) / args.rounds / 2**10:.0f} KB")
    print(f"load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
