"""Soak test: N comparisons against a real server on loopback; RSS growth and latency percentiles.

Starts ``python app.py`` in a subprocess, warms it up, then sends ``--requests`` comparisons through the
public ``/compare`` API (``--clients`` at a time), cycling through benchmark scenes and photographs of
different sizes. Prints the server's resident memory after warm-up and at the end, and latency p50/p90/p99.

Run:  python benchmarks/soak.py [--requests 300] [--clients 2] [--warmup 20]
      python benchmarks/soak.py --varied [--requests 300]   # a browser session's mix (benchmarks/soak_session.py)
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from PIL import Image  # noqa: E402
from webapp import free_port, wait_until_serving  # noqa: E402


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def inputs(folder: Path) -> list[Path]:
    from attnviz.data import synth

    paths = sorted(p for p in (ROOT / "attnviz" / "assets" / "examples").glob("*.png") if "_mask" not in p.name)
    rng = np.random.default_rng(0)
    for i in range(6):
        img, _, _ = synth.render_scene(31337, i)
        side = int(rng.integers(160, 900))
        path = folder / f"scene{i}.jpg"
        Image.fromarray(img).resize((side, int(side * rng.uniform(0.6, 1.4)))).save(path, quality=90)
        paths.append(path)
    return paths


def main() -> None:
    if "--varied" in sys.argv:   # the browser session's mix: every model, methods, layers, checkpoints, re-renders
        import soak_session

        sys.argv.remove("--varied")
        soak_session.main()
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.STDOUT)
    try:
        started = wait_until_serving(f"http://127.0.0.1:{port}/", timeout=120)
        with tempfile.TemporaryDirectory() as tmp:
            images = inputs(Path(tmp))
            url = f"http://127.0.0.1:{port}/"
            clients = [Client(url, verbose=False) for _ in range(args.clients)]

            def one(i: int) -> float:
                t = time.perf_counter()
                clients[i % len(clients)].predict(handle_file(str(images[i % len(images)])), api_name="/compare")
                return time.perf_counter() - t

            for i in range(args.warmup):
                one(i)
            rss_start = rss_mb(server.pid)
            samples = [rss_start]
            latencies: list[float] = []
            t0 = time.perf_counter()
            with ThreadPoolExecutor(max_workers=args.clients) as pool:
                for k, latency in enumerate(pool.map(one, range(args.requests)), start=1):
                    latencies.append(latency)
                    if k % 25 == 0:
                        samples.append(rss_mb(server.pid))
            wall = time.perf_counter() - t0
            rss_end = rss_mb(server.pid)
        q = np.percentile(latencies, [50, 90, 99])
        print(f"server ready in {started:.1f} s; {args.requests} comparisons (5 models, Grad-CAM + Grad-CAM++), "
              f"{args.clients} clients, after {args.warmup} warm-up requests; wall {wall:.0f} s")
        print(f"RSS after warm-up {rss_start:.0f} MB, at end {rss_end:.0f} MB, growth {rss_end - rss_start:+.1f} MB "
              f"(max during run {max(samples):.0f} MB)")
        print(f"latency p50 {q[0]:.2f} s, p90 {q[1]:.2f} s, p99 {q[2]:.2f} s, mean {statistics.mean(latencies):.2f} s")
        print("RSS samples every 25 requests (MB): " + ", ".join(f"{s:.0f}" for s in samples))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
