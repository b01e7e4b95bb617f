"""What a comparison leaves behind: a JSON report, the raw maps as ``.npz``, CSV rows of predictions.

The web page's downloads and the command line's output folder are written by these same functions.
"""
from __future__ import annotations

import csv
import io
import json
import platform
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np

from attnviz import __version__
from attnviz.results import AttentionMap, Comparison, Explanation

PACKAGES = ("torch", "torchvision", "gradio", "grad-cam", "numpy", "opencv-python-headless", "safetensors", "timm")


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    versions = {"attnviz": __version__, "python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


# Relative spread below which a gate counts as constant: float32 noise, not a weighting.
CONSTANT_GATE_TOLERANCE = 1e-6
_GATE_AXES = {"channel": "channels", "spatial": "positions", "profile_h": "rows", "profile_w": "columns"}


def dead_gate(amap: AttentionMap) -> str:
    """A short label when a gate gives every channel / position the same weight, else "".

    Such a gate only rescales its input by one number (SE's excitation at sigmoid(0) = 0.5 when its
    hidden ReLU units are all off), so its map carries no attention. Maps of several values only.
    """
    axis = _GATE_AXES.get(amap.layout)
    if axis is None or np.size(amap.data) < 2:
        return ""
    data = np.asarray(amap.data, np.float64)
    if not np.isfinite(data).all():
        return ""
    lo, hi = float(data.min()), float(data.max())
    if hi - lo > CONSTANT_GATE_TOLERANCE * max(1.0, abs(hi)):
        return ""
    return f"dead gate: {hi:.3g} on all {data.size} {axis}"


def dead_gates(e: Explanation) -> list[dict]:
    """Every block map of ``e`` whose gate is constant (see :func:`dead_gate`)."""
    out = []
    for m in e.attention_maps:
        label = dead_gate(m)
        if label:
            out.append({"block": m.block, "map": m.name, "value": float(m.data.reshape(-1)[0]), "label": label})
    return out


def explanation_record(e: Explanation) -> dict:
    return {
        "model": e.model,
        "display_name": e.display_name,
        "attention": e.attention,
        "weights_sha256": e.weights_sha256,
        "layer": e.layer,
        "target": {"index": e.target.index, "label": e.target.label, "probability": round(e.target.probability, 6)},
        "predictions": [{"index": p.index, "label": p.label, "probability": round(p.probability, 6)}
                        for p in e.predictions],
        "methods": list(e.cams),
        "unavailable_methods": dict(e.unavailable),   # requested but impossible for this model, with why
        "cam_peak_xy": {m: _peak(c.heatmap) for m, c in e.cams.items()},
        "attention_maps": len(e.attention_maps),
        "dead_gates": dead_gates(e),
        "logits": [float(f"{v:.7g}") for v in e.logits.tolist()],
        "timings_ms": {k: round(v, 2) for k, v in e.timings.items()},
        "warnings": e.warnings,
        "contrast": None if e.contrast is None else {"index": e.contrast.index, "label": e.contrast.label,
                                                      "probability": round(e.contrast.probability, 6)},
        # how the maps were made; the chunk size is left out: it does not change them (tests/app/test_batch.py), and
        # without it the one-image path, a batch and a torchrun run write the same report
        "options": {k: v for k, v in e.options.items() if k != "batch"},
        "device": e.device,
    }


def _peak(heat: np.ndarray) -> list[int]:
    y, x = np.unravel_index(int(np.argmax(heat)), heat.shape)
    return [int(x), int(y)]


def report_dict(comparison: Comparison, scores: dict[str, dict[str, dict[str, float]]] | None = None,
                source: str = "", warnings: list[str] | None = None) -> dict:
    """The JSON report: models, weights hashes, target, methods, predictions, timings, versions, and
    ``warnings`` about the whole comparison (e.g. bundled models shown a photo)."""
    return {
        "attnviz_report": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "source": source,
        "warnings": list(warnings or []),
        "image_size": list(comparison.image.shape[:2]),
        "target_request": comparison.target_request,
        "methods": list(comparison.methods),
        "models": [explanation_record(e) for e in comparison.explanations],
        "localisation": scores or {},
        "agreement": agreement_rows(comparison),
        "not_compared_with_baseline": {m: why.replace("\n", " ") for m, why in comparison.not_compared.items()},
        "timings_ms": {k: round(v, 2) for k, v in comparison.timings.items()},
        "versions": package_versions(),
    }


AGREEMENT_FIELDS = ("spearman", "top20_iou", "peak_distance", "peak_distance_pct", "peak_distance_diag_pct",
                    "same_target")


def agreement_rows(comparison: Comparison) -> list[dict]:
    """``Comparison.agreement`` as JSON rows: one per (variant, method), against the baseline row."""
    return [{"model": model, "method": method, **{k: round(float(v), 6) for k, v in numbers.items()}}
            for (model, method), numbers in comparison.agreement.items()]


def report_json(comparison: Comparison, scores=None, source: str = "", warnings: list[str] | None = None) -> str:
    return json.dumps(report_dict(comparison, scores, source, warnings), indent=2)


def maps_npz_bytes(comparison: Comparison) -> bytes:
    """Every CAM (normalised, raw, layer resolution) and attention map, keyed ``model/kind/name``."""
    arrays: dict[str, np.ndarray] = {"input": comparison.image}
    for e in comparison.explanations:
        if e.image is not None:
            arrays[f"{e.model}/input"] = e.image
        arrays[f"{e.model}/logits"] = e.logits
        for m, c in e.cams.items():
            arrays[f"{e.model}/cam/{m}/heatmap"] = c.heatmap
            arrays[f"{e.model}/cam/{m}/raw"] = c.raw
            arrays[f"{e.model}/cam/{m}/layer"] = c.layer_map
        for a in e.attention_maps + e.stage_summaries:
            arrays[f"{e.model}/attention/{a.block}/{a.name}"] = a.data
    if comparison.agreement:  # model/agreement/method: the AGREEMENT_FIELDS numbers, in that order
        arrays["agreement_fields"] = np.array(AGREEMENT_FIELDS)
        for (model, method), numbers in comparison.agreement.items():
            arrays[f"{model}/agreement/{method}"] = np.array([numbers.get(k, np.nan) for k in AGREEMENT_FIELDS],
                                                             np.float64)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return buf.getvalue()


CSV_PREDICTION_COLUMNS = ["image", "model", "rank", "label", "probability", "target", "target_probability"]


def prediction_rows(comparison: Comparison, image_name: str = "") -> list[dict]:
    rows = []
    for e in comparison.explanations:
        for rank, p in enumerate(e.predictions, start=1):
            rows.append({"image": image_name, "model": e.model, "rank": rank, "label": p.label,
                         "probability": round(p.probability, 6), "target": e.target.label,
                         "target_probability": round(e.target.probability, 6)})
    return rows


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
