"""The engine stays on the model's device (issue 22): during ``explain_batch`` no pytorch-grad-cam function and no
OpenCV call runs for the torch-formula methods, and tensors cross to the host only a handful of times per chunk."""
from __future__ import annotations

import sys
from collections import Counter

import numpy as np
import torch

from attnviz import explain_batch
from attnviz.core import cam as cam_core
from attnviz.zoo import registry as zoo

CLASSIC = ("gradcam", "gradcam++", "xgradcam", "layercam", "hirescam")
# Ways a tensor's values reach the host from Python: on CUDA each is a device->host copy (.numpy() of a device
# tensor is refused, so a .cpu() comes first). ``.to("cpu")`` is not counted: on this CPU-only run it is also how
# the inputs reach the model's device; the engine never uses it for results (benchmarks/gpu_check.py counts
# every device->host call on CUDA, .to included).
CROSSINGS = ("cpu", "item", "tolist", "__bool__", "__int__", "__float__", "__index__")


class _Watch:
    """Profiles every Python and C call: pytorch-grad-cam functions and cv2 calls are recorded by name."""

    def __init__(self) -> None:
        self.library: Counter = Counter()
        self.opencv: Counter = Counter()

    def __call__(self, frame, event, arg) -> None:
        if event == "call" and "pytorch_grad_cam" in frame.f_code.co_filename:
            self.library[f"{frame.f_code.co_filename.rsplit('pytorch_grad_cam', 1)[-1]}:{frame.f_code.co_name}"] += 1
        elif event == "c_call" and str(getattr(arg, "__module__", "") or "").startswith("cv2"):
            self.opencv[getattr(arg, "__name__", repr(arg))] += 1


def _count_crossings(monkeypatch) -> Counter:
    seen: Counter = Counter()

    def counting(name: str, original):
        def wrapper(self, *args, **kwargs):
            seen[name] += 1
            return original(self, *args, **kwargs)
        return wrapper

    for name in CROSSINGS:
        monkeypatch.setattr(torch.Tensor, name, counting(name, getattr(torch.Tensor, name)))
    return seen


def test_explain_batch_runs_no_library_or_opencv_code_and_crosses_to_the_host_a_few_times_per_chunk(monkeypatch):
    import cv2  # noqa: F401  (imported, so a call would be seen)
    import pytorch_grad_cam  # noqa: F401

    loaded = zoo.load("cbam", "cpu")       # attention gates too: the recorder's copies are counted
    x = torch.randn(16, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    reference = explain_batch(loaded, x, CLASSIC, batch_size=16)   # warm-up (lazy imports) and the reference
    watch = _Watch()
    for batch_size, chunks in ((16, 1), (8, 2)):
        seen = _count_crossings(monkeypatch)
        sys.setprofile(watch)
        try:
            out = explain_batch(loaded, x, CLASSIC, batch_size=batch_size)
        finally:
            sys.setprofile(None)
        monkeypatch.undo()
        assert not watch.library, f"pytorch-grad-cam code ran: {dict(watch.library)}"
        assert not watch.opencv, f"OpenCV ran: {dict(watch.opencv)}"
        # per chunk: logits + probabilities, the recorded gate outputs, the maps -> 3 copies
        assert sum(seen.values()) <= 3 * chunks, dict(seen)
        for a, b in zip(out, reference):
            for m in CLASSIC:
                np.testing.assert_allclose(a.cams[m].heatmap, b.cams[m].heatmap, atol=1e-5)
            assert isinstance(a.cams["gradcam"].heatmap, np.ndarray) and a.attention_maps


def test_torch_post_processing_equals_the_librarys_numpy_and_opencv():
    """min-max scaling + ``cv2.resize(INTER_LINEAR)`` (pytorch-grad-cam's ``scale_cam_image``) against
    :func:`attnviz.core.cam.maps_from_layers`, for one and for three layers of different sizes."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    rng = np.random.default_rng(0)
    for side, sizes in ((224, [7]), (128, [8]), (160, [5, 10, 20]), (64, [4, 8, 16])):
        cams = [np.maximum(rng.standard_normal((3, s, s)).astype(np.float32) * 10, 0) for s in sizes]
        per_layer = [scale_cam_image(c, (side, side)) for c in cams]
        expected = scale_cam_image(np.mean(np.maximum(np.stack(per_layer, axis=1), 0), axis=1))
        heat, raw = cam_core.maps_from_layers([torch.from_numpy(c) for c in cams], (side, side))
        assert float(np.abs(heat.numpy() - expected).max()) <= 1e-6
        import cv2

        raws = np.mean([[cv2.resize(m, (side, side), interpolation=cv2.INTER_LINEAR) for m in c] for c in cams], 0)
        np.testing.assert_allclose(raw.numpy(), np.maximum(raws, 0), rtol=1e-6, atol=1e-5)
