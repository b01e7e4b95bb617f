"""The images ``attnviz eval`` scores: the held-out benchmark scenes, a dataset folder, or a ``.zip`` of one.

Each source answers the same questions (ids, load, the label for a model, the objects' mean area), so scoring
never asks which one it has.
"""
from __future__ import annotations

import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Sequence

import numpy as np

from attnviz.data import synth
from attnviz.data.archive import ARCHIVE_SUFFIX, extract_archive
from attnviz.data.scenes import cached_scenes
from attnviz.errors import AttnvizError


class SceneImages:
    """Benchmark scenes: image ``i`` is scene ``i`` of the data seed, with its exact object mask."""

    def __init__(self, n: int, seed: int, progress: bool) -> None:
        self.scenes = cached_scenes(n, seed, synth.IMAGE_SIZE, progress=progress)
        self.ids: list = list(range(n))
        self.listing_skipped: list[dict] = []

    def check(self, spec) -> None:
        if tuple(spec.class_names) != tuple(synth.CLASS_NAMES):
            raise AttnvizError(f"{spec.name} was not trained on the benchmark's classes; score it on your own "
                               "images with --data DIR (DIR/<class>/<image> with masks or VOC boxes).")

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        return self.scenes.images[i], self.scenes.masks[i]

    def label(self, i: int, spec) -> tuple[int | None, str]:
        return int(self.scenes.labels[i]), ""

    def object_area(self, indices: Sequence[int] | None = None) -> float | None:
        masks = self.scenes.masks if indices is None else self.scenes.masks[list(indices)]
        return float(masks.mean()) if len(masks) else None


class FolderImages:
    """A dataset folder (:func:`attnviz.data.datasets.read_dataset`): labels are matched per model's class names."""

    def __init__(self, root: Path, specs: Sequence, limit: int | None) -> None:
        from attnviz.data.datasets import read_dataset

        self.root = Path(root)
        listings = {}
        for spec in specs:
            names = tuple(spec.class_names)
            if names not in listings:
                listings[names] = read_dataset(self.root, names)
        first = next(iter(listings.values()))
        self.items = list(first.items)[:limit] if limit else list(first.items)
        self.labels = {names: {item.path: (item.label, item.label_reason) for item in ds.items}
                       for names, ds in listings.items()}
        self.ids = [item.path.relative_to(self.root).as_posix() for item in self.items]
        self.listing_skipped = [{"image": str(s.path.relative_to(self.root)) if s.path.is_relative_to(self.root)
                                 else str(s.path), "reason": s.reason} for s in first.skipped]
        if not self.items:
            raise AttnvizError(f"{self.root} holds no usable image (see the skipped files); the layout is "
                               "DIR/<class>/<image> with <stem>_mask.png or <stem>.xml beside each image.")

    def check(self, spec) -> None:
        return None

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        return self.items[i].load()

    def label(self, i: int, spec) -> tuple[int | None, str]:
        return self.labels[tuple(spec.class_names)].get(self.items[i].path, (None, "not listed"))

    def object_area(self, indices: Sequence[int] | None = None) -> float | None:
        return None


def open_images(data: Path | None, n: int | None, seed: int, loaded: list, progress: bool, stack: ExitStack,
                 unpack_to: Path | None = None):
    """The images to score: benchmark scenes, a dataset folder, or a .zip unpacked into ``unpack_to`` (default:
    a temporary folder that lives as long as ``stack``), then read by the same folder path."""
    if data is None:
        n = 200 if n is None else n
        if n < 1:
            raise AttnvizError("--n must be at least 1.")
        return SceneImages(n, seed, progress)
    if data.suffix.lower() == ARCHIVE_SUFFIX and data.is_file():
        if unpack_to is None:
            unpack_to = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="attnviz-data-"))) / "data"
        unpacked = extract_archive(data, unpack_to)
        images = FolderImages(unpacked.root, [m.spec for m in loaded], n)
        images.listing_skipped[:0] = [{"image": s.path.as_posix(), "reason": s.reason} for s in unpacked.skipped]
        return images
    return FolderImages(data, [m.spec for m in loaded], n)
