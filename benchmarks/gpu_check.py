"""The GPU check, as one prepared command: speed against a plain forward and pytorch-grad-cam, CUDA maps vs CPU
maps, and how often results cross from the device to the host.

Run on a machine with CUDA (nothing is downloaded: random weights and the bundled zoo):

    python benchmarks/gpu_check.py --out gpu_check.json            # ~5 min on an H100-class card
    python benchmarks/gpu_check.py --cpu-only --smoke               # the same code on the CPU, tiny batches

1. Speed, per model — torchvision ResNet-50 @224 batch 64, timm ViT-S/16 @224 batch 64 (random weights), three
   bundled models @128 batch 256 — in images/s, medians of ``--repeats`` interleaved rounds, each call timed
   between ``torch.cuda.synchronize()``: a plain forward (no autograd); the forward plus the restricted backward
   (autograd from the CAM layer on, one backward of the summed target logits: the engine's floor); explain_batch
   with Grad-CAM + Grad-CAM++, with the seven one-pass methods whose formulas run in torch, and with all ten
   one-pass methods (EigenGrad-CAM, Eigen-CAM and KPCA-CAM run the library's per-image numpy decompositions on
   the host: timed once, not repeated); pytorch-grad-cam's Grad-CAM + Grad-CAM++ (two batched calls). Then the
   ratios. The same rows on the CPU at a quarter of the batch (``--cpu-batch-divisor``).
2. Equality on CUDA with TF32 off (IEEE float32 on both sides): every one-pass method of ResNet-50 and the
   bundled models, ViT-S/16 Grad-CAM / rollout / grad-rollout, CUDA maps vs CPU maps; then TF32 on (PyTorch's
   default) and ``amp=True`` for their tolerances.
3. Device->host crossings during one ``explain_batch`` on CUDA (ResNet-50, 64 images, the five classic methods;
   the bundled CBAM model with its attention recorded): every ``.cpu()``, ``.to("cpu")``, ``.item()``,
   ``.tolist()`` and scalar conversion of a CUDA tensor.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

from attnviz import explain_batch  # noqa: E402
from attnviz.core import cam as cam_core  # noqa: E402
from attnviz.core.methods import ONE_PASS, names  # noqa: E402
from attnviz.data import synth  # noqa: E402
from attnviz.zoo import registry as zoo  # noqa: E402

ZOO_MODELS = ("baseline", "se", "cbam", "triplet", "coord", "nonlocal", "danet", "mhsa")
SPEED_ZOO = ("baseline", "cbam", "triplet")
CLASSIC = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam")
TWO = ("gradcam", "gradcam++")
HOST_DECOMPOSITIONS = ("eigengradcam", "eigencam", "kpcacam")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def tf32(enabled: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


# ---- 1. speed ----------------------------------------------------------------------------------------------

class Model:
    """A model on a device with its CAM layer, a batch and per-image targets."""

    def __init__(self, label: str, net: torch.nn.Module, layer: str, x: torch.Tensor, device: torch.device,
                 record: bool = False) -> None:
        self.label, self.net, self.layer, self.device, self.record = label, net.eval().to(device), layer, device, record
        self.x = x.to(device)
        with torch.no_grad():
            self.targets = [int(t) for t in self.net(self.x[:8]).argmax(1).tolist()]
        self.targets = (self.targets * (len(x) // len(self.targets) + 1))[:len(x)]
        self.module = self.net.get_submodule(layer)


def contenders(m: Model) -> dict[str, Callable[[], None]]:
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    wanted = [ClassifierOutputTarget(t) for t in m.targets]
    rows = torch.arange(len(m.targets), device=m.device)
    index = torch.tensor(m.targets, device=m.device)
    hw = (int(m.x.shape[-2]), int(m.x.shape[-1]))

    def reshape(t: torch.Tensor) -> torch.Tensor:
        return cam_core.to_feature_map(t, m.module, m.net, hw)

    torch_formulas = tuple(n for n in names(ONE_PASS) if n not in HOST_DECOMPOSITIONS)

    def plain() -> None:
        with torch.no_grad():
            m.net(m.x)

    def forward_backward() -> None:
        logits, (tapped,) = cam_core.forward_with_taps(m.net, m.x, [m.module])
        torch.autograd.grad(logits[rows, index].sum(), [tapped])

    def engine(methods: tuple[str, ...]) -> Callable[[], None]:
        return lambda: explain_batch(m.net, m.x, methods, m.targets, m.layer, batch_size=len(m.x), record=m.record)

    def library() -> None:
        for cls in (GradCAM, GradCAMPlusPlus):
            with cls(model=m.net, target_layers=[m.module], reshape_transform=reshape) as cam:
                cam(input_tensor=m.x, targets=wanted)

    return {"plain forward": plain, "forward + restricted backward": forward_backward,
            "explain_batch, 2 methods": engine(TWO), f"explain_batch, {len(torch_formulas)} torch methods":
            engine(torch_formulas), "pytorch-grad-cam, 2 methods": library,
            "explain_batch, all 10 one-pass (once)": engine(names(ONE_PASS))}


def images_per_s(m: Model, repeats: int) -> dict[str, float]:
    fns = contenders(m)
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for name, fn in fns.items():  # warm-up (cuDNN autotuning, lazy imports)
        if "once" not in name:
            fn()
    for r in range(repeats):
        for name, fn in fns.items():
            if "once" in name and r > 0:
                continue
            sync(m.device)
            t = time.perf_counter()
            fn()
            sync(m.device)
            samples[name].append(time.perf_counter() - t)
    ips = {k: len(m.x) / statistics.median(v) for k, v in samples.items()}
    two, plain, floor = ips["explain_batch, 2 methods"], ips["plain forward"], ips["forward + restricted backward"]
    ips["ratio: explain_batch 2 / plain forward"] = two / plain
    ips["ratio: explain_batch 2 / forward + backward"] = two / floor
    ips["ratio: explain_batch 2 / pytorch-grad-cam"] = two / ips["pytorch-grad-cam, 2 methods"]
    return {k: round(v, 3 if k.startswith("ratio") else 1) for k, v in ips.items()}


def speed_models(device: torch.device, divisor: int, smoke: bool) -> list[Model]:
    b_res, b_zoo = (2, 4) if smoke else (64 // divisor, 256 // divisor)
    torch.manual_seed(0)
    out = [Model("torchvision resnet50 @224", torchvision.models.resnet50(), "layer4",
                 torch.randn(b_res, 3, 224, 224, generator=torch.Generator().manual_seed(5)), device)]
    try:
        import timm

        torch.manual_seed(0)
        vit = timm.create_model("vit_small_patch16_224", pretrained=False)
        out.append(Model("timm vit_small_patch16_224 @224", vit, "blocks.11.norm1",
                         torch.randn(b_res, 3, 224, 224, generator=torch.Generator().manual_seed(6)), device))
    except ImportError:
        pass
    scenes = synth.generate(b_zoo, seed=910, workers=1 if smoke else 4)
    for name in SPEED_ZOO[:1] if smoke else SPEED_ZOO:
        loaded = zoo.load(name, device)
        out.append(Model(f"bundled {name} @{loaded.spec.input_size}", loaded.model, loaded.spec.default_layer,
                         loaded.spec.preprocess(scenes.images), device, record=True))
    return out


def speed(report: dict, device: torch.device, repeats: int, divisor: int, smoke: bool) -> None:
    key = f"speed_{device.type}"
    report[key] = {}
    for m in speed_models(device, divisor, smoke):
        report[key][f"{m.label}, {m.layer}, batch {len(m.x)}"] = images_per_s(m, repeats)
        print(json.dumps({m.label: report[key][f"{m.label}, {m.layer}, batch {len(m.x)}"]}), flush=True)


# ---- 2. equality -------------------------------------------------------------------------------------------

def max_diff(a: list, b: list, methods) -> dict[str, float]:
    return {m: float(max(np.abs(x.cams[m].heatmap - y.cams[m].heatmap).max() for x, y in zip(a, b))) for m in methods}


def equality(report: dict) -> None:
    torch.manual_seed(0)
    net = torchvision.models.resnet50().eval()
    x = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    targets = [3, 17, 250, 999, 0, 512, 77, 640]
    methods = names(ONE_PASS)
    cpu_net, gpu_net = copy.deepcopy(net), copy.deepcopy(net)
    cpu = explain_batch(cpu_net, x, methods, targets, "layer4", device="cpu", record=False)
    tf32(False)
    strict = explain_batch(gpu_net, x, methods, targets, "layer4", device="cuda", record=False)
    report["resnet50_cpu_vs_cuda_fp32"] = max_diff(cpu, strict, methods)
    report["resnet50_logits_fp32"] = float(max(np.abs(a.logits - b.logits).max() for a, b in zip(cpu, strict)))
    fused = ["layer2", "layer3", "layer4"]
    report["resnet50_fused_cpu_vs_cuda_fp32"] = max_diff(
        explain_batch(cpu_net, x, ("gradcam",), targets, fused, device="cpu", record=False),
        explain_batch(gpu_net, x, ("gradcam",), targets, fused, device="cuda", record=False), ("gradcam",))
    tf32(True)
    default = explain_batch(gpu_net, x, CLASSIC, targets, "layer4", device="cuda", record=False)
    report["resnet50_cpu_vs_cuda_tf32_default"] = max_diff(cpu, default, CLASSIC)
    tf32(False)
    amp = explain_batch(gpu_net, x, CLASSIC, targets, "layer4", device="cuda", record=False, amp=True)
    report["resnet50_amp_vs_fp32"] = max_diff(strict, amp, CLASSIC)

    scenes = synth.generate(16, seed=909, workers=1)
    zoo_rows = {}
    for name in ZOO_MODELS:
        a = explain_batch(name, list(scenes.images), methods, device="cpu")
        b = explain_batch(name, list(scenes.images), methods, device="cuda")
        att = max(float(np.abs(p.data - q.data).max()) for x1, y1 in zip(a, b)
                  for p, q in zip(x1.attention_maps, y1.attention_maps)) if a[0].attention_maps else 0.0
        c = explain_batch(name, list(scenes.images), CLASSIC, device="cuda", amp=True)
        zoo_rows[name] = {"cams_fp32": max_diff(a, b, methods), "attention_fp32": att,
                          "same_targets": [e.target.index for e in a] == [e.target.index for e in b],
                          "cams_amp_vs_fp32": max(max_diff(b, c, CLASSIC).values())}
    report["zoo_cpu_vs_cuda"] = zoo_rows

    try:
        import timm
        torch.manual_seed(0)
        vit = timm.create_model("vit_small_patch16_224", pretrained=False).eval()
        xv = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(2))
        flows = ("gradcam", "rollout", "grad-rollout")
        a = explain_batch(copy.deepcopy(vit), xv, flows, [1, 2, 3, 4], device="cpu", record=False)
        b = explain_batch(copy.deepcopy(vit), xv, flows, [1, 2, 3, 4], device="cuda", record=False)
        report["vit_s16_cpu_vs_cuda_fp32"] = max_diff(a, b, flows)
    except Exception as exc:  # report, do not stop the rest of the check
        report["vit_s16_cpu_vs_cuda_fp32"] = f"failed: {type(exc).__name__}: {exc}"


# ---- 3. device->host crossings -----------------------------------------------------------------------------

def crossings(report: dict, device: torch.device, smoke: bool) -> None:
    """Patch the Tensor methods that copy to the host; count their calls on tensors of ``device`` during
    explain_batch only (model building and loading are outside the window). On the CPU every such call counts,
    copies or not: there the numbers only show the step runs (tests/core/test_device_path.py is the CPU check)."""
    seen: Counter = Counter()
    patched = {}
    window = [False]

    def watch(name: str, original):
        def wrapper(self, *args, **kwargs):
            if window[0] and self.device.type == device.type and (name != "to" or _to_cpu(args, kwargs)):
                seen[name] += 1
            return original(self, *args, **kwargs)
        return wrapper

    def counted(fn: Callable[[], object]) -> dict:
        seen.clear()
        window[0] = True
        try:
            fn()
        finally:
            window[0] = False
        return dict(seen)

    torch.manual_seed(0)
    n = 4 if smoke else 64
    net = torchvision.models.resnet50().eval().to(device)
    x = torch.randn(n, 3, 224, 224, generator=torch.Generator().manual_seed(7)).to(device)
    loaded = zoo.load("cbam", device)
    xz = torch.randn(n, 3, 128, 128, generator=torch.Generator().manual_seed(8)).to(device)
    explain_batch(loaded, xz[:2], CLASSIC)  # warm-up
    for name in ("cpu", "to", "item", "tolist", "__bool__", "__int__", "__float__", "__index__"):
        patched[name] = getattr(torch.Tensor, name)
        setattr(torch.Tensor, name, watch(name, patched[name]))
    try:
        report[f"crossings_{device.type}_resnet50_{n}_images_1_chunk"] = counted(
            lambda: explain_batch(net, x, CLASSIC, layer="layer4", batch_size=n, record=False))
        report[f"crossings_{device.type}_cbam_recorded_{n}_images_1_chunk"] = counted(
            lambda: explain_batch(loaded, xz, CLASSIC, batch_size=n))
    finally:
        for name, original in patched.items():
            setattr(torch.Tensor, name, original)


def _to_cpu(args: tuple, kwargs: dict) -> bool:
    target = kwargs.get("device", args[0] if args else None)
    return isinstance(target, (str, torch.device)) and torch.device(target).type == "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cpu-repeats", type=int, default=2)
    parser.add_argument("--cpu-batch-divisor", type=int, default=4, help="CPU rows use batch / this")
    parser.add_argument("--cpu-only", action="store_true", help="only the CPU rows (automatic without CUDA)")
    parser.add_argument("--smoke", action="store_true", help="tiny batches, one round: checks the script runs")
    args = parser.parse_args()
    cuda = torch.cuda.is_available() and not args.cpu_only
    report: dict = {"torch": torch.__version__, "cuda": torch.version.cuda,
                    "device": torch.cuda.get_device_name(0) if cuda else "cpu only",
                    "cudnn": torch.backends.cudnn.version() if cuda else None, "smoke": args.smoke}
    repeats, cpu_repeats = (1, 1) if args.smoke else (args.repeats, args.cpu_repeats)
    steps: list[Callable[[dict], None]] = []
    if cuda:
        tf32(True)  # PyTorch's default on CUDA, as a user gets it
        steps += [lambda r: speed(r, torch.device("cuda"), repeats, 1, args.smoke),
                  lambda r: crossings(r, torch.device("cuda"), args.smoke), equality]
    steps.append(lambda r: speed(r, torch.device("cpu"), cpu_repeats, args.cpu_batch_divisor, args.smoke))
    if args.smoke:
        steps.append(lambda r: crossings(r, torch.device("cpu"), args.smoke))
    t0 = time.perf_counter()
    for step in steps:
        try:
            step(report)
        except Exception as exc:  # keep what was measured
            report.setdefault("errors", []).append(f"{type(exc).__name__}: {exc}")
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    report["seconds"] = round(time.perf_counter() - t0, 1)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
