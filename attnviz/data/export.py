"""``attnviz synth export``: the benchmark scenes as a dataset folder anyone can read.

The scenes are exactly those ``attnviz eval --n N --seed S`` scores (:func:`attnviz.zoo.training.cached_scenes`),
written losslessly in the layout :mod:`attnviz.data.datasets` reads: ``DIR/<class>/s<seed>_<index>.png`` with
``<stem>_mask.png`` (the visible object's pixels) or, with ``boxes``, ``<stem>.xml`` (the Pascal VOC box of
the visible object). Scoring the folder must therefore give the same numbers as scoring the scenes; it
is both a worked example of ``--data`` and the test that the two paths agree.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from attnviz.data import synth
from attnviz.data.datasets import MASK_SUFFIX, VocBox, voc_xml
from attnviz.errors import DatasetError


@dataclass(frozen=True)
class Export:
    """What was written: the folder, how many scenes, and the stem of scene ``i`` (``stems[i]``)."""

    root: Path
    n: int
    seed: int
    ground_truth: str                  # "mask" or "boxes"
    stems: tuple[str, ...]
    class_folders: tuple[str, ...]     # class folder of scene ``i``


def scene_stem(seed: int, index: int) -> str:
    return f"s{seed}_{index:06d}"


def export_scenes(out: str | Path, n: int, seed: int, *, boxes: bool = False, progress: bool = False) -> Export:
    """Write scenes ``0 .. n-1`` of data seed ``seed`` into ``out`` (which must be empty or absent)."""
    from tqdm import tqdm

    from attnviz.data.scenes import cached_scenes

    out = Path(out)
    if n < 1:
        raise DatasetError("--n must be at least 1.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"{out} exists and is not an empty folder; choose a new one.")
    scenes = cached_scenes(n, seed, synth.IMAGE_SIZE, progress=progress)
    stems, folders = [], []
    for i in tqdm(range(n), desc=f"export (seed {seed})", unit="scene", disable=not progress):
        folder = scenes.class_names[int(scenes.labels[i])]
        stem = scene_stem(seed, i)
        target = out / folder
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(scenes.images[i], "RGB").save(target / f"{stem}.png")
        if boxes:
            x0, y0, x1, y1 = (int(v) for v in scenes.boxes[i])
            objects = [VocBox(folder, x0, y0, x1, y1)] if x1 > x0 and y1 > y0 else []
            h, w = scenes.images[i].shape[:2]
            (target / f"{stem}.xml").write_bytes(voc_xml(f"{stem}.png", w, h, objects, folder))
        else:
            mask = np.where(scenes.masks[i], 255, 0).astype(np.uint8)
            Image.fromarray(mask, "L").save(target / f"{stem}{MASK_SUFFIX}")
        stems.append(stem)
        folders.append(folder)
    return Export(out, n, seed, "boxes" if boxes else "mask", tuple(stems), tuple(folders))
