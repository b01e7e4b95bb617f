"""Load: N simulated users calling the page's /compare through gradio_client, on loopback, bounded in time and count.

The server is ``python app.py`` in a subprocess (its settings: ATTNVIZ_CONCURRENCY, default 2 running at once;
ATTNVIZ_QUEUE_SIZE, default 64 waiting). Each user has its own client (its own session) and its own image, and
sends one request after another for ``--seconds`` (the requests in flight then finish) or ``--max-requests``,
whichever comes first. Every answer's logits are compared with the logits a lone request for that user's image got
before the load (a response carrying another user's result counts as ``mixed``). The server's RSS is read from
/proc once a second.

Then the over-capacity burst: ``--burst`` requests at once (more than running + waiting) of a light request; the
ones beyond the queue are refused at once with Gradio's "Queue is full! Please try again." (the page shows "This
application is currently busy. Please try again."), and the time until each refusal is reported.

Run:  python benchmarks/load.py [--users 1,2,4,8,16] [--seconds 40] [--max-requests 400] [--burst 80]
      [--models baseline,se,...] (default: the page's default selection) [--out load.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from soak import rss_mb  # noqa: E402
from webapp import free_port, wait_until_serving  # noqa: E402

LIGHT = ("baseline", "gradcam")   # the burst's request: one model, one method
BUSY_MESSAGE = "Queue is full"


@dataclass
class Outcome:
    user: int
    started: float
    latency_s: float
    error: str = ""
    mixed: bool = False


@dataclass
class Level:
    users: int
    outcomes: list[Outcome] = field(default_factory=list)
    rss_mb: list[tuple[float, float]] = field(default_factory=list)
    wall_s: float = 0.0

    def summary(self) -> dict:
        done = [o for o in self.outcomes if not o.error]
        latencies = np.array([o.latency_s for o in done]) if done else np.array([np.nan])
        rss = [r for _, r in self.rss_mb] or [float("nan")]
        return {"users": self.users, "requests": len(self.outcomes), "ok": len(done),
                "errors": sum(1 for o in self.outcomes if o.error), "mixed": sum(o.mixed for o in self.outcomes),
                "throughput_per_s": round(len(done) / self.wall_s, 3) if self.wall_s else 0.0,
                "p50_s": round(float(np.percentile(latencies, 50)), 2),
                "p95_s": round(float(np.percentile(latencies, 95)), 2),
                "p99_s": round(float(np.percentile(latencies, 99)), 2),
                "rss_start_mb": round(rss[0]), "rss_max_mb": round(max(rss)), "rss_end_mb": round(rss[-1]),
                "first_errors": sorted({o.error for o in self.outcomes if o.error})[:3]}


def user_images(folder: Path, n: int) -> list[Path]:
    """One distinct picture per user: the benchmark's synthetic scenes, each its own size."""
    from PIL import Image

    from attnviz.data import synth

    paths = []
    for i in range(n):
        img, _, _ = synth.render_scene(4242, i)
        path = folder / f"user{i}.png"
        Image.fromarray(img).resize((128 + 8 * i, 128 + 4 * i)).save(path)
        paths.append(path)
    return paths


def start_server(env_extra: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1",
               GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **(env_extra or {}))
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    wait_until_serving(url, timeout=300)
    return proc, url


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def compare(client, image: Path, models: str, methods: str) -> list[np.ndarray]:
    """One /compare call; every model's logits, in the order asked for."""
    from gradio_client import handle_file

    _, _, report = client.predict(handle_file(str(image)), models, methods, "", api_name="/compare")
    return [np.asarray(m["logits"], np.float32) for m in report["models"]]


def references(url: str, images: list[Path], models: str, methods: str) -> list[list[np.ndarray]]:
    """What a lone request for each image gets (also warms every model up)."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    return [compare(client, image, models, methods) for image in images]


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(x.shape == y.shape and np.allclose(x, y, rtol=1e-4, atol=1e-4)
                                    for x, y in zip(a, b))


def _user(url: str, index: int, image: Path, expected: list[np.ndarray], models: str, methods: str,
          deadline: float, budget: list[int], lock: threading.Lock, out: list[Outcome]) -> None:
    from gradio_client import Client

    client = Client(url, verbose=False)
    while time.monotonic() < deadline:
        with lock:
            if budget[0] <= 0:
                return
            budget[0] -= 1
        start = time.monotonic()
        try:
            got = compare(client, image, models, methods)
            out.append(Outcome(index, start, time.monotonic() - start, mixed=not _same(got, expected)))
        except Exception as exc:  # noqa: BLE001 - every failure a user would see is counted and reported
            out.append(Outcome(index, start, time.monotonic() - start, error=f"{type(exc).__name__}: {exc}"[:200]))


def run_level(url: str, pid: int, users: int, images: list[Path], expected: list[list[np.ndarray]], models: str,
              methods: str, seconds: float, max_requests: int) -> Level:
    """``users`` users for ``seconds`` (or ``max_requests`` requests in all); requests in flight finish."""
    level = Level(users)
    budget, lock = [max_requests], threading.Lock()
    stop = threading.Event()
    start = time.monotonic()

    def sample() -> None:
        while not stop.is_set():
            level.rss_mb.append((round(time.monotonic() - start, 1), rss_mb(pid)))
            stop.wait(1.0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    threads = [threading.Thread(target=_user, args=(url, i, images[i % len(images)], expected[i % len(images)],
                                                    models, methods, start + seconds, budget, lock, level.outcomes))
               for i in range(users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    level.wall_s = time.monotonic() - start
    stop.set()
    sampler.join()
    return level


def burst(url: str, image: Path, count: int) -> dict:
    """``count`` light requests at once, each from its own client: how many were refused, and how fast."""
    from gradio_client import Client

    clients = [Client(url, verbose=False) for _ in range(count)]
    barrier = threading.Barrier(count)

    def one(client) -> tuple[str, float]:
        barrier.wait()
        start = time.monotonic()
        try:
            compare(client, image, *LIGHT)
            return "ok", time.monotonic() - start
        except Exception as exc:  # noqa: BLE001 - the refusal is the point; its message is recorded
            return f"{type(exc).__name__}: {exc}", time.monotonic() - start

    with ThreadPoolExecutor(count) as pool:
        results = list(pool.map(one, clients))
    refused = [(m, t) for m, t in results if m != "ok"]
    return {"requests": count, "ok": len(results) - len(refused), "refused": len(refused),
            "refused_with_busy_message": sum(BUSY_MESSAGE in m for m, _ in refused),
            "slowest_refusal_s": round(max((t for _, t in refused), default=0.0), 2),
            "slowest_ok_s": round(max((t for m, t in results if m == "ok"), default=0.0), 1),
            "messages": sorted({m for m, _ in refused})[:3]}


def markdown(rows: list[dict]) -> str:
    head = ("| users | requests | ok | errors | mixed | throughput (req/s) | p50 (s) | p95 (s) | p99 (s) | "
            "server RSS start / max / end (MB) |\n|---|---|---|---|---|---|---|---|---|---|\n")
    return head + "".join(
        f"| {r['users']} | {r['requests']} | {r['ok']} | {r['errors']} | {r['mixed']} | {r['throughput_per_s']} | "
        f"{r['p50_s']} | {r['p95_s']} | {r['p99_s']} | {r['rss_start_mb']} / {r['rss_max_mb']} / "
        f"{r['rss_end_mb']} |\n" for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", default="1,2,4,8,16")
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--max-requests", type=int, default=400, help="per level, all users together")
    parser.add_argument("--burst", type=int, default=80, help="0: no over-capacity burst")
    parser.add_argument("--models", default="", help="comma-separated (default: the page's default selection)")
    parser.add_argument("--methods", default="gradcam,gradcam++")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    from attnviz.zoo.registry import default_models

    models = args.models or ",".join(default_models())
    levels = [int(n) for n in args.users.split(",")]
    proc, url = start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            images = user_images(Path(tmp), max(levels))
            expected = references(url, images, models, args.methods)
            rows = []
            for n in levels:
                row = run_level(url, proc.pid, n, images, expected, models, args.methods, args.seconds,
                                args.max_requests).summary()
                print(json.dumps(row), flush=True)
                rows.append(row)
            over = burst(url, images[0], args.burst) if args.burst else {}
    finally:
        stop_server(proc)
    print(f"\nmodels: {models}; methods: {args.methods}; {args.seconds:g} s per level; "
          f"ATTNVIZ_CONCURRENCY={os.environ.get('ATTNVIZ_CONCURRENCY', '2')}, "
          f"ATTNVIZ_QUEUE_SIZE={os.environ.get('ATTNVIZ_QUEUE_SIZE', '64')}\n")
    print(markdown(rows))
    if over:
        print("over capacity:", json.dumps(over))
    if args.out:
        Path(args.out).write_text(json.dumps({"models": models, "methods": args.methods, "levels": rows,
                                              "burst": over}, indent=2) + "\n")


if __name__ == "__main__":
    main()
