"""Benchmark: the page's Data set tab against `attnviz eval` on the same work, and the server's memory afterwards.

Work: ``--n`` benchmark scenes (eval seed), ``--models`` (default the page's five), Grad-CAM + Grad-CAM++,
localisation only. Three steps, one run:

  server   the page in its own process (``attnviz serve``); RSS read from /proc. A warm-up job of 4 scenes in a
           tab that is then closed loads the models, as any first job on a server does; RSS "before" is taken
           after it.
  page     Debian's Chromium (Playwright) opens a tab, enters N, clicks Run and waits for "Done"; wall time from
           the click; the tab is closed and RSS "after" is read once the server has released it.
  cli      ``python -m attnviz eval`` with the same settings; wall time of the command (imports included) and
           the run's own ``seconds`` from results.json.

Run:  python benchmarks/dataset_tab.py [--n 200] [--models baseline,se,cbam,triplet,coord]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from webapp import CHROMIUM, FLAGS, free_port, wait_until_serving  # noqa: E402

METHODS = "gradcam,gradcam++"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def page_job(browser, url: str, n: int, timeout_s: float) -> float:
    """Seconds from Run to "Done" for one tab; the tab is closed afterwards."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(120_000)
    page.goto(url, wait_until="load")
    page.get_by_role("tab", name="Data set").click()
    page.locator("#ds-n input").fill(str(n))
    page.locator("#ds-n input").press("Tab")
    start = time.perf_counter()
    page.locator("#ds-run").click()
    page.locator("#ds-status", has_text="Done:").wait_for(timeout=timeout_s * 1000)
    seconds = time.perf_counter() - start
    page.close()
    return seconds


def cli_job(n: int, models: str, out: Path, env: dict) -> tuple[float, float]:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "attnviz", "eval", "--n", str(n), "--models", models, "--methods", METHODS,
                    "--localisation-only", "--road", "0", "--out", str(out), "--quiet"], check=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - start
    return wall, json.loads((out / "results.json").read_text())["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--models", default="baseline,se,cbam,triplet,coord")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT),
               GRADIO_HEARTBEAT_INTERVAL="0.5", ATTNVIZ_DATASET_MAX_IMAGES=str(max(500, args.n)))
    subprocess.run([sys.executable, "-c", "from attnviz.data.scenes import cached_scenes, EVAL_SEED; "
                    f"from attnviz.data import synth; cached_scenes({args.n}, EVAL_SEED, synth.IMAGE_SIZE)"],
                   check=True, env=env, cwd=ROOT)   # both sides read the same cached scenes
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "attnviz", "serve", "--port", str(port), "--models", args.models],
                              env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(url, timeout=300)
        idle = rss_mb(server.pid)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
            page_job(browser, url, 4, 600)                    # warm-up: the models load, the tab closes
            time.sleep(3)
            before = rss_mb(server.pid)
            page_s = page_job(browser, url, args.n, 3600)
            peak = rss_mb(server.pid)
            time.sleep(5)                                     # the unload event, the job folder, malloc_trim
            after = rss_mb(server.pid)
            browser.close()
    finally:
        server.terminate()
        server.wait(30)
    with tempfile.TemporaryDirectory() as tmp:
        cli_wall, cli_run = cli_job(args.n, args.models, Path(tmp) / "cli", env)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"work: {args.n} scenes x {len(args.models.split(','))} models x 2 methods, localisation only")
    print(f"page (click Run -> Done):       {page_s:7.1f} s")
    print(f"cli  (whole command):           {cli_wall:7.1f} s   (its run alone: {cli_run:.1f} s)")
    print(f"ratio page / cli:               {page_s / cli_wall:7.2f}   (page / cli run alone: {page_s / cli_run:.2f})")
    print(f"server RSS: idle {idle:.0f} MB, before the job {before:.0f} MB, at the end {peak:.0f} MB, "
          f"after the tab closed {after:.0f} MB (after - before: {after - before:+.0f} MB)")


if __name__ == "__main__":
    main()
