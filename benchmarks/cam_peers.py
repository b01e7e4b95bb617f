"""Benchmark: attnviz against its peers on the same Grad-CAM work — TorchCAM, Captum, pytorch-grad-cam — and a plain
forward, side by side in one run; then each one's peak memory at batch 64 against a plain forward's.

The work: ResNet-50 (torchvision, random weights) at 224 px, per-image targets, every image's Grad-CAM map at the
input size, in [0, 1]. TorchCAM and Captum return layer-resolution maps (Captum un-normalised), so their rows add the
ReLU, the min-max scaling and the bilinear resize to 224 px that attnviz and pytorch-grad-cam do. TorchCAM's
Grad-CAM + Grad-CAM++ row hooks both extractors and runs one forward; Captum has no Grad-CAM++. The contenders of a
row run interleaved round-robin (``--repeats`` rounds after one warm-up call each); medians, and each contender's
time as a multiple of attnviz's (above 1: slower than attnviz). The largest difference of each peer's Grad-CAM
maps from attnviz's is printed too, so the rows are known to do the same work.

Memory: every contender runs once at batch 64 in a fresh process; the figure is the peak resident set size during
the call minus the resident set size just before it (the model and the input already in memory).

Needs the benchmark-only dependencies (benchmarks/requirements.txt): ``pip install -r benchmarks/requirements.txt``.
Run:  OMP_NUM_THREADS=1 python benchmarks/cam_peers.py [--repeats 5] [--threads 1] [--memory-batch 64]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision  # noqa: E402

from attnviz.api import explain_batch  # noqa: E402

SIDE = 224
COLUMNS = ("plain forward", "attnviz", "TorchCAM", "Captum", "pytorch-grad-cam")


def _to_input_size(cams: torch.Tensor) -> np.ndarray:
    """(B, h, w) layer maps -> ReLU, per-map min-max, bilinear resize to the input (what attnviz returns)."""
    cams = cams.detach().float().clamp_min(0)
    cams = cams - cams.amin(dim=(1, 2), keepdim=True)
    cams = cams / (1e-7 + cams.amax(dim=(1, 2), keepdim=True))
    up = F.interpolate(cams[:, None], size=(SIDE, SIDE), mode="bilinear", align_corners=False)[:, 0]
    up = up - up.amin(dim=(1, 2), keepdim=True)
    return (up / (1e-7 + up.amax(dim=(1, 2), keepdim=True))).numpy()


def plain(net: torch.nn.Module) -> Callable:
    def run(x: torch.Tensor, targets: list[int]) -> None:
        with torch.no_grad():
            net(x)
    return run


def attnviz(net: torch.nn.Module, methods: tuple[str, ...]) -> Callable:
    def run(x: torch.Tensor, targets: list[int]):
        out = explain_batch(net, x, methods, targets=targets, layer="layer4", batch_size=len(x), record=False)
        return np.stack([e.cams["gradcam"].heatmap for e in out])
    return run


def torchcam(net: torch.nn.Module, methods: tuple[str, ...]) -> Callable:
    from torchcam.methods import GradCAM, GradCAMpp

    classes = {"gradcam": GradCAM, "gradcam++": GradCAMpp}

    def run(x: torch.Tensor, targets: list[int]):
        extractors = [classes[m](net, "layer4", input_shape=tuple(x.shape[1:])) for m in methods]
        try:
            scores = net(x)
            maps = [_to_input_size(ext(class_idx=targets, scores=scores, retain_graph=k < len(extractors) - 1)[0])
                    for k, ext in enumerate(extractors)]
        finally:
            for ext in extractors:
                ext.remove_hooks()
        return maps[0]
    return run


def captum(net: torch.nn.Module) -> Callable:
    from captum.attr import LayerGradCam

    def run(x: torch.Tensor, targets: list[int]):
        attribution = LayerGradCam(net, net.layer4).attribute(x, target=targets)
        return _to_input_size(attribution[:, 0])
    return run


def library(net: torch.nn.Module, methods: tuple[str, ...]) -> Callable:
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    classes = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus}

    def run(x: torch.Tensor, targets: list[int]):
        maps = []
        for m in methods:
            with classes[m](model=net, target_layers=[net.layer4]) as cam:
                maps.append(cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets]))
        return maps[0]
    return run


def contenders(net: torch.nn.Module, methods: tuple[str, ...]) -> dict[str, Callable]:
    out = {"plain forward": plain(net), "attnviz": attnviz(net, methods), "TorchCAM": torchcam(net, methods)}
    if methods == ("gradcam",):
        out["Captum"] = captum(net)
    out["pytorch-grad-cam"] = library(net, methods)
    return out


def setup(batch: int) -> tuple[torch.nn.Module, torch.Tensor, list[int]]:
    torch.manual_seed(0)
    net = torchvision.models.resnet50().eval()
    x = torch.randn(batch, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(batch))
    targets = [int(t) for t in torch.randint(0, 1000, (batch,), generator=torch.Generator().manual_seed(1))]
    return net, x, targets


def row(methods: tuple[str, ...], batch: int, repeats: int) -> None:
    net, x, targets = setup(batch)
    fns = contenders(net, methods)
    ours = fns["attnviz"](x, targets)
    diffs = {k: float(np.abs(fn(x, targets) - ours).max()) for k, fn in fns.items()
             if k not in ("plain forward", "attnviz")}
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn(x, targets)
            samples[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in samples.items()}
    label = " + ".join({"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++"}[m] for m in methods)
    cells = [f"{batch / med[k]:.2f} ({med[k] / med['attnviz']:.2f}×)" if k in med else "—" for k in COLUMNS]
    print(f"| {label}, batch {batch} | {' | '.join(cells)} | "
          f"{', '.join(f'{k} {v:.1e}' for k, v in diffs.items())} |", flush=True)


def memory_child(name: str, batch: int) -> None:
    methods = ("gradcam",)
    net, x, targets = setup(batch)
    fn = contenders(net, methods)[name]
    with open("/proc/self/status") as f:
        before = int(f.read().split("VmRSS:")[1].split()[0])
    fn(x, targets)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"name": name, "peak_over_before_mib": round((peak - before) / 1024, 1)}))


def memory(batch: int, threads: int) -> None:
    print(f"\n## Peak memory, Grad-CAM, batch {batch} (fresh process each; peak RSS during the call minus RSS "
          f"before it)\n")
    print("| contender | peak over before (MiB) | vs plain forward |")
    print("|---|---|---|")
    rows = {}
    for name in ("plain forward", "attnviz", "TorchCAM", "Captum", "pytorch-grad-cam"):
        out = subprocess.run([sys.executable, __file__, "--memory-child", name, "--memory-batch", str(batch),
                              "--threads", str(threads)], capture_output=True, text=True, check=True)
        rows[name] = json.loads(out.stdout.strip().splitlines()[-1])["peak_over_before_mib"]
        print(f"| {name} | {rows[name]:.0f} | {rows[name] - rows['plain forward']:+.0f} MiB |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", default="1,16")
    parser.add_argument("--memory-batch", type=int, default=64, help="0: skip the memory rows")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args.memory_batch)
        return
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# torch {torch.__version__}, {args.threads} thread(s), {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {load:.1f} at start; ResNet-50 @224, layer4, per-image targets; medians of "
          f"{args.repeats} interleaved rounds\n")
    print("Images/s, and in brackets the time as a multiple of attnviz's (above 1: slower than attnviz).\n")
    print(f"| work | {' | '.join(COLUMNS)} | max map difference from attnviz |")
    print("|---|---|---|---|---|---|---|")
    for batch in [int(b) for b in args.batches.split(",")]:
        row(("gradcam",), batch, args.repeats)
    row(("gradcam", "gradcam++"), max(int(b) for b in args.batches.split(",")), args.repeats)
    if args.memory_batch:
        memory(args.memory_batch, args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n# load average {load:.1f} at the end")


if __name__ == "__main__":
    main()
