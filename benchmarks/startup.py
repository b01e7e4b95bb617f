"""Start-up, side by side in one run (issue 30): the floor ``python -c "import torch, gradio"``, ``python app.py``
until the page answers HTTP 200, ``attnviz models`` (wall time and peak RSS), and ``attnviz explain one.png``
until the first image is read.

Each measurement is a fresh process; the four kinds are interleaved round by round, so a busy machine slows
them alike. Prints the medians and each kind against its target::

    python benchmarks/startup.py --rounds 5
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from webapp import free_port  # noqa: E402

ENV = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1",
       "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
# The probe: the real `attnviz explain` entry point, with the image decoder wrapped to print when it is first
# called (then the process ends: what follows is the work, not the start).
PROBE = """
import os, sys
import attnviz.app.batch as batch
real = batch.decode_image
def first_read(*a, **k):
    print("FIRST-READ", flush=True)
    os._exit(0)
batch.decode_image = first_read
from attnviz.app.cli import main
main(["explain", sys.argv[1], "--out", sys.argv[2], "--quiet", "--workers", "0"])
"""


def _wait_peak_rss(proc: subprocess.Popen) -> tuple[int, float]:
    """Exit status and the child's peak RSS in MB (from wait4)."""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024


def floor(modules: str = "torch, gradio") -> float:
    """A fresh interpreter importing ``modules``: what no start of the page (or of explain) can go below."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {modules}"], env=ENV, check=True)
    return time.perf_counter() - t


def app_to_200(timeout: float = 180) -> float:
    port = free_port()
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env={**ENV, "GRADIO_SERVER_PORT": str(port)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - t < timeout:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - t
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("app.py did not answer")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def models_list() -> tuple[float, float]:
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "attnviz", "models"], cwd=ROOT, env=ENV,
                            stdout=subprocess.DEVNULL)
    rc, rss = _wait_peak_rss(proc)
    if rc != 0:
        raise RuntimeError("attnviz models failed")
    return time.perf_counter() - t, rss


def explain_start(image: Path, out: Path) -> float:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", PROBE, str(image), str(out)], cwd=ROOT, env=ENV,
                       capture_output=True, text=True)
    if "FIRST-READ" not in r.stdout:
        raise RuntimeError(f"explain did not reach the first image: {r.stderr[-500:]}")
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    image = next(p for p in sorted((ROOT / "attnviz" / "assets" / "examples").glob("*.png"))
                 if not p.name.endswith("_mask.png"))
    results: dict[str, list[float]] = {"floor": [], "app": [], "models": [], "models_rss": [], "explain": [],
                                       "floor_tv": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.rounds):
            results["floor"].append(floor())
            results["app"].append(app_to_200())
            seconds, rss = models_list()
            results["models"].append(seconds)
            results["models_rss"].append(rss)
            results["explain"].append(explain_start(image, Path(tmp) / f"o{k}"))
            results["floor_tv"].append(floor("torch, torchvision"))   # the zoo's ResNets subclass torchvision's
            print(f"round {k + 1}: floor {results['floor'][-1]:.2f} s (torch+torchvision {results['floor_tv'][-1]:.2f} s), app.py {results['app'][-1]:.2f} s, models "
                  f"{seconds:.2f} s / {rss:.0f} MB, explain start {results['explain'][-1]:.2f} s", flush=True)
    med = {key: statistics.median(v) for key, v in results.items()}
    load = os.getloadavg()[0]
    print(f"\nmedians of {args.rounds} rounds (load average {load:.1f} at the end; "
          f"{os.cpu_count()} cores):")
    print(f"  floor `python -c 'import torch, gradio'`   {med['floor']:.2f} s")
    print(f"  `python app.py` to HTTP 200              {med['app']:.2f} s = floor + {med['app'] - med['floor']:.2f} s "
          f"(target: floor + 2 s) -> {'met' if med['app'] <= med['floor'] + 2 else 'NOT met'}")
    print(f"  `attnviz models`                         {med['models']:.2f} s, {med['models_rss']:.0f} MB peak RSS "
          f"(target: <= 1.5 s, <= 300 MB) -> "
          f"{'met' if med['models'] <= 1.5 and med['models_rss'] <= 300 else 'NOT met'}")
    print(f"  `attnviz explain one.png` to first read  {med['explain']:.2f} s (target: <= 2.5 s) -> "
          f"{'met' if med['explain'] <= 2.5 else 'NOT met'}; floor `import torch, torchvision` "
          f"{med['floor_tv']:.2f} s (explain start / that floor {med['explain'] / med['floor_tv']:.2f})")
    print(f"  ratios: app / floor {med['app'] / med['floor']:.2f}, explain start / floor "
          f"{med['explain'] / med['floor']:.2f}")


if __name__ == "__main__":
    main()
