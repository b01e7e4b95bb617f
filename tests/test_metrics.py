"""Metric functions against small hand-computed examples."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from attnviz import metrics


@pytest.fixture
def mask() -> np.ndarray:
    m = np.zeros((4, 4), bool)
    m[1:3, 1:3] = True  # 4 object pixels in the centre
    return m


def test_pointing_game_hit_miss_and_tolerance(mask):
    hit = np.zeros((4, 4)); hit[2, 2] = 1.0
    miss = np.zeros((4, 4)); miss[0, 3] = 1.0
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
    good = np.zeros((4, 4)); good[:2, :2] = 1.0
    bad = np.zeros((4, 4)); bad[2:, 2:] = 1.0
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
    good = np.zeros((16, 16), np.float32); good[:2, :2] = 1.0
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
