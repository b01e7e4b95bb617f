"""Where the server's memory goes: resident set size (RSS) of fresh processes, one import layer at a time.

Each row runs in its own new Python process (``--repeats`` times; the median is printed), so one row's
imports never leak into the next. attnviz's own share is the RSS of the page with the whole bundled zoo
loaded (and after one request with every bundled model) minus the RSS of a bare
``import torch, gradio, pytorch_grad_cam`` — the libraries attnviz cannot run without.

The row with "one plain torch forward/backward" runs no attnviz code after loading: what PyTorch itself
keeps after its first backward pass (thread pools, allocator caches), which every request then pays too.
The last rows start the real server (``python app.py``) and read its RSS after start and after one
``/compare`` call with every bundled model (Grad-CAM + Grad-CAM++).

Run:  python benchmarks/memory.py [--repeats 3] [--no-server]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = "import torch, gradio, pytorch_grad_cam"

# (label, code run in a fresh interpreter before RSS is read)
STEPS: list[tuple[str, str]] = [
    ("bare python", "pass"),
    ("import torch", "import torch"),
    ("import gradio", "import gradio"),
    ("import torch, gradio", "import torch, gradio"),
    ("import torch, gradio, pytorch_grad_cam", BASE),
    ("... + import timm", f"{BASE}; import timm"),
    ("... + import attnviz.app.web.page", f"{BASE}; import attnviz.app.web.page"),
    ("... + page built (attnviz.app.web.page.build_app())", f"{BASE}; import attnviz.app.web.page; attnviz.app.web.page.build_app()"),
    ("... + page built + whole bundled zoo loaded",
     f"{BASE}; import attnviz.app.web.page; attnviz.app.web.page.build_app(); from attnviz import zoo; "
     "[zoo.load(n) for n in zoo.bundled()]"),
    ("... + page built + whole bundled zoo loaded + one plain torch forward/backward",
     f"{BASE}; import attnviz.app.web.page; attnviz.app.web.page.build_app(); from attnviz import zoo; "
     "[zoo.load(n) for n in zoo.bundled()]; x = torch.randn(1, 3, 128, 128, requires_grad=True); "
     "zoo.load('baseline').model(x)[0, 0].backward()"),
    ("... + page built + one request with every bundled model",
     f"{BASE}; import attnviz.app.web.page; attnviz.app.web.page.build_app(); from attnviz import pipeline, zoo; "
     "scene = sorted(p for p in attnviz.data.examples.EXAMPLES_DIR.glob('*.png') if 'mask' not in p.name)[0]; "
     "pipeline.run(pipeline.Request(image=scene, models=zoo.bundled()))"),
]

REPORT = ("import json, sys; print(json.dumps({'rss_mb': int(open('/proc/self/status').read()"
          ".split('VmRSS:')[1].split()[0]) / 1024, 'timm': 'timm' in sys.modules, "
          "'skimage': 'skimage' in sys.modules}))")


# After `import torch`: resident pages of the CUDA libraries the CUDA wheel maps (the CPU wheel has none).
CUDA_SHARE = """
import re, json, torch
cuda = re.compile(r"/nvidia/|libtorch_cuda|/cuda/|cudnn|nccl|cublas|cusparse|cufft|nvrtc|nvJitLink|triton")
total = mapped = 0
name = ""
for line in open("/proc/self/smaps"):
    head = line.split()
    if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
        name = head[5] if len(head) >= 6 else ""
    elif line.startswith("Rss:"):
        total += int(head[1])
        if cuda.search(name):
            mapped += int(head[1])
print(json.dumps({"rss_mb": total / 1024, "cuda_libs_mb": mapped / 1024, "torch": torch.__version__}))
"""


def _env() -> dict[str, str]:
    return {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2",
            "PYTHONPATH": str(ROOT)}


def measure(code: str) -> dict:
    """RSS of a fresh interpreter after running ``code``."""
    out = subprocess.run([sys.executable, "-c", f"{code}\n{REPORT}"], cwd=ROOT, env=_env(), capture_output=True,
                         text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"step failed: {code}\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def rss_of(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def server_rows() -> list[tuple[str, float]]:
    """RSS of ``python app.py`` after start, and after one /compare with every bundled model."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "tests"))
    from gradio_client import Client, handle_file
    from webapp import free_port, wait_until_serving

    port = free_port()
    env = {**_env(), "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1"}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_serving(url, timeout=120)
        time.sleep(2)
        started = rss_of(proc.pid)
        names = sorted(p for p in (ROOT / "models" / "weights").glob("*.json"))
        bundled = ",".join(json.loads(p.read_text())["name"] for p in names)
        scene = sorted(p for p in (ROOT / "attnviz" / "assets" / "examples").glob("*.png") if "mask" not in p.name)[0]
        Client(url, verbose=False).predict(handle_file(str(scene)), bundled, api_name="/compare")
        time.sleep(1)
        return [("python app.py, after start", started),
                ("python app.py, after one /compare with every bundled model", rss_of(proc.pid))]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-server", action="store_true", help="skip the python app.py rows")
    args = parser.parse_args()
    rows: dict[str, float] = {}
    print("| process | RSS (MB, median) | timm imported |")
    print("|---|---|---|")
    for label, code in STEPS:
        runs = [measure(code) for _ in range(args.repeats)]
        rows[label] = statistics.median(r["rss_mb"] for r in runs)
        print(f"| {label} | {rows[label]:.0f} | {'yes' if runs[0]['timm'] else 'no'} |", flush=True)
    base = rows["import torch, gradio, pytorch_grad_cam"]
    for label, _ in STEPS[-4:]:
        print(f"attnviz share, {label.removeprefix('... + ')}: {rows[label] - base:+.0f} MB")
    print(f"import timm on top of the base: {rows['... + import timm'] - base:+.0f} MB")
    out = subprocess.run([sys.executable, "-c", CUDA_SHARE], cwd=ROOT, env=_env(), capture_output=True, text=True,
                         timeout=600)
    cuda = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"import torch ({cuda['torch']}): {cuda['rss_mb']:.0f} MB, of which {cuda['cuda_libs_mb']:.0f} MB are "
          "resident pages of CUDA libraries (libtorch_cuda, cuBLAS, nvrtc, ... — absent with the CPU wheel)")
    if not args.no_server:
        for label, value in server_rows():
            print(f"| {label} | {value:.0f} | |")


if __name__ == "__main__":
    main()
