"""Benchmark: the map methods issue 28 added, each against its pytorch-grad-cam 1.5.7 counterpart and a plain forward,
side by side in one run.

The work: torchvision's ResNet-50 (random weights) at 224 px, a batch of ``--batch`` images (16), per-image targets,
every image's map at the input size in [0, 1], on the CPU. attnviz: ``explain_batch`` with that one method (one
forward of the batch, the method's own backward). pytorch-grad-cam: its class on the same batch (FEM, RandomCAM,
ShapleyCAM, FullGrad), ``GuidedBackpropReLUModel`` once per image (it explains one image per call), Guided Grad-CAM
as its documented recipe (GradCAM on the batch, then the guided model per image, multiplied), ``sobel_cam`` per
image; RefineCAM (Grad-CAM++ over layer2-4) and SESS (Grad-CAM on layer4, ``--sess-scales`` scales) against the
library's ``RefineCAM`` / ``SESS`` around the same class; ``attnviz.concepts`` against ``DeepFeatureFactorization``
(k = 5, layer4); LeGrad, a transformer method, on a timm ViT-S/16 (random weights, same batch) against TorchCAM 0.5's
``LeGrad`` on its torchvision copy (its "x forward" is over the ViT's forward). Each contender runs once on a
two-image warm-up, then ``--repeats`` timed runs, interleaved; medians. The
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
from benchmarks.reference_nets import as_torchvision_vit, resnet50_random  # noqa: E402

SIDE = 224
METHODS = ("fem", "randomcam", "sobelcam", "shapleycam", "fullgrad", "guidedbackprop", "guidedgradcam", "refine",
           "sess", "concepts", "legrad")
OPTIONS = ("refine", "sess", "concepts")   # rows that are options or an API call, not catalogue methods


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


def _meta(option: str, net: torch.nn.Module, scales: int) -> tuple[Callable, Callable]:
    """attnviz's RefineCAM (Grad-CAM++ on layer2-4) / SESS (Grad-CAM on layer4) options and the library's classes."""
    import pytorch_grad_cam as pgc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    method = "gradcam++" if option == "refine" else "gradcam"
    layers = ["layer2", "layer3", "layer4"] if option == "refine" else ["layer4"]
    extra = {"refine": True} if option == "refine" else {"sess": scales}

    def ours(x, targets):
        out = explain_batch(net, x, (method,), targets=targets, layer=layers, batch_size=len(x), record=False,
                            **extra)
        return np.stack([e.cams[method].heatmap for e in out])

    def theirs(x, targets):
        wanted = [ClassifierOutputTarget(t) for t in targets]
        modules = [net.get_submodule(n) for n in layers]
        if option == "refine":
            return pgc.RefineCAM(net, modules, base_method=pgc.GradCAMPlusPlus)(x, wanted)
        with pgc.SESS(net, modules, base_method=pgc.GradCAM, num_scales=scales) as sess:
            return sess(x, wanted)
    return ours, theirs


def _concepts(net: torch.nn.Module, k: int = 5) -> tuple[Callable, Callable]:
    """attnviz.concepts and the library's DeepFeatureFactorization (layer4, its fc scoring the concepts)."""
    from pytorch_grad_cam import DeepFeatureFactorization

    from attnviz.api import concepts

    def ours(x, targets):
        return concepts(net, x, k, "layer4").heatmaps

    def theirs(x, targets):
        return np.stack(DeepFeatureFactorization(net, net.layer4, computation_on_concepts=net.fc)(x, k)[1])
    return ours, theirs


def _legrad() -> tuple[Callable, Callable, torch.nn.Module]:
    """attnviz's LeGrad on a timm ViT-S/16 (random weights) and TorchCAM's on its torchvision copy."""
    import timm
    from pytorch_grad_cam.utils.image import scale_cam_image
    from torchcam.methods import LeGrad

    torch.manual_seed(0)
    vit = timm.create_model("vit_small_patch16_224", pretrained=False).eval()
    tv = as_torchvision_vit(vit)

    def ours(x, targets):
        out = explain_batch(vit, x, ("legrad",), targets=targets, batch_size=len(x), record=False)
        return np.stack([e.cams["legrad"].heatmap for e in out])

    def theirs(x, targets):  # TorchCAM's patch-grid map, then the same resizing/scaling as every map here
        with LeGrad(tv, list(tv.encoder.layers), score_projection=lambda t: tv.heads(tv.encoder.ln(t[:, 0]))) as cam:
            tv(x)
            (maps,) = cam(class_idx=targets, normalized=False)
        return scale_cam_image(scale_cam_image(maps.detach().numpy(), (SIDE, SIDE)))
    return ours, theirs, vit


def _contenders(method: str, net: torch.nn.Module, scales: int) -> tuple[str, str, Callable, Callable, torch.nn.Module]:
    """(title, cost kind, attnviz, reference, the network whose plain forward the row is compared with)."""
    if method in ("refine", "sess"):
        title = "RefineCAM (Grad-CAM++, layer2-4)" if method == "refine" else f"SESS (Grad-CAM, {scales} scales)"
        return (title, "one-pass" if method == "refine" else "multi-pass", *_meta(method, net, scales), net)
    if method == "concepts":
        return ("Deep Feature Factorization (k=5)", "one forward", *_concepts(net), net)
    if method == "legrad":
        return ("LeGrad (ViT-S/16 vs TorchCAM 0.5)", catalogue.cost(method), *_legrad())
    return catalogue.title(method), catalogue.cost(method), _attnviz(method, net), _library(method, net), net


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
    parser.add_argument("--sess-scales", type=int, default=2,
                        help="SESS's scales (its default 12 is ~120 patches per image: hours on a CPU)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
    methods = [m if m in OPTIONS else catalogue.check_methods(m)[0] for m in wanted]
    net = resnet50_random()  # the network tests/api/test_new_methods.py checks the maps on
    x = torch.randn(args.batch, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(0))
    targets = [(7 * i) % 1000 for i in range(args.batch)]

    def plain_forward(model: torch.nn.Module) -> float:
        def forward(x, targets):
            with torch.no_grad():
                model(x)
        forward(x[:2], targets[:2])
        return statistics.median(_timed(forward, x, targets)[0] for _ in range(args.repeats))

    plain = plain_forward(net)
    print(f"# ResNet-50 (torchvision, random weights), {args.batch} x 3 x {SIDE} x {SIDE}, CPU, "
          f"{torch.get_num_threads()} torch threads, {platform.processor() or platform.machine()}; "
          f"torch {torch.__version__}; plain forward {plain * 1000:.0f} ms; {args.repeats} timed run(s) each")
    print("| method | cost kind | attnviz (s) | pytorch-grad-cam (s) | pytorch-grad-cam / attnviz | attnviz / forward "
          "| max abs difference |")
    print("|---|---|---|---|---|---|---|")
    for method in methods:
        title, cost, ours, theirs, model = _contenders(method, net, args.sess_scales)
        own_plain = plain if model is net else plain_forward(model)
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
        print(f"| {title} | {cost} | {mo:.2f} | {mt:.2f} | {mt / mo:.1f}x "
              f"| {mo / own_plain:.1f}x | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()
