"""Benchmark: the map methods issue 28 added, each against its pytorch-grad-cam 1.5.7 counterpart and a plain forward,
side by side in one run.

The work: torchvision's ResNet-50 (random weights) at 224 px, a batch of ``--batch`` images (16), per-image targets,
every image's map at the input size in [0, 1], on the CPU. attnviz: ``explain_batch`` with that one method (one
forward of the batch, the method's own backward). pytorch-grad-cam: its class on the same batch (FEM, RandomCAM,
ShapleyCAM, FullGrad), ``GuidedBackpropReLUModel`` once per image (it explains one image per call), Guided Grad-CAM
as its documented recipe (GradCAM on the batch, then the guided model per image, multiplied), ``sobel_cam`` per
image. Each contender runs once on a two-image warm-up, then ``--repeats`` timed runs, interleaved; medians. The
ratio column is pytorch-grad-cam's time over attnviz's (above 1: attnviz is faster); "x forward" is attnviz's time
over a plain ``no_grad`` forward of the same batch. The largest difference between the two maps is printed so the
rows are known to do the same work (the guided rows: attnviz's documented max-abs-over-channels reduction applied to
the library's gradient).

Run:  OMP_NUM_THREADS=2 python benchmarks/new_methods.py [--batch 16] [--repeats 1] [--methods fem,fullgrad]
"""
from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from attnviz.api import explain_batch  # noqa: E402
from attnviz.core import methods as catalogue  # noqa: E402
from attnviz.core.cam_formulas import RANDOM_CAM_SEED  # noqa: E402
from attnviz.core.input_maps import as_uint8_image  # noqa: E402
from benchmarks.reference_nets import resnet50_random  # noqa: E402

SIDE = 224
METHODS = ("fem", "randomcam", "sobelcam", "shapleycam", "fullgrad", "guidedbackprop", "guidedgradcam")


def _library(method: str, net: torch.nn.Module) -> Callable[[torch.Tensor, list[int]], np.ndarray]:
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.sobel_cam import sobel_cam
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    def cam_class(cls, layers):
        def run(x, targets):
            if cls is pgc.RandomCAM:
                np.random.seed(RANDOM_CAM_SEED)
            with cls(model=net, target_layers=layers) as cam:
                return cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets])
        return run

    def guided(x, targets):
        model = pgc.GuidedBackpropReLUModel(copy.deepcopy(net), device="cpu")  # it swaps the ReLUs in place
        return np.stack([model(x[i:i + 1], t) for i, t in enumerate(targets)])

    if method == "guidedbackprop":
        return lambda x, t: scale_cam_image(np.abs(guided(x, t)).max(axis=-1))
    if method == "guidedgradcam":
        gradcam = cam_class(pgc.GradCAM, [net.layer4])
        return lambda x, t: scale_cam_image(np.abs(gradcam(x, t)[..., None] * guided(x, t)).max(axis=-1))
    if method == "sobelcam":
        return lambda x, t: scale_cam_image(np.stack([sobel_cam(as_uint8_image(im)) for im in x]).astype(np.float32))
    cls = {"fem": pgc.FEM, "randomcam": pgc.RandomCAM, "shapleycam": pgc.ShapleyCAM, "fullgrad": pgc.FullGrad}[method]
    return cam_class(cls, [] if method == "fullgrad" else [net.layer4])


def _attnviz(method: str, net: torch.nn.Module) -> Callable[[torch.Tensor, list[int]], np.ndarray]:
    def run(x, targets):
        out = explain_batch(net, x, (method,), targets=targets, layer="layer4", batch_size=len(x), record=False)
        return np.stack([e.cams[method].heatmap for e in out])
    return run


def _timed(fn: Callable, x: torch.Tensor, targets: list[int]) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(x, targets)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = catalogue.check_methods(args.methods.split(","))
    net = resnet50_random()  # the network tests/api/test_new_methods.py checks the maps on
    x = torch.randn(args.batch, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    targets = [(7 * i) % 1000 for i in range(args.batch)]

    def forward(x, targets):
        with torch.no_grad():
            net(x)

    forward(x[:2], targets[:2])
    plain = statistics.median(_timed(forward, x, targets)[0] for _ in range(args.repeats))
    print(f"# ResNet-50 (torchvision, random weights), {args.batch} x 3 x {SIDE} x {SIDE}, CPU, "
          f"{torch.get_num_threads()} torch threads, {platform.processor() or platform.machine()}; "
          f"torch {torch.__version__}; plain forward {plain * 1000:.0f} ms; {args.repeats} timed run(s) each")
    print("| method | cost kind | attnviz (s) | pytorch-grad-cam (s) | pytorch-grad-cam / attnviz | attnviz / forward "
          "| max abs difference |")
    print("|---|---|---|---|---|---|---|")
    for method in methods:
        ours, theirs = _attnviz(method, net), _library(method, net)
        ours(x[:2], targets[:2])
        theirs(x[:2], targets[:2])
        t_ours, t_theirs, diff = [], [], 0.0
        for _ in range(args.repeats):
            t, a = _timed(ours, x, targets)
            t_ours.append(t)
            t, b = _timed(theirs, x, targets)
            t_theirs.append(t)
            diff = max(diff, float(np.abs(np.asarray(a) - np.asarray(b)).max()))
        mo, mt = statistics.median(t_ours), statistics.median(t_theirs)
        print(f"| {catalogue.title(method)} | {catalogue.cost(method)} | {mo:.2f} | {mt:.2f} | {mt / mo:.1f}x "
              f"| {mo / plain:.1f}x | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
