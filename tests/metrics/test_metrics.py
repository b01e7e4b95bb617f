"""Metric functions against small hand-computed examples."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from attnviz.metrics import scores as metrics


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: OpenMP's hand-offs between threads cost more than the arithmetic on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def mask() -> np.ndarray:
    m = np.zeros((4, 4), bool)
    m[1:3, 1:3] = True  # 4 object pixels in the centre
    return m


def test_pointing_game_hit_miss_and_tolerance(mask):
    hit = np.zeros((4, 4))
    hit[2, 2] = 1.0
    miss = np.zeros((4, 4))
    miss[0, 3] = 1.0
    assert metrics.pointing_game(hit, mask) is True
    assert metrics.pointing_game(miss, mask) is False
    # (0,3) is at distance sqrt(2) from the object pixel (1,2): a 1-px tolerance misses, 2 px hits
    assert metrics.pointing_game(miss, mask, tolerance=1) is False
    assert metrics.pointing_game(miss, mask, tolerance=2) is True


def test_energy_pointing_game_is_mass_share(mask):
    s = np.zeros((4, 4))
    s[1, 1], s[0, 0] = 3.0, 1.0  # 3 of 4 units inside
    assert metrics.energy_pointing_game(s, mask) == pytest.approx(0.75)
    assert metrics.energy_pointing_game(np.zeros((4, 4)), mask) == 0.0
    assert metrics.energy_pointing_game(-np.ones((4, 4)), mask) == 0.0  # negative mass is clipped


def test_iou_of_thresholded_map(mask):
    s = np.zeros((4, 4))
    s[1, 1:4] = 1.0   # 3 px >= 0.5*max: 2 on the object, 1 off
    s[2, 1] = 0.4     # below threshold
    # intersection 2, union = 3 (region) + 4 (mask) - 2 = 5
    assert metrics.iou(s, mask) == pytest.approx(2 / 5)
    # at 0.3 the 0.4 pixel joins: intersection 3, union 4 + 4 - 3 = 5
    assert metrics.iou(s, mask, threshold=0.3) == pytest.approx(3 / 5)
    assert metrics.iou(np.zeros((4, 4)), mask) == 0.0


def test_maps_at_layer_resolution_are_resized_to_the_mask():
    mask = np.zeros((8, 8), bool)
    mask[:4, :4] = True
    s = np.array([[1.0, 0.0], [0.0, 0.0]], np.float32)
    assert metrics.pointing_game(s, mask)
    # bilinear 2 -> 8 (half-pixel centres) spreads the corner over the rows/columns as
    # [1, 1, .875, .625, .375, .125, 0, 0]: 3.5 of 4 units per axis fall on the object
    assert metrics.energy_pointing_game(s, mask) == pytest.approx((3.5 / 4) ** 2)


def test_auc_trapezoid():
    assert metrics._auc(np.array([1.0, 0.0])) == pytest.approx(0.5)
    assert metrics._auc(np.array([1.0, 1.0, 0.0])) == pytest.approx(0.75)


class _PixelReader(nn.Module):
    """A 'model' whose logit for class 1 is 10x the mean of channel 0 over the top-left 2x2 block."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, 0, :2, :2].mean(dim=(1, 2)) * 10
        return torch.stack([torch.zeros_like(v), v], dim=1)


def test_deletion_and_insertion_reward_a_map_on_the_evidence():
    x = torch.zeros(1, 3, 4, 4)
    x[0, 0, :2, :2] = 1.0  # the evidence: p(class 1) = sigmoid(10) at the start
    good = np.zeros((4, 4))
    good[:2, :2] = 1.0
    bad = np.zeros((4, 4))
    bad[2:, 2:] = 1.0
    g = metrics.faithfulness(_PixelReader(), x, good, target=1, steps=4)
    b = metrics.faithfulness(_PixelReader(), x, bad, target=1, steps=4)
    # good map: after the first step (4 px = the evidence) the probability is 0.5 -> curve [p, .5, .5, .5, .5]
    p = float(torch.sigmoid(torch.tensor(10.0)))
    assert g.deletion_auc == pytest.approx((p + 0.5) / 2 * 0.25 + 0.5 * 0.75, abs=1e-6)
    assert g.deletion_auc < b.deletion_auc
    assert g.insertion_auc > b.insertion_auc


def test_perturbation_curve_endpoints():
    x = torch.zeros(1, 3, 4, 4)
    x[0, 0, :2, :2] = 1.0
    deletion, insertion = metrics.perturbation_curves(_PixelReader(), x, np.random.rand(4, 4), target=1, steps=4)
    assert len(deletion) == len(insertion) == 5
    p = float(torch.sigmoid(torch.tensor(10.0)))
    assert deletion[0] == pytest.approx(p) and deletion[-1] == pytest.approx(0.5)  # all pixels set to 0
    assert insertion[-1] == pytest.approx(p)  # everything revealed = the original


def test_road_runs_through_pytorch_grad_cam_and_prefers_the_true_evidence():
    torch.manual_seed(0)
    x = torch.zeros(1, 3, 16, 16)
    x[0, 0, :2, :2] = 1.0
    good = np.zeros((16, 16), np.float32)
    good[:2, :2] = 1.0
    good += np.linspace(0, 1e-3, 256, dtype=np.float32).reshape(16, 16)[::-1]  # break ties away from the corner
    bad = good[::-1, ::-1].copy()
    scores = metrics.road_scores(_PixelReader(), x, np.stack([good, bad]), target=1)
    assert scores.shape == (2,) and scores[0] > scores[1]


def test_batched_faithfulness_equals_one_map_at_a_time():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    x = torch.randn(1, 3, 8, 8)
    maps = [np.random.default_rng(i).random((8, 8)) for i in range(3)]
    together = metrics.faithfulness_many(model, x, maps, target=2, steps=8)
    alone = [metrics.faithfulness(model, x, m, target=2, steps=8) for m in maps]
    for a, b in zip(together, alone):
        assert a.deletion_auc == pytest.approx(b.deletion_auc, abs=1e-6)
        assert a.insertion_auc == pytest.approx(b.insertion_auc, abs=1e-6)


def _one_image_curves(model, x, saliency, target, steps=16, blur_sigma=5.0):
    """The per-image deletion / insertion curves as attnviz computed them before batching across images
    (one image, one map, every step its own masked copy), kept here as the reference."""
    import cv2

    _, _, h, w = x.shape
    k = int(2 * round(3 * blur_sigma) + 1)
    blurred = cv2.GaussianBlur(x[0].permute(1, 2, 0).numpy(), (k, k), blur_sigma)
    blurred = torch.from_numpy(blurred).permute(2, 0, 1)[None]
    order = torch.from_numpy(np.argsort(-saliency.ravel(), kind="stable"))
    revealed = torch.zeros(steps + 1, h * w)
    for i in range(steps + 1):
        revealed[i, order[:round(i * h * w / steps)]] = 1.0
    revealed = revealed.view(steps + 1, 1, h, w)
    with torch.no_grad():
        probs = torch.softmax(model(torch.cat([x * (1 - revealed), blurred * (1 - revealed) + x * revealed])), 1)
    probs = probs[:, target].numpy()
    return probs[:steps + 1], probs[steps + 1:]


def _small_classifier() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 6, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)).eval()


def test_curves_batched_across_images_and_maps_equal_the_one_image_path():
    model = _small_classifier()
    rng = np.random.default_rng(3)
    x = torch.randn(3, 3, 12, 12)
    maps = [[rng.random((12, 12)) for _ in range(k)] for k in (2, 1, 3)]   # a different number of maps per image
    maps[1][0] = rng.random((3, 3))                                        # a layer-resolution map is resized
    targets = [0, 3, 2]
    # 5 inputs per forward: batches end inside one map's path and mix images
    curves = metrics.perturbation_curves_batch(model, x, maps, targets, steps=8, max_batch=5)
    for i in range(3):
        deletion, insertion = curves[i]
        assert deletion.shape == insertion.shape == (len(maps[i]), 9)
        for j, s in enumerate(maps[i]):
            ref_del, ref_ins = _one_image_curves(model, x[i:i + 1], metrics._resize_to(s, (12, 12)), targets[i], 8)
            np.testing.assert_allclose(deletion[j], ref_del, atol=1e-6)
            np.testing.assert_allclose(insertion[j], ref_ins, atol=1e-6)
    together = metrics.faithfulness_batch(model, x, maps, targets, steps=8, max_batch=7)
    alone = metrics.faithfulness(model, x[2:3], maps[2][1], target=2, steps=8)
    assert together[2][1].deletion_auc == pytest.approx(alone.deletion_auc, abs=1e-6)
    assert together[2][1].insertion_auc == pytest.approx(alone.insertion_auc, abs=1e-6)


def test_batched_road_equals_pytorch_grad_cam_per_map_after_the_images_seed():
    from pytorch_grad_cam.metrics.road import ROADCombined
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    model = _small_classifier()
    rng = np.random.default_rng(4)
    x = torch.randn(2, 3, 16, 16)
    maps = [[rng.random((16, 16)).astype(np.float32) for _ in range(2)], [rng.random((16, 16)).astype(np.float32)]]
    targets, seeds = [1, 2], [11, 12345]
    torch.manual_seed(99)
    state = torch.get_rng_state()
    scores = metrics.road_scores_batch(model, x, maps, targets, seeds=seeds, max_batch=6)
    assert torch.equal(torch.get_rng_state(), state)       # the caller's generator is left as it was
    for i in range(2):
        assert scores[i].shape == (len(maps[i]),)
        for j, cam in enumerate(maps[i]):
            torch.manual_seed(seeds[i])
            expected = ROADCombined(percentiles=[20, 40, 60, 80])(x[i:i + 1], cam[None],
                                                                  [ClassifierOutputSoftmaxTarget(targets[i])], model)
            assert scores[i][j] == pytest.approx(float(expected[0]), abs=1e-6), (i, j)
    # the same image with other company in the batch gets the same score
    alone = metrics.road_scores(model, x[1:2], maps[1], targets[1], seed=seeds[1])
    assert alone[0] == pytest.approx(scores[1][0], abs=1e-6)
