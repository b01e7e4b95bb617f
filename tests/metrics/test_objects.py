"""The claims' object measurements on constructed cases whose answers are known by hand."""
from __future__ import annotations

import numpy as np
import pytest

from attnviz.metrics import objects


def _mask(shape=(32, 32), rows=(8, 16), cols=(4, 12)) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[rows[0]:rows[1], cols[0]:cols[1]] = True
    return m


def test_coverage_is_one_for_the_object_itself_and_zero_for_its_complement():
    m = _mask()
    assert objects.coverage_at_object_area(m.astype(np.float32), m) == 1.0
    assert objects.coverage_at_object_area((~m).astype(np.float32), m) == 0.0


def test_coverage_cannot_be_raised_by_spreading_the_map():
    m = _mask()
    half = np.zeros_like(m, np.float32)
    half[8:16, 4:8] = 1.0          # half the object, nothing else
    spread = np.ones_like(m, np.float32)   # everything equally: raster order picks rows 0.. first
    assert objects.coverage_at_object_area(half, m) == pytest.approx(0.5)
    assert objects.coverage_at_object_area(spread, m) == 0.0
    assert objects.coverage_at_object_area(half, np.zeros_like(m)) is None


def test_coverage_resizes_a_small_map_to_the_mask():
    m = _mask((32, 32), (0, 16), (0, 16))
    small = np.zeros((2, 2), np.float32)
    small[0, 0] = 1.0
    assert objects.coverage_at_object_area(small, m) > 0.8


def test_profile_peak_on_an_object_row_hits_and_chance_is_the_share_of_object_rows():
    m = _mask()                    # rows 8..15 of 32: with an 8-long profile, bands 2 and 3 (of 4 px) hold it
    profile = np.zeros(8)
    profile[2] = 1.0
    assert objects.profile_peak_hit(profile, m, axis=0) == (1.0, 0.25)
    profile = np.zeros(8)
    profile[6] = 1.0
    assert objects.profile_peak_hit(profile, m, axis=0) == (0.0, 0.25)
    cols = np.zeros(8)             # columns 4..11: bands 1 and 2
    cols[1] = 0.9
    assert objects.profile_peak_hit(cols, m, axis=1) == (1.0, 0.25)


def test_a_flat_profile_scores_its_chance():
    assert objects.profile_peak_hit(np.full(8, 0.5), _mask(), axis=0) == (0.25, 0.25)
    assert objects.profile_peak_hit(np.zeros(8), np.zeros((32, 32), bool), axis=0) is None


def _affinity(q_on_object_to_object: bool) -> np.ndarray:
    """(4, 4, 4, 4) weights on a 32 x 32 mask whose object is the top-left 16 x 16: cells (0..1, 0..1)."""
    aff = np.zeros((4, 4, 4, 4))
    target = (slice(0, 2), slice(0, 2)) if q_on_object_to_object else (slice(2, 4), slice(2, 4))
    aff[:, :, target[0], target[1]] = 0.25
    return aff


def test_query_mass_on_object_for_attention_on_the_object_and_beside_it():
    m = _mask((32, 32), (0, 16), (0, 16))
    assert objects.query_mass_on_object(_affinity(True), m) == \
        {"object_queries": 1.0, "background_queries": 1.0, "key_share": 0.25}
    assert objects.query_mass_on_object(_affinity(False), m)["object_queries"] == 0.0
    uniform = objects.query_mass_on_object(np.full((4, 4, 4, 4), 1 / 16), m)
    assert uniform["object_queries"] == pytest.approx(0.25) == uniform["background_queries"]


def test_query_mass_tells_query_specific_attention_from_attention_that_ignores_the_query():
    m = _mask((32, 32), (0, 16), (0, 16))
    own = np.zeros((4, 4, 4, 4))
    for y in range(4):
        for x in range(4):
            own[y, x, y, x] = 1.0       # every query attends to itself
    found = objects.query_mass_on_object(own, m)
    assert found["object_queries"] == 1.0 and found["background_queries"] == 0.0


def test_query_mass_needs_an_object_cell_among_queries_and_keys():
    tiny = np.zeros((32, 32), bool)
    tiny[0, 0] = True              # under half of any 8 x 8 cell
    assert objects.query_mass_on_object(np.full((4, 4, 4, 4), 1 / 16), tiny) is None
    assert objects.query_mass_on_object(np.full((4, 4, 4, 4), 1 / 16), np.ones((32, 32), bool)) is None


def test_window_on_object_magnifies_a_zoom_onto_it_and_not_the_whole_frame():
    m = _mask((32, 32), (8, 16), (8, 16))
    tight = np.zeros((32, 32), bool)
    tight[4:20, 4:20] = True       # 16 x 16 window holding the 8 x 8 object
    w = objects.window_on_object(tight, m)
    assert w["scale"] == pytest.approx(0.5) and w["coverage"] == 1.0
    assert w["magnification"] == pytest.approx(4.0)
    assert w["iou"] == pytest.approx(64 / 256)
    full = objects.window_on_object(np.ones((32, 32), bool), m)
    assert full["scale"] == 1.0 and full["magnification"] == pytest.approx(1.0)
    beside = np.zeros((32, 32), bool)
    beside[20:32, 20:32] = True
    assert objects.window_on_object(beside, m)["magnification"] == 0.0
    assert objects.window_on_object(tight, np.zeros((32, 32), bool)) is None


def test_class_decoding_separable_features_hit_and_constant_features_miss():
    labels = np.repeat(np.arange(3), 4)
    features = np.eye(3)[labels] + 0.01 * np.arange(12)[:, None]
    hits, chance = objects.class_decoding_hits(features, labels)
    assert chance == pytest.approx(1 / 3)
    assert hits.tolist() == [1.0] * 12
    hits, _ = objects.class_decoding_hits(np.ones((12, 5)), labels)   # no information: every distance ties
    assert hits.tolist() == [0.0] * 12


def test_class_decoding_is_near_chance_for_features_unrelated_to_the_class():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    hits, chance = objects.class_decoding_hits(rng.normal(size=(200, 16)), labels)
    assert abs(np.nanmean(hits) - chance) < 0.1


def test_class_decoding_leaves_out_an_image_alone_in_its_class():
    hits, _ = objects.class_decoding_hits(np.eye(3)[[0, 0, 1, 1, 2]], np.array([0, 0, 1, 1, 2]))
    assert np.isnan(hits[4]) and hits[:4].tolist() == [1.0] * 4
