"""The procedural benchmark: determinism, exact masks, balance, sizes, distractors and occlusion."""
from __future__ import annotations

import numpy as np
import pytest

from attnviz.data import synth


@pytest.fixture(scope="module")
def scenes() -> synth.Scenes:
    return synth.generate(1100, seed=123, workers=1)


def test_contract(scenes):
    assert scenes.images.shape == (1100, 128, 128, 3) and scenes.images.dtype == np.uint8
    assert scenes.labels.shape == (1100,) and scenes.labels.dtype == np.int64
    assert scenes.masks.shape == (1100, 128, 128) and scenes.masks.dtype == bool
    assert scenes.boxes.shape == (1100, 4) and scenes.boxes.dtype == np.int32
    assert scenes.class_names == synth.CLASS_NAMES and len(synth.CLASS_NAMES) >= 10
    assert len(scenes) == 1100 and len(scenes.subset([0, 5, 7])) == 3


def test_deterministic_per_seed_and_index():
    a = synth.generate(12, seed=7)
    b = synth.generate(12, seed=7)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
    assert np.array_equal(a.labels, b.labels)
    prefix = synth.generate(5, seed=7)
    assert np.array_equal(prefix.images, a.images[:5])  # scene i depends only on (seed, i)
    other = synth.generate(12, seed=8)
    assert not np.array_equal(other.images, a.images)


def test_parallel_generation_is_identical():
    serial = synth.generate(600, seed=3, workers=1)
    parallel = synth.generate(600, seed=3, workers=2)
    assert np.array_equal(serial.images, parallel.images) and np.array_equal(serial.masks, parallel.masks)


def test_labels_are_balanced(scenes):
    counts = np.bincount(scenes.labels, minlength=len(synth.CLASS_NAMES))
    assert counts.min() == counts.max() == 100


@pytest.mark.parametrize("name", synth.CLASS_NAMES)
def test_mask_equals_the_drawn_pixels(name):
    canvas = np.full((128, 128, 3), 40, np.uint8)
    before = canvas.copy()
    mask = synth.draw_object(canvas, name, (60.3, 70.8), 40.0, 33.0, (200, 10, 90))
    changed = (canvas != before).any(axis=2)
    assert mask.any() and np.array_equal(changed, mask)
    assert (canvas[mask] == (200, 10, 90)).all()


@pytest.mark.parametrize("name", synth.CLASS_NAMES)
def test_object_fits_its_diameter(name):
    mask = synth.shape_mask(name, (128, 128), (64.0, 64.0), 40.0, 0.0)
    ys, xs = np.nonzero(mask)
    # every pixel lies within the outer circle (radius 20 px, +1 px rasterisation)
    assert np.sqrt((xs - 64) ** 2 + (ys - 64) ** 2).max() <= 21.0
    # and the shape fills a plausible share of that circle (rings and crescents least)
    assert 0.2 < mask.sum() / (np.pi * 20 ** 2) < 1.1  # fillPoly includes boundary pixels (+~5 % for a disc)


def test_hole_shapes_have_holes():
    ring = synth.shape_mask("ring", (64, 64), (32.0, 32.0), 40.0, 0.0)
    assert not ring[32, 32] and ring[32, 13]
    circle = synth.shape_mask("circle", (64, 64), (32.0, 32.0), 40.0, 0.0)
    assert circle[32, 32]


def test_visible_area_and_boxes(scenes):
    side = 128
    areas = scenes.masks.reshape(len(scenes), -1).sum(axis=1)
    assert areas.min() > 0
    # largest possible object: a full disc 35 % of the side across
    assert areas.max() <= np.pi * (0.35 * side / 2 + 1) ** 2
    for m, box in zip(scenes.masks[:50], scenes.boxes[:50]):
        ys, xs = np.nonzero(m)
        assert tuple(box) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_object_contrasts_with_its_surroundings(scenes):
    """The object's mean luminance differs from the ring of background around it."""
    import cv2

    diffs = []
    for img, m in zip(scenes.images[:200], scenes.masks[:200]):
        luma = img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        ring = cv2.dilate(m.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool) & ~m
        if ring.any():
            diffs.append(abs(luma[m].mean() - luma[ring].mean()))
    assert np.median(diffs) > 40


@pytest.fixture(scope="module")
def parts() -> list[synth.SceneParts]:
    return [synth.compose_scene(11, i) for i in range(2000)]


def test_occlusion_rate_and_amount(parts):
    occluded = [p for p in parts if p.occluder is not None]
    assert 0.08 < len(occluded) / len(parts) < 0.18  # OCCLUSION_PROB = 0.15, some placements fail
    for p in parts:
        assert (p.visible <= p.whole).all()
        if p.occluder is None:
            assert np.array_equal(p.visible, p.whole)
        else:
            hidden = (p.whole & p.occluder).sum() / p.whole.sum()
            assert synth.OCCLUSION_RANGE[0] <= hidden <= synth.OCCLUSION_RANGE[1]
            assert np.array_equal(p.visible, p.whole & ~p.occluder)


def test_one_to_four_distractors_that_never_touch_the_object(parts):
    counts = np.array([len(p.distractors) for p in parts])
    assert counts.max() <= 4
    assert (counts >= 1).mean() > 0.99
    for p in parts:
        for d in p.distractors:
            assert d.any() and not (d & p.whole).any()


def test_render_scene_is_compose_scene():
    image, label, visible = synth.render_scene(4, 9)
    p = synth.compose_scene(4, 9)
    assert np.array_equal(image, p.image) and label == p.label and np.array_equal(visible, p.visible)


def test_sizes_outside_the_supported_range_are_refused():
    with pytest.raises(ValueError, match="between 96 and 128"):
        synth.render_scene(0, 0, size=64)
    small = synth.generate(3, seed=0, size=96)
    assert small.images.shape == (3, 96, 96, 3)
