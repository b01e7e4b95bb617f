"""SESS (Tyagi et al. 2022, "SESS: Saliency Enhancing with Scaling and Sliding") around any CAM-layer method.

Each image is resized to several scales (the shorter side: the window size, then ``2/7`` of it more per step,
as pytorch-grad-cam 1.5.7's ``SESS`` and the paper), a square window the size of the image's shorter side slides
over every scale without overlap (the last window of a row or column shifted back inside), and the base method's
map of every patch is weighted by the patch's softmax score of the target over the highest patch score, pasted
back where the patch came from, resized to the image and averaged over the patches that cover each pixel (values
above 0 only); a Gaussian blur (11 x 11, sigma 5) and a min-max scaling finish it.

The patches run through the engine's own batched pass (``base``): one forward gives both a patch's score and its
map, where pytorch-grad-cam runs a scoring forward first and then its CAM class per batch of patches. The
pasting, resizing and blur are the library's OpenCV operations on the host, so the maps equal its maps.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from attnviz.errors import AttnvizError

DEFAULT_SCALES = 12          # pytorch-grad-cam's num_scales
SCALE_STEP = 2.0 / 7.0       # each scale's shorter side grows by this fraction of the window
BLUR = ((11, 11), 5.0)       # the fused map's Gaussian blur (kernel, sigma)

# base(patches (n, 3, w, w)) -> (per method (n, w, w) maps in [0, 1], the target's softmax score per patch (n,))
BaseFn = Callable[[torch.Tensor], tuple[dict[str, np.ndarray], np.ndarray]]


def check_scales(sess: int | bool) -> int:
    """``sess`` as a number of scales: False/0 off, True the library's 12, else a positive count."""
    scales = DEFAULT_SCALES if sess is True else int(sess)
    if scales < 0 or scales > 32:
        raise AttnvizError(f"SESS takes 1 to 32 scales (0: off), got {scales}.")
    return scales


def window_starts(length: int, window: int) -> list[int]:
    """Where non-overlapping windows start along one side; the last one shifted back to end at the border."""
    starts = []
    for start in range(0, length, window):
        if start + window >= length:
            starts.append(max(length - window, 0))
            break
        starts.append(start)
    return starts


def patches(image: torch.Tensor, scales: int) -> tuple[torch.Tensor, list[tuple[int, int, int, int]], int]:
    """(1, 3, H, W) -> every window of every scale (n, 3, w, w), each one's (x, y, scaled width, scaled height),
    and the window size w (the image's shorter side)."""
    from torchvision.transforms.functional import resize

    window = min(int(image.shape[-2]), int(image.shape[-1]))
    step = int(round(window * SCALE_STEP))
    out, where = [], []
    for side in (window + step * i for i in range(scales)):
        scaled = resize(image, side)
        height, width = int(scaled.shape[-2]), int(scaled.shape[-1])
        for y in window_starts(height, window):
            for x in window_starts(width, window):
                out.append(scaled[:, :, y:y + window, x:x + window])
                where.append((x, y, width, height))
    return torch.cat(out), where, window


def _fuse(maps: np.ndarray, weights: np.ndarray, order: np.ndarray, where: list[tuple[int, int, int, int]],
          size: tuple[int, int]) -> np.ndarray:
    """The weighted patch maps pasted into their scales, resized to ``size`` (H, W), averaged where above 0."""
    import cv2

    height, width = size
    total = np.zeros(size, np.float32)
    counts = np.zeros(size, np.float32)
    for rank, index in enumerate(order):
        x, y, scaled_w, scaled_h = where[index]
        canvas = np.zeros((scaled_h, scaled_w), np.float32)
        patch = maps[index] * weights[rank]
        canvas[y:y + patch.shape[0], x:x + patch.shape[1]] = patch
        placed = cv2.resize(canvas, (width, height))
        covered = placed > 0
        total[covered] += placed[covered]
        counts += covered
    return np.divide(total, counts, out=np.zeros_like(total), where=counts > 0)


def enhance(image: torch.Tensor, scales: int, base: BaseFn) -> dict[str, np.ndarray]:
    """SESS maps of one (1, 3, H, W) image for every method ``base`` computes: (H, W) float32 each, blurred but not
    yet min-max scaled (the batch is scaled together, as the library does)."""
    import cv2

    stack, where, _ = patches(image, scales)
    maps, scores = base(stack)
    scores = np.maximum(np.asarray(scores, np.float32), 0)
    order = np.argsort(scores)
    top = scores[order[-1]]
    weights = scores[order] / top if top > 0 else np.ones(len(order), np.float32)
    size = (int(image.shape[-2]), int(image.shape[-1]))
    return {m: cv2.GaussianBlur(_fuse(per_patch, weights, order, where, size), BLUR[0], BLUR[1], 0)
            for m, per_patch in maps.items()}


# run(patches (n, 3, w, w), target, contrast) -> one Explanation per patch, the base methods' maps among its cams
RunFn = Callable[[torch.Tensor, int, "int | None"], list]


def apply(explanations: list, images: torch.Tensor, scales: int, methods: tuple[str, ...], run: RunFn) -> None:
    """Replace ``methods``' maps in each image's :class:`~attnviz.results.Explanation` by their SESS maps, the
    patches explained for the image's own target (and contrast) by ``run``. ``raw`` and ``layer_map`` become the
    blurred fused map, ``heatmap`` its min-max scaling."""
    from attnviz.results import CamMap

    def base_for(target: int, contrast: int | None) -> BaseFn:
        def base(stack: torch.Tensor) -> tuple[dict[str, np.ndarray], np.ndarray]:
            out = run(stack, target, contrast)
            return ({m: np.stack([p.cams[m].heatmap for p in out]) for m in methods},
                    np.array([p.target.probability for p in out], np.float32))
        return base

    for i, e in enumerate(explanations):
        base = base_for(e.target.index, None if e.contrast is None else e.contrast.index)
        for m, fused in enhance(images[i:i + 1], scales, base).items():
            shifted = fused - fused.min()
            e.cams[m] = CamMap(m, (shifted / (1e-7 + shifted.max())).astype(np.float32), fused, fused)
