"""What attention changed: agreement numbers, the "vs baseline" grid column, report, npz and page options."""
from __future__ import annotations

import io

import numpy as np
import pytest

from attnviz.app import pipeline, render
from attnviz.app.report import maps_npz_bytes
from attnviz.app.web import choices, handlers, views
from attnviz.data.examples import EXAMPLES_DIR
from attnviz.metrics import agreement

SCENE = sorted(p for p in EXAMPLES_DIR.glob("*.png") if not p.name.endswith("_mask.png"))[1]


def test_agreement_numbers_on_known_maps():
    yy, xx = np.mgrid[0:64, 0:64]
    a = np.exp(-((yy - 20) ** 2 + (xx - 20) ** 2) / 50.0)
    same = agreement.map_agreement(a, a)
    assert same["spearman"] == pytest.approx(1.0) and same["top20_iou"] == pytest.approx(1.0)
    assert same["peak_distance"] == 0
    moved = np.exp(-((yy - 20) ** 2 + (xx - 50) ** 2) / 50.0)   # the same blob 30 px to the right
    m = agreement.map_agreement(moved, a)
    assert m["peak_distance"] == pytest.approx(30.0) and m["peak_distance_pct"] == pytest.approx(100 * 30 / 64)
    assert m["top20_iou"] < 0.5 and m["spearman"] < same["spearman"]
    assert agreement.map_agreement(-a, a)["spearman"] == pytest.approx(-1.0)   # reversed ranking
    diff = agreement.difference_map(moved, a)
    assert diff.min() >= -1 and diff.max() <= 1 and diff[20, 50] > 0.9 and diff[20, 20] < -0.9
    # a variant at another resolution is compared at the baseline's
    assert agreement.map_agreement(a[::2, ::2], a)["spearman"] > 0.99


def test_comparison_with_a_baseline_gets_the_column_report_and_npz():
    result = pipeline.run(pipeline.Request(image=SCENE, models=["baseline", "cbam", "coord"],
                                           methods=["gradcam", "layercam"], device="cpu"))
    c = result.comparison
    assert set(c.agreement) == {(m, k) for m in ("cbam", "coord") for k in ("gradcam", "layercam")}
    base = c.explanations[0]
    for (model, method), numbers in c.agreement.items():
        e = next(x for x in c.explanations if x.model == model)
        assert {k: v for k, v in numbers.items() if k != "peak_distance_diag_pct"} == \
            agreement.map_agreement(e.cams[method].heatmap, base.cams[method].heatmap) | \
            {"same_target": float(e.target.label == base.target.label)}
    assert result.grid.shape[:2] == render.grid_shape(3, 2, extra_columns=1)
    frame = views.agreement_frame(result)
    assert len(frame) == 4 and list(frame.columns) == views.AGREEMENT_COLUMNS
    rows = result.report["agreement"]
    assert {(r["model"], r["method"]) for r in rows} == set(c.agreement)
    with np.load(io.BytesIO(maps_npz_bytes(c))) as z:
        assert any(k.startswith("cbam/agreement/") for k in z.files)


def test_no_baseline_no_column():
    result = pipeline.run(pipeline.Request(image=SCENE, models=["se", "cbam"], methods=["gradcam"], device="cpu"))
    assert result.comparison.agreement == {} and views.agreement_frame(result).empty
    assert result.grid.shape[:2] == render.grid_shape(2, 1, extra_columns=0)


def test_page_options_reach_the_engine_contrast_smoothing_fused_layers():
    out = handlers.on_compare(str(SCENE), ["baseline", "se"], ["gradcam"], choices.TOP1, ["layer2", "layer3"], 0.5,
                              "per model", "jet", None, False, None, "ring", [choices.EIGEN_SMOOTH,
                                                                               choices.AUG_SMOOTH], progress=None)
    comparison = out[8]
    for e in comparison.explanations:
        assert e.layer == "layer2+layer3"
        assert e.contrast is not None and e.contrast.label == "ring"
        assert e.options["eigen_smooth"] and e.options["aug_smooth"]
    assert handlers.parse_layer([choices.DEFAULT_LAYER]) is None and handlers.parse_layer(["layer2"]) == "layer2"
    assert handlers.parse_contrast(choices.NO_CONTRAST) is None
