"""The GPU check, as one prepared script: CUDA maps vs CPU maps, speed vs pytorch-grad-cam, ``amp`` tolerance.

Run on a machine with CUDA (nothing is downloaded: random weights and the bundled zoo):

    python benchmarks/gpu_check.py --out gpu_check.json

1. Equality: the same models and images through ``explain_batch`` on the CPU and on CUDA (TF32 off, so both are
   IEEE float32), every one-pass method; torchvision ResNet-50, six bundled models, a timm ViT-S/16 with rollout.
   Then the same with PyTorch's default TF32 convolutions, and with ``amp=True`` (float16 autocast), to state
   their tolerances.
2. Speed: ResNet-50 at 224 px, batch 64 — images/s of a plain forward, pytorch-grad-cam's batched Grad-CAM +
   Grad-CAM++ (two calls), ``explain_batch`` with the same two methods (float32 and amp), and ``explain()`` image
   by image; interleaved repeats, medians, ``torch.cuda.synchronize()`` around each.
3. The bundled zoo on CUDA: images/s of ``explain_batch`` (Grad-CAM + Grad-CAM++, attention recorded) per model.
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402

from attnviz import explain, explain_batch
from attnviz.core.methods import ONE_PASS, names  # noqa: E402
from attnviz.data import synth
from attnviz.zoo import registry as zoo  # noqa: E402

ZOO_MODELS = ("baseline", "se", "cbam", "triplet", "coord", "nonlocal", "danet", "mhsa")
CLASSIC = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam")


def max_diff(a: list, b: list, methods) -> dict[str, float]:
    return {m: float(max(np.abs(x.cams[m].heatmap - y.cams[m].heatmap).max() for x, y in zip(a, b))) for m in methods}


def tf32(enabled: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


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
    fused = explain_batch(gpu_net, x, ("gradcam",), targets, ["layer2", "layer3", "layer4"], device="cuda", record=False)
    fused_cpu = explain_batch(cpu_net, x, ("gradcam",), targets, ["layer2", "layer3", "layer4"], device="cpu",
                              record=False)
    report["resnet50_fused_cpu_vs_cuda_fp32"] = max_diff(fused_cpu, fused, ("gradcam",))
    tf32(True)
    default = explain_batch(gpu_net, x, CLASSIC, targets, "layer4", device="cuda", record=False)
    report["resnet50_cpu_vs_cuda_tf32_default"] = max_diff(cpu, default, CLASSIC)
    tf32(False)
    amp = explain_batch(gpu_net, x, CLASSIC, targets, "layer4", device="cuda", record=False, amp=True)
    report["resnet50_amp_vs_fp32"] = max_diff(strict, amp, CLASSIC)

    scenes = synth.generate(16, seed=909, workers=1)
    zoo_rows = {}
    for name in ZOO_MODELS:
        a = explain_batch(name, list(scenes.images), CLASSIC, device="cpu")
        b = explain_batch(name, list(scenes.images), CLASSIC, device="cuda")
        att = max(float(np.abs(p.data - q.data).max()) for x1, y1 in zip(a, b)
                  for p, q in zip(x1.attention_maps, y1.attention_maps)) if a[0].attention_maps else 0.0
        c = explain_batch(name, list(scenes.images), CLASSIC, device="cuda", amp=True)
        zoo_rows[name] = {"cams_fp32": max(max_diff(a, b, CLASSIC).values()), "attention_fp32": att,
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


def timed(fn, repeats: int) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t


def speed(report: dict, repeats: int) -> None:
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    tf32(True)  # PyTorch's default on CUDA, as a user gets it
    torch.manual_seed(0)
    net = torchvision.models.resnet50().eval().cuda()
    x = torch.randn(64, 3, 224, 224, generator=torch.Generator().manual_seed(5)).cuda()
    with torch.no_grad():
        targets = net(x).argmax(1).tolist()
    lib_targets = [ClassifierOutputTarget(t) for t in targets]
    gradcam = GradCAM(model=net, target_layers=[net.layer4])
    gradcampp = GradCAMPlusPlus(model=net, target_layers=[net.layer4])

    def plain():
        with torch.no_grad():
            net(x)

    def library():
        gradcam(input_tensor=x, targets=lib_targets)
        gradcampp(input_tensor=x, targets=lib_targets)

    def engine():
        explain_batch(net, x, ("gradcam", "gradcam++"), targets, "layer4", batch_size=64, record=False)

    def engine_amp():
        explain_batch(net, x, ("gradcam", "gradcam++"), targets, "layer4", batch_size=64, record=False, amp=True)

    def per_image():  # 16 images one by one (scaled to 64 below)
        for i in range(16):
            explain(net, x[i:i + 1], ("gradcam", "gradcam++"), targets[i], "layer4", record=False)

    contenders = {"plain": plain, "library": library, "engine": engine, "engine_amp": engine_amp,
                  "per_image": per_image}
    for fn in contenders.values():
        fn()
    samples: dict[str, list[float]] = {k: [] for k in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            samples[name].append(timed(fn, 1))
    gradcam.activations_and_grads.release()
    gradcampp.activations_and_grads.release()
    ips = {k: (16 if k == "per_image" else 64) / statistics.median(v) for k, v in samples.items()}
    report["resnet50_batch64_images_per_s"] = {k: round(v, 1) for k, v in ips.items()}
    report["resnet50_batch64_ratios"] = {"engine/library": round(ips["engine"] / ips["library"], 2),
                                         "engine_amp/library": round(ips["engine_amp"] / ips["library"], 2),
                                         "engine/per_image": round(ips["engine"] / ips["per_image"], 2),
                                         "engine/plain": round(ips["engine"] / ips["plain"], 3)}

    scenes = synth.generate(256, seed=910, workers=4)
    zoo_speed = {}
    for name in ZOO_MODELS[:5]:
        loaded = zoo.load(name, "cuda")
        xz = loaded.spec.preprocess(scenes.images)
        explain_batch(loaded, xz[:64], ("gradcam", "gradcam++"), batch_size=64)
        t = timed(lambda loaded=loaded, xz=xz: explain_batch(loaded, xz, ("gradcam", "gradcam++"), batch_size=64), 1)
        zoo_speed[name] = round(256 / t, 1)
    report["zoo_256_scenes_images_per_s_cuda"] = zoo_speed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check.json")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device")
    report: dict = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": torch.cuda.get_device_name(0),
                    "cudnn": torch.backends.cudnn.version()}
    t0 = time.perf_counter()
    for step in (equality, lambda r: speed(r, args.repeats)):
        try:
            step(report)
        except Exception as exc:  # keep what was measured
            report.setdefault("errors", []).append(f"{type(exc).__name__}: {exc}")
        print(json.dumps(report, indent=1), flush=True)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
