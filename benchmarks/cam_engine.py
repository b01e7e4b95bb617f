"""Benchmark: attnviz's batched one-pass engine vs pytorch-grad-cam, images/s measured side by side in one run.

Every contender gets the same batch of ``--batch`` images with per-image targets; the contenders of a row run
interleaved round-robin (``--repeats`` rounds after one small warm-up call each), so load on a shared machine
hits them alike, and the table reports medians and their ratios.

  1. Grad-CAM + Grad-CAM++: a plain forward (no autograd; the floor), the library's batched GradCAM(x) +
     GradCAMPlusPlus(x) calls, attnviz ``explain()`` image by image, ``explain_batch()`` with Grad-CAM alone and
     with the two, and ``explain_batch()`` with all ten one-pass methods; the last column is explain_batch's time
     as a multiple of the plain forward's (one method / two);
  2. each newer one-pass method (Grad-CAM element-wise, EigenGrad-CAM, Eigen-CAM, KPCA-CAM, Finer-CAM) vs its
     library class;
  3. three fused layers (ResNet-50: layer2+layer3+layer4; the bundled models: layer1+layer2+layer3), Grad-CAM +
     Grad-CAM++, vs the library with the same ``target_layers``.

Run:  python benchmarks/cam_engine.py --batch 16 [--repeats 3] [--threads 2] [--models resnet50,baseline,cbam,triplet]
(``attnviz bench`` runs it too.)
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torchvision  # noqa: E402
from pytorch_grad_cam import KPCA_CAM, EigenCAM, EigenGradCAM, FinerCAM, GradCAM, GradCAMElementWise, GradCAMPlusPlus  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

from attnviz.api import explain, explain_batch  # noqa: E402
from attnviz.core import methods as catalogue  # noqa: E402
from attnviz.zoo import registry as zoo  # noqa: E402

NEW_METHODS = {"gradcamelementwise": GradCAMElementWise, "eigengradcam": EigenGradCAM, "eigencam": EigenCAM,
               "kpcacam": KPCA_CAM, "finercam": FinerCAM}
ALL_ONE_PASS = catalogue.names(catalogue.ONE_PASS)


class Case:
    """A model, its CAM layer(s), a batch and per-image targets."""

    def __init__(self, label: str, model: torch.nn.Module, layer: str, fused: list[str], side: int, batch: int):
        self.label, self.model, self.layer, self.fused = label, model.eval(), layer, fused
        self.x = torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            classes = int(self.model(self.x[:1]).shape[1])
        self.targets = [int(t) for t in torch.randint(0, classes, (batch,), generator=torch.Generator().manual_seed(1))]

    def modules(self, names: list[str]) -> list[torch.nn.Module]:
        return [self.model.get_submodule(n) for n in names]


def cases(names: list[str], batch: int) -> list[Case]:
    out = []
    for name in names:
        if name == "resnet50":
            torch.manual_seed(0)
            out.append(Case("torchvision resnet50 @224", torchvision.models.resnet50(), "layer4",
                            ["layer2", "layer3", "layer4"], 224, batch))
        else:
            loaded = zoo.load(name, "cpu")
            out.append(Case(f"bundled {name} @{loaded.spec.input_size}", loaded.model, loaded.spec.default_layer,
                            ["layer1", "layer2", "layer3"], loaded.spec.input_size, batch))
    return out


def library(case: Case, classes: list[type], layers: list[str], per_image_targets: bool = True) -> Callable:
    """pytorch-grad-cam called once per class on the whole batch (hooks live only during the call, as ours)."""
    def run(x: torch.Tensor, targets: list[int]) -> None:
        wanted = [ClassifierOutputTarget(t) for t in targets] if per_image_targets else None
        for cls in classes:
            with cls(model=case.model, target_layers=case.modules(layers)) as cam:
                cam(x, targets=wanted)
    return run


def engine_batch(case: Case, methods: tuple[str, ...], layers: list[str], per_image_targets: bool = True,
                 record: bool = False) -> Callable:
    def run(x: torch.Tensor, targets: list[int]) -> None:
        explain_batch(case.model, x, methods, targets=targets if per_image_targets else None,
                      layer=layers if len(layers) > 1 else layers[0], batch_size=len(x), record=record)
    return run


def plain_forward(case: Case) -> Callable:
    """The floor: the model's forward alone, without autograd."""
    def run(x: torch.Tensor, targets: list[int]) -> None:
        with torch.no_grad():
            case.model(x)
    return run


def engine_per_image(case: Case, methods: tuple[str, ...]) -> Callable:
    def run(x: torch.Tensor, targets: list[int]) -> None:
        for i in range(len(x)):
            explain(case.model, x[i:i + 1], methods, target=targets[i], layer=case.layer, record=False)
    return run


def images_per_s(case: Case, contenders: dict[str, Callable], repeats: int) -> dict[str, float]:
    """Median images/s of each contender, interleaved round-robin after one warm-up call on two images."""
    for fn in contenders.values():
        fn(case.x[:2], case.targets[:2])
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            t = time.perf_counter()
            fn(case.x, case.targets)
            samples[name].append(len(case.x) / (time.perf_counter() - t))
    return {k: statistics.median(v) for k, v in samples.items()}


def section_one(all_cases: list[Case], repeats: int) -> None:
    two = ("gradcam", "gradcam++")
    print("\n## Grad-CAM + Grad-CAM++, per-image targets\n")
    print("| model | plain forward | library (batched) | explain() per image | explain_batch, Grad-CAM | "
          "explain_batch | explain_batch, all 10 methods | batch / library | batch / per image | "
          "time vs plain forward: Grad-CAM / two |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case in all_cases:
        r = images_per_s(case, {
            "plain": plain_forward(case),
            "library": library(case, [GradCAM, GradCAMPlusPlus], [case.layer]),
            "single": engine_per_image(case, two),
            "one": engine_batch(case, ("gradcam",), [case.layer]),
            "batch": engine_batch(case, two, [case.layer]),
            "all10": engine_batch(case, ALL_ONE_PASS, [case.layer]),
        }, repeats)
        print(f"| {case.label}, {case.layer} | {r['plain']:.1f} | {r['library']:.1f} | {r['single']:.1f} | "
              f"{r['one']:.1f} | {r['batch']:.1f} | {r['all10']:.1f} | **{r['batch'] / r['library']:.2f}×** | "
              f"{r['batch'] / r['single']:.2f}× | {r['plain'] / r['one']:.2f}× / {r['plain'] / r['batch']:.2f}× |",
              flush=True)


def section_two(all_cases: list[Case], args: argparse.Namespace) -> None:
    print("\n## Newer one-pass methods vs their pytorch-grad-cam class\n")
    print("| model | method | library (batched) | explain_batch | batch / library |")
    print("|---|---|---|---|---|")
    chosen = {m.strip() for m in args.new_methods_on.split(",")}
    for case in [c for c, name in zip(all_cases, args.models.split(",")) if name.strip() in chosen]:
        for method, cls in NEW_METHODS.items():
            per_image = method != "finercam"  # Finer-CAM: the library's default targets (top-1 vs its neighbours)
            r = images_per_s(case, {
                "library": library(case, [cls], [case.layer], per_image),
                "batch": engine_batch(case, (method,), [case.layer], per_image),
            }, args.repeats)
            print(f"| {case.label}, {case.layer} | {method} | {r['library']:.1f} | {r['batch']:.1f} | "
                  f"{r['batch'] / r['library']:.2f}× |", flush=True)


def section_three(all_cases: list[Case], repeats: int) -> None:
    two = ("gradcam", "gradcam++")
    print("\n## Three fused layers, Grad-CAM + Grad-CAM++\n")
    print("| model | layers | library (batched) | explain_batch | batch / library |")
    print("|---|---|---|---|---|")
    for case in all_cases:
        r = images_per_s(case, {
            "library": library(case, [GradCAM, GradCAMPlusPlus], case.fused),
            "batch": engine_batch(case, two, case.fused),
        }, repeats)
        print(f"| {case.label} | {'+'.join(case.fused)} | {r['library']:.1f} | {r['batch']:.1f} | "
              f"{r['batch'] / r['library']:.2f}× |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--models", default="resnet50,baseline,cbam,triplet",
                        help="resnet50 (torchvision, random weights) and/or bundled model names")
    parser.add_argument("--sections", default="1,2,3", help="which of the three sections to run")
    parser.add_argument("--new-methods-on", default="resnet50,cbam",
                        help="models that get the per-method rows (section 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# torch {torch.__version__}, {args.threads} threads, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {load:.1f} at start; batch {args.batch}; images/s, medians of {args.repeats} "
          f"interleaved rounds")
    all_cases = cases([m.strip() for m in args.models.split(",") if m.strip()], args.batch)
    sections = {int(v) for v in args.sections.split(",")}
    if 1 in sections:
        section_one(all_cases, args.repeats)
    if 2 in sections:
        section_two(all_cases, args)
    if 3 in sections:
        section_three(all_cases, args.repeats)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n# load average {load:.1f} at the end")


if __name__ == "__main__":
    main()
