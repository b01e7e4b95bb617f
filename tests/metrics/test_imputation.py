"""attnviz's torch ROAD imputation against pytorch-grad-cam's NoisyLinearImputer (the reference) at eval's size."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from attnviz.metrics import imputation
from attnviz.metrics import scores as metrics

SIZE = 128    # the bundled zoo's input size, what attnviz eval imputes


def _map_like(rng: np.random.Generator, size: int = SIZE) -> np.ndarray:
    """A CAM-shaped map: smooth blobs scaled to [0, 1] (ROAD removes large connected regions of such maps)."""
    cam = cv2.GaussianBlur(rng.random((size, size)).astype(np.float32), (0, 0), size / 10)
    cam -= cam.min()
    return cam / cam.max()


def _library(x: torch.Tensor, cam: np.ndarray, noise: bool) -> torch.Tensor:
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer, RemoveLeastRelevantFirst, RemoveMostRelevantFirst

    make = (lambda: NoisyLinearImputer()) if noise else (lambda: NoisyLinearImputer(noise=0.0))
    return torch.stack([remove(p, make())(x, torch.from_numpy(cam)) for remove in
                        (RemoveLeastRelevantFirst, RemoveMostRelevantFirst) for p in metrics.ROAD_PERCENTILES])


def test_removal_masks_are_the_librarys_thresholds():
    from pytorch_grad_cam.metrics.road import RemoveLeastRelevantFirst, RemoveMostRelevantFirst

    seen = {}

    class Capture:
        def __call__(self, img, mask):
            seen.setdefault("masks", []).append(mask.numpy() == 0)
            return img

    cam = _map_like(np.random.default_rng(0), 32)
    for remove in (RemoveLeastRelevantFirst, RemoveMostRelevantFirst):
        for p in metrics.ROAD_PERCENTILES:
            remove(p, Capture())(torch.zeros(3, 32, 32), torch.from_numpy(cam))
    ours = imputation.removal_masks(cam, metrics.ROAD_PERCENTILES).numpy()
    assert ours.shape == (8, 32, 32)
    np.testing.assert_array_equal(ours, np.stack(seen["masks"]))


@pytest.mark.parametrize("solver", ["cg", "direct"])
def test_noise_free_imputation_equals_the_librarys_direct_solve(solver):
    rng = np.random.default_rng(1)
    torch.manual_seed(1)
    for _ in range(2):
        x = torch.randn(3, SIZE, SIZE)
        cam = _map_like(rng)
        removed = imputation.removal_masks(cam, metrics.ROAD_PERCENTILES)
        ours = imputation.linear_impute(x.expand(len(removed), -1, -1, -1), removed, solver=solver)
        reference = _library(x, cam, noise=False)
        assert float((ours - reference).abs().max()) <= 1e-4
        kept = ~removed[:, None].expand_as(ours)
        assert torch.equal(ours[kept], x.expand_as(ours)[kept])    # kept pixels are untouched


def test_noisy_imputation_draws_the_librarys_noise_after_the_same_seed():
    rng = np.random.default_rng(2)
    x = torch.randn(3, SIZE, SIZE)
    cam = _map_like(rng)
    torch.manual_seed(123)
    reference = _library(x, cam, noise=True)
    torch.manual_seed(123)
    removed = imputation.removal_masks(cam, metrics.ROAD_PERCENTILES)
    noise = imputation.imputation_noise(removed, 3)
    ours = imputation.noisy_linear_impute(x.expand(len(removed), -1, -1, -1), removed, noise, batch=3)
    assert float((ours - reference).abs().max()) <= 1e-4
    assert float(noise.abs().max()) > 0.01          # the noise is really there (0.01 x standard normal)


@pytest.mark.parametrize("solver", ["cg", "direct"])
def test_odd_sizes_and_degenerate_masks(solver):
    x = torch.randn(2, 3, 15, 17)
    removed = torch.zeros(2, 15, 17, dtype=torch.bool)
    removed[0] = True                       # nothing kept: the library's solve is singular; here zeros
    out = imputation.linear_impute(x, removed, solver=solver)
    assert torch.equal(out[1], x[1])        # nothing removed: the image itself
    assert torch.isfinite(out).all() and float(out[0].abs().max()) == 0.0
    removed[1, 3:9, 4:12] = True
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer
    reference = NoisyLinearImputer(noise=0.0)(x[1], (~removed[1]).float())
    assert float((imputation.linear_impute(x[1:], removed[1:], solver=solver)[0] - reference).abs().max()) <= 1e-5


def test_direct_solve_shares_a_mask_s_factorisation_and_threads_without_changing_a_bit():
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    removed = imputation.removal_masks(_map_like(np.random.default_rng(3), 32), metrics.ROAD_PERCENTILES).numpy()
    removed = np.concatenate([removed, removed[:3]])                 # the same masks again, on other images
    images = np.random.default_rng(4).standard_normal((len(removed), 3, 32, 32)).astype(np.float32)
    images = images.astype(np.float64)
    alone = np.stack([imputation.direct_impute(images[k:k + 1], removed[k:k + 1])[0] for k in range(len(removed))])
    together = imputation.direct_impute(images, removed, workers=2)
    np.testing.assert_array_equal(together, alone)
    for k in (0, len(removed) - 1):
        reference = NoisyLinearImputer(noise=0.0)(torch.from_numpy(images[k]).float(),
                                                  torch.from_numpy(~removed[k]).float())
        assert float(np.abs(together[k] - reference.double().numpy()).max()) <= 1e-5


def test_road_scores_match_road_combined_on_a_bundled_model():
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    from attnviz.api import explain_batch
    from attnviz.data import synth
    from attnviz.data.scenes import EVAL_SEED, cached_scenes
    from attnviz.zoo import registry as zoo

    loaded = zoo.load("se", "cpu")
    scenes = cached_scenes(2, EVAL_SEED, synth.IMAGE_SIZE)
    labels = [int(v) for v in scenes.labels[:2]]
    es = explain_batch(loaded, list(scenes.images[:2]), ("gradcam", "gradcam++"), targets=labels,
                       class_names=loaded.spec.class_names)
    x = loaded.spec.normalise(np.stack([e.image for e in es]))
    maps = [[e.cams[m].heatmap for m in ("gradcam", "gradcam++")] for e in es]
    seeds = [7, 8]
    ours = metrics.road_scores_batch(loaded.model, x, maps, labels, seeds=seeds)
    for i in range(2):
        for j, cam in enumerate(maps[i]):
            torch.manual_seed(seeds[i])
            resized = metrics._resize_to(np.asarray(cam), tuple(x.shape[-2:])).astype(np.float32)
            expected = ROADCombined(percentiles=list(metrics.ROAD_PERCENTILES))(
                x[i:i + 1], resized[None], [ClassifierOutputSoftmaxTarget(labels[i])], loaded.model)
            assert ours[i][j] == pytest.approx(float(expected[0]), abs=1e-3), (i, j)


def test_road_imputer_and_solver_choices_are_checked():
    with pytest.raises(ValueError, match="solver"):
        imputation.linear_impute(torch.zeros(1, 3, 4, 4), torch.ones(1, 4, 4, dtype=torch.bool), solver="lu")
    with pytest.raises(ValueError, match="imputer"):
        metrics.road_scores_batch(torch.nn.Identity(), torch.zeros(1, 3, 4, 4), [[np.zeros((4, 4))]], [0],
                                  imputer="fast")
