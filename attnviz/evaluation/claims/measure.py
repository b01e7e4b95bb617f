"""The per-image measurements some claims need beyond results.json, from one recorded pass per trained network.

Every network (bundled model or training-seed replicate) sees the images results.json scored, for their true
class, in one :func:`attnviz.api.explain_batch` per chunk: Grad-CAM (plus attention rollout for a vision
transformer) and every attention gate, read through the recorder's forward hooks. What is kept per image depends
on what the network records, not on its name, so a user's ImageNet CBAM or Coordinate Attention network gets the
same measurements as the bundled one:

* ``true_probability`` — softmax probability of the true class; ``object_share`` — the object's share of the
  model's view (the energy a uniform map puts on the object);
* ``gradcam_coverage`` — :func:`attnviz.metrics.objects.coverage_at_object_area` of the Grad-CAM map;
* ``ca_profile_hit`` / ``ca_profile_chance`` — height and width gate profiles (Coordinate Attention) peaking
  on the object's rows / columns, mean over blocks and both axes, and the same for a random row or column;
* ``stage_epg:<stage>`` — energy pointing game of each stage's mean spatial attention map, scaled to [0, 1];
* ``class_decoding:<stage>`` — whether each stage's mean channel gates decode the image's class (leave-one-out
  nearest class centroid over all measured images; chance 1 / classes);
* ``query_mass`` / ``query_mass_background`` / ``query_share`` — attention of query cells on (off) the object
  that lands on the object, mean over blocks, and the object's share of the key cells;
* ``rollout_epg`` — energy pointing game of attention rollout;
* ``window_magnification`` / ``window_scale`` / ``window_coverage`` / ``window_iou`` — a spatial transformer's
  sampled window (:func:`attnviz.metrics.objects.window_on_object`).
"""
from __future__ import annotations

import sys
from typing import Iterable, Iterator, Sequence

import numpy as np

from attnviz.api import explain_batch
from attnviz.core.specs import LoadedModel
from attnviz.core.transformers import attention_modules
from attnviz.errors import AttnvizError
from attnviz.metrics import objects
from attnviz.metrics.localisation import mask_for_view
from attnviz.metrics.scores import energy_pointing_game
from attnviz.results import Explanation

AFFINITY_NAMES = ("mean of heads", "affinity", "position attention")   # a block's one query-by-key map, in order
DIGITS = 6


def _scaled(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)


def _block_affinities(e: Explanation) -> list[np.ndarray]:
    """Per attention block, its one affinity map: the head mean, the single map, or (criss-cross) the last one."""
    by_block: dict[str, list] = {}
    for a in e.attention_maps:
        if a.layout == "affinity":
            by_block.setdefault(a.block, []).append(a)
    chosen = []
    for maps in by_block.values():
        named = [a for name in AFFINITY_NAMES for a in maps if a.name == name]
        chosen.append((named or maps[-1:])[0].data)
    return chosen


def _profiles(e: Explanation, view: np.ndarray) -> dict[str, float]:
    found = [objects.profile_peak_hit(a.data, view, 0 if a.layout == "profile_h" else 1)
             for a in e.attention_maps if a.layout in ("profile_h", "profile_w")]
    found = [f for f in found if f is not None]
    if not found:
        return {}
    return {"ca_profile_hit": float(np.mean([f[0] for f in found])),
            "ca_profile_chance": float(np.mean([f[1] for f in found]))}


def _queries(e: Explanation, view: np.ndarray) -> dict[str, float]:
    found = [q for aff in _block_affinities(e) if (q := objects.query_mass_on_object(aff, view)) is not None]
    out = {}
    for key, field in (("query_mass", "object_queries"), ("query_mass_background", "background_queries"),
                       ("query_share", "key_share")):
        values = [f[field] for f in found if f[field] is not None]
        if values and len(values) == len(found):
            out[key] = float(np.mean(values))
    return out


def _window(e: Explanation, view: np.ndarray) -> dict[str, float]:
    from attnviz.evaluation.scoring import region_mask

    theta = next((a.data for a in e.attention_maps if a.layout == "affine"), None)
    w = None if theta is None else objects.window_on_object(region_mask(theta, view.shape), view)
    return {} if w is None else {"window_magnification": w["magnification"], "window_scale": w["scale"],
                                 "window_coverage": w["coverage"], "window_iou": w["iou"]}


def image_measures(e: Explanation, view: np.ndarray | None) -> dict[str, float]:
    """One network's measurements on one image whose object mask in the model's view is ``view`` (or None)."""
    out = {"true_probability": float(e.target.probability)}
    if view is None or not view.any():
        return out
    out["object_share"] = float(view.mean())
    if "gradcam" in e.cams:
        out["gradcam_coverage"] = objects.coverage_at_object_area(e.cams["gradcam"].heatmap, view)
    if "rollout" in e.cams:
        out["rollout_epg"] = energy_pointing_game(e.cams["rollout"].heatmap, view)
    for s in e.stage_summaries:
        if s.layout == "spatial":
            out[f"stage_epg:{s.stage}"] = energy_pointing_game(_scaled(s.data), view)
    out.update(_profiles(e, view))
    out.update(_queries(e, view))
    out.update(_window(e, view))
    return out


def _methods(loaded: LoadedModel) -> tuple[str, ...]:
    return ("gradcam", "rollout") if attention_modules(loaded.model) else ("gradcam",)


def _decode(gates: dict[str, dict[int, np.ndarray]], labels: dict[int, int], per_image: list[dict]) -> dict:
    """``class_decoding:<stage>`` per image from the stage's channel gates of every measured image; the chance."""
    chance = {}
    for stage, by_image in gates.items():
        order = sorted(by_image)
        hits, level = objects.class_decoding_hits(np.stack([by_image[i] for i in order]),
                                                  np.array([labels[i] for i in order]))
        for i, h in zip(order, hits):
            if np.isfinite(h):
                per_image[i][f"class_decoding:{stage}"] = float(h)
        chance[f"class_decoding:{stage}"] = level
    return chance


def collect(n: int, explained: Iterable[tuple[int, Explanation, np.ndarray | None, int]]) -> dict:
    """One network's measurements from ``(position, explanation, view mask or None, true label)`` for some of
    ``n`` images: ``{"values": {key: [per image, None where absent]}, "chance": {key: level}, "stages": [stage
    names, shallow to deep]}``. Only the channel gates are kept until the end (for the class decoding)."""
    per_image: list[dict] = [{} for _ in range(n)]
    gates: dict[str, dict[int, np.ndarray]] = {}
    labels: dict[int, int] = {}
    stages: list[str] = []
    for j, e, view, label in explained:
        per_image[j] = image_measures(e, view)
        labels[j] = label
        for s in e.stage_summaries:
            if s.stage not in stages:
                stages.append(s.stage)
            if s.layout == "channel":
                gates.setdefault(s.stage, {})[j] = s.data
    chance = _decode(gates, labels, per_image)
    keys = list(dict.fromkeys(k for d in per_image for k in d))
    values = {k: [None if d.get(k) is None else round(float(d[k]), DIGITS) for d in per_image] for k in keys}
    return {"values": values, "chance": chance, "stages": stages}


def _explained(loaded: LoadedModel, images, indices: Sequence[int], batch_size: int, progress: bool,
               ) -> Iterator[tuple[int, Explanation, np.ndarray | None, int]]:
    """Every readable, labelled image of ``indices`` explained for its true class, chunk by chunk, with its mask
    in the model's view."""
    from tqdm import tqdm

    spec = loaded.spec
    methods = _methods(loaded)
    bar = tqdm(total=len(indices), desc=f"claims {spec.name}", unit="image", disable=not progress, file=sys.stderr)
    for start in range(0, len(indices), batch_size):
        stop = min(start + batch_size, len(indices))
        chunk = []
        for j in range(start, stop):
            try:
                image, mask = images.load(indices[j])
            except AttnvizError as exc:   # eval reported the file already; the claims just lack it
                print(f"claims: skipped {images.ids[indices[j]]}: {exc}", file=sys.stderr)
                continue
            label, _ = images.label(indices[j], spec)
            if label is not None:
                chunk.append((j, image, mask, int(label)))
        es = explain_batch(loaded, [c[1] for c in chunk], methods, targets=[c[3] for c in chunk],
                           batch_size=batch_size, device=loaded.device, class_names=spec.class_names) if chunk else []
        for (j, image, mask, label), e in zip(chunk, es):
            side = e.image.shape[0]
            view = None if mask is None else mask_for_view(mask, image.shape[:2], side, e.view_resize or side,
                                                           getattr(spec, "interpolation", "bilinear"))
            yield j, e, view, label
        bar.update(stop - start)
    bar.close()


def measure_run(loaded: LoadedModel, images, indices: Sequence[int], batch_size: int, progress: bool = False) -> dict:
    """The measurements of one network (:func:`collect`) on ``images`` (:class:`attnviz.evaluation.run.SceneImages`
    or ``FolderImages``) at ``indices``; unreadable or unlabelled images get None everywhere."""
    return collect(len(indices), _explained(loaded, images, indices, batch_size, progress))
