"""Benchmark: attnviz's one-pass CAM engine vs pytorch-grad-cam, measured side by side in one run.

For each model it times, interleaved round-robin so machine noise hits every contender alike:
  plain      model(x) under torch.no_grad()                      (the floor)
  library    GradCAM(...)(x) + GradCAMPlusPlus(...)(x)           (two pytorch-grad-cam calls)
  engine2    attnviz explain(): Grad-CAM + Grad-CAM++            (one forward, restricted backward)
  engine5    attnviz explain(): all five one-pass methods + attention recording
and prints medians and the ratios the engine issue asks for.

Run:  python benchmarks/cam_engine.py [--repeats 15] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torchvision  # noqa: E402
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

import models  # noqa: E402
from attnviz.engine import explain  # noqa: E402

FIVE = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam")


def cases() -> list[tuple[str, torch.nn.Module, str, int]]:
    return [
        ("torchvision resnet50 @224, layer4", torchvision.models.resnet50(), "layer4", 224),
        ("torchvision resnet50 @224, layer3", torchvision.models.resnet50(), "layer3", 224),
        ("cbam_resnet50 @224, layer4", models.build("cbam_resnet50"), "layer4", 224),
        ("triplet_resnet50 @224, layer4", models.build("triplet_resnet50"), "layer4", 224),
        ("small_resnet (baseline) @128, layer3", models.build("small_resnet", 11), "layer3", 128),
        ("small_resnet_triplet @128, layer3", models.build("small_resnet_triplet", 11), "layer3", 128),
        ("small_resnet_coord @128, layer3", models.build("small_resnet_coord", 11), "layer3", 128),
    ]


def bench(model: torch.nn.Module, layer: str, side: int, repeats: int) -> dict[str, float]:
    model.eval()
    x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        target = int(model(x).argmax())
    layer_module = model.get_submodule(layer)
    gradcam = GradCAM(model=model, target_layers=[layer_module])
    gradcampp = GradCAMPlusPlus(model=model, target_layers=[layer_module])
    targets = [ClassifierOutputTarget(target)]

    def plain() -> None:
        with torch.no_grad():
            model(x)

    def library() -> None:
        gradcam(input_tensor=x, targets=targets)
        gradcampp(input_tensor=x, targets=targets)

    def engine2() -> None:
        explain(model, x, methods=("gradcam", "gradcam++"), layer=layer, target=target, record=False)

    def engine5() -> None:
        explain(model, x, methods=FIVE, layer=layer, target=target, record=True)

    contenders = {"plain": plain, "library": library, "engine2": engine2, "engine5": engine5}
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(3):  # warm-up
        for fn in contenders.values():
            fn()
    for _ in range(repeats):
        for name, fn in contenders.items():
            t = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - t) * 1000)
    gradcam.activations_and_grads.release()
    gradcampp.activations_and_grads.release()
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"# torch {torch.__version__}, {args.threads} threads, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; medians of {args.repeats} interleaved runs (ms)")
    header = f"{'model':40s} {'plain':>8s} {'library':>9s} {'engine2':>9s} {'engine5':>9s} " \
             f"{'library/engine2':>16s} {'engine5/plain':>14s}"
    print(header)
    for label, model, layer, side in cases():
        r = bench(model, layer, side, args.repeats)
        print(f"{label:40s} {r['plain']:8.1f} {r['library']:9.1f} {r['engine2']:9.1f} {r['engine5']:9.1f} "
              f"{r['library'] / r['engine2']:15.2f}x {r['engine5'] / r['plain']:13.2f}x", flush=True)


if __name__ == "__main__":
    main()
