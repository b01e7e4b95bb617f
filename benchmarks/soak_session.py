"""The "varied session" soak: what a person does in the browser, repeated until N requests were served.

Drives Debian's Chromium (Playwright) against a server started as ``attnviz serve`` in a subprocess with every
bundled model selectable. Each round opens a tab, uploads an image (scenes and resized photos in turn), picks a
different set of models (all 13 every fourth round), CAM methods and layer, compares, re-renders with other
display settings (colour map, opacity, colour scale), and every third round uploads a 45 MB checkpoint and
compares with it; then the tab is closed. A request is one call that reaches the server's queue: a comparison,
a re-render, a checkpoint load. The server's RSS is read from /proc after the warm-up rounds and every round.

Run:  python benchmarks/soak_session.py [--requests 300] [--warmup-rounds 2]
Used by benchmarks/soak.py --varied (same options).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from soak import inputs, rss_mb  # noqa: E402
from webapp import CHROMIUM, FLAGS, free_port, wait_until_serving  # noqa: E402

METHOD_SETS = [(), ("XGrad-CAM",), ("LayerCAM", "Eigen-CAM"), ("HiResCAM",)]
LAYERS = ["layer2", "layer1", None, "layer3"]
CMAPS = ["viridis", "turbo", "jet", "magma"]


def checkpoint(folder: Path) -> Path:
    """A 45 MB checkpoint (ResNet-18, random weights, 1000 classes), as a user's own file would be."""
    import torch

    import models

    path = folder / "mine.pth"
    torch.manual_seed(0)
    torch.save(models.build("resnet18", 1000).state_dict(), path)
    return path


def _wait_status(page, before: str) -> None:
    page.wait_for_function("old => { const s = document.querySelector('#status');"
                           " return s && s.innerText.includes('models') && s.innerText !== old; }",
                           arg=before, timeout=600_000)


def _status(page) -> str:
    return page.locator("#status").inner_text() if page.locator("#status").count() else ""


def one_round(browser, url: str, k: int, images: list[Path], ckpt: Path) -> int:
    """One tab's life; returns how many requests it sent."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(600_000)
    page.goto(url, wait_until="load")
    page.locator("#compare-button").wait_for(state="visible")
    sent = 0
    page.locator("#input-image input[type=file]").set_input_files(str(images[k % len(images)]))
    page.wait_for_timeout(800)
    for name in METHOD_SETS[k % len(METHOD_SETS)]:
        page.locator("#cam-methods").get_by_text(name, exact=True).click()
    if k % 4 != 3:   # fewer models: remove some of the 13 (every fourth round keeps them all)
        for _ in range(6 + k % 5):
            page.locator("#models .token-remove").first.click()
    layer = LAYERS[k % len(LAYERS)]
    if layer:
        page.locator("#layer input").click()
        options = page.get_by_role("option", name=layer, exact=True)
        if options.count():
            options.first.click()
        page.keyboard.press("Escape")
    if k % 3 == 2:
        page.locator("#checkpoint-box").get_by_text("Your own checkpoint").click()
        page.locator("#checkpoint-file input[type=file]").set_input_files(str(ckpt))
        page.locator("#checkpoint-arch input").fill("resnet18")
        page.locator("#checkpoint-arch input").press("Enter")
        page.wait_for_timeout(1500)
        page.click("#checkpoint-load")
        page.locator("#checkpoint-status").get_by_text("Loaded").wait_for(timeout=600_000)
        sent += 1
    before = _status(page)
    page.click("#compare-button")
    _wait_status(page, before)
    sent += 1
    for cmap in CMAPS[: 2 + k % 3]:   # re-renders of the stored comparison
        page.locator("#cmap input").click()
        page.get_by_role("option", name=cmap, exact=True).click()
        page.wait_for_timeout(1200)
        sent += 1
    page.locator("#colour-scale").get_by_text("shared" if k % 2 else "per model").click()
    sent += 1
    page.wait_for_timeout(1500)
    page.close()
    return sent


def live_objects() -> dict[str, int]:
    """Objects a leak would pile up: stored comparisons, session checkpoint sets, cached models."""
    import gc

    from attnviz.app.web.sessions import SessionModels
    from attnviz.results import Comparison
    from attnviz.zoo import registry as zoo

    gc.collect()
    objs = gc.get_objects()
    return {"Comparison": sum(isinstance(o, Comparison) for o in objs),
            "SessionModels": sum(isinstance(o, SessionModels) for o in objs),
            "cached models": len(zoo.loaded_models()),
            "uploaded models cached": sum(m.spec.source == "checkpoint" for m in zoo.loaded_models())}


def leak_check(args) -> None:
    """The same rounds against an in-process server: tracemalloc's biggest growth sites, and live objects."""
    import tracemalloc

    from playwright.sync_api import sync_playwright

    from attnviz.app.web import page as ui
    from attnviz.zoo.registry import bundled

    os.environ["GRADIO_HEARTBEAT_INTERVAL"] = "1"
    if args.old_unload:
        from attnviz.app.web import handlers, sessions

        handlers.release_tab = lambda blocks, session_hash: sessions.release_session(session_hash)
    port = free_port()
    app = ui.launch(host="127.0.0.1", port=port, models=bundled(), prevent_thread_lock=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(url, timeout=180)
        with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
            images, ckpt = inputs(Path(tmp)), checkpoint(Path(tmp))
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            for k in range(args.warmup_rounds):
                one_round(browser, url, k, images, ckpt)
            time.sleep(4)
            tracemalloc.start(12)
            before, objects, sent, k = tracemalloc.take_snapshot(), live_objects(), 0, args.warmup_rounds
            while sent < args.requests:
                sent += one_round(browser, url, k, images, ckpt)
                k += 1
            browser.close()
            time.sleep(4)
            after = tracemalloc.take_snapshot()
        print(f"{sent} requests in {k - args.warmup_rounds} tabs; live objects before {objects}, after "
              f"{live_objects()}; Gradio sessions held: {len(app.state_holder.session_data)}")
        for stat in after.compare_to(before, "traceback")[:6]:
            print(f"{stat.size_diff / 2**20:+.2f} MB in {stat.count_diff:+d} blocks at")
            print("    " + "\n    ".join(stat.traceback.format()[-6:]))
    finally:
        app.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup-rounds", type=int, default=2)
    parser.add_argument("--in-process", action="store_true",
                        help="run the server in this process with tracemalloc and report what stays alive (slower; "
                             "for finding leaks, not for the RSS number)")
    parser.add_argument("--old-unload", action="store_true",
                        help="with --in-process: close tabs as before issue 21 (checkpoints released, Gradio's copy "
                             "of the tab's state kept for an hour), to see what that kept alive")
    args = parser.parse_args()
    if args.in_process:
        return leak_check(args)
    from playwright.sync_api import sync_playwright

    from attnviz.zoo.registry import bundled

    names = bundled()
    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "GRADIO_HEARTBEAT_INTERVAL": "1"}
    server = subprocess.Popen([sys.executable, "-m", "attnviz", "serve", "--port", str(port), "--models",
                               ",".join(names)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(url, timeout=180)
        with tempfile.TemporaryDirectory() as tmp, sync_playwright() as p:
            images, ckpt = inputs(Path(tmp)), checkpoint(Path(tmp))
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            k = 0
            for _ in range(args.warmup_rounds):
                one_round(browser, url, k, images, ckpt)
                k += 1
            time.sleep(3)
            start = rss_mb(server.pid)
            samples, sent, t0 = [start], 0, time.perf_counter()
            print(f"RSS after {args.warmup_rounds} warm-up rounds: {start:.0f} MB", flush=True)
            while sent < args.requests:
                sent += one_round(browser, url, k, images, ckpt)
                k += 1
                samples.append(rss_mb(server.pid))
                print(f"round {k}: {sent} requests, RSS {samples[-1]:.0f} MB, {time.perf_counter() - t0:.0f} s",
                      flush=True)
            browser.close()
            time.sleep(3)
            end = rss_mb(server.pid)
        print(f"{sent} requests in {k - args.warmup_rounds} rounds (tabs), {time.perf_counter() - t0:.0f} s")
        print(f"RSS after warm-up {start:.0f} MB, at end {end:.0f} MB, growth {end - start:+.1f} MB "
              f"(max {max(samples):.0f} MB)")
        print("RSS per round (MB): " + ", ".join(f"{s:.0f}" for s in samples))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
