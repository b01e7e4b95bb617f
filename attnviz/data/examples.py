"""Write the page's example gallery: one benchmark scene per class, with its ground-truth mask.

Run ``python -m attnviz.data.examples`` to regenerate ``attnviz/assets/examples`` (deterministic: the scenes
come from :data:`EXAMPLES_SEED`, a seed that training and evaluation never use).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from attnviz.data import synth

EXAMPLES_SEED = 5
EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "examples"
MIN_VISIBLE_PIXELS = 500   # clear examples: objects of at least ~25 px across


def pick_scenes(seed: int = EXAMPLES_SEED, per_class: int = 1, search: int = 600) -> list[int]:
    """Indices of the first ``per_class`` clearly visible scenes of every class."""
    chosen: dict[int, list[int]] = {c: [] for c in range(len(synth.CLASS_NAMES))}
    for i in range(search):
        label = synth.label_for(seed, i)
        if len(chosen[label]) >= per_class:
            continue
        _, _, mask = synth.render_scene(seed, i)
        if mask.sum() >= MIN_VISIBLE_PIXELS:
            chosen[label].append(i)
        if all(len(v) >= per_class for v in chosen.values()):
            break
    return sorted(i for v in chosen.values() for i in v)


def write_examples(out_dir: Path = EXAMPLES_DIR, seed: int = EXAMPLES_SEED, per_class: int = 1) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i in pick_scenes(seed, per_class):
        image, label, mask = synth.render_scene(seed, i)
        stem = f"scene{i:03d}_{synth.CLASS_NAMES[label]}"
        cv2.imwrite(str(out_dir / f"{stem}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(out_dir / f"{stem}_mask.png"), mask.astype(np.uint8) * 255)
        written.append(out_dir / f"{stem}.png")
    return written


if __name__ == "__main__":
    for path in write_examples():
        print(path)
