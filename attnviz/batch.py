"""``attnviz explain``: grids and CSVs for many images, one bad file never stopping the batch."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Sequence

import cv2

from . import pipeline
from .engine import DEFAULT_METHODS
from .errors import AttnvizError
from .images import load_mask
from .report import PREDICTION_COLUMNS, maps_npz_bytes, write_csv

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
SCORE_COLUMNS = ["image", "model", "map", "pointing_game", "energy_pointing_game", "iou"]
EXIT_PARTIAL = 1


def collect_inputs(paths: Sequence[str]) -> list[Path]:
    """Files as given, folders expanded (sorted, image suffixes only); ``*_mask.png`` files are masks, not inputs."""
    found: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            found.extend(sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES
                                and not f.stem.endswith("_mask")))
        else:
            found.append(p)  # a missing or bad file is reported when it is processed
    if not found:
        raise AttnvizError("No images found in the given paths.")
    return found


def _mask_beside(path: Path):
    candidate = path.with_name(f"{path.stem}_mask.png")
    return load_mask(candidate) if candidate.is_file() else None


def explain_paths(images: Sequence[str], out_dir: Path, models: Sequence[str] | None = None,
                  methods: Sequence[str] = DEFAULT_METHODS, target: str | None = None, layer: str | None = None,
                  progress: bool = True, npz: bool = False) -> int:
    """Write ``<stem>_grid.png`` and ``<stem>.json`` per image plus ``predictions.csv`` / ``scores.csv``
    (and ``<stem>_maps.npz`` with every raw map and the logits when ``npz``).

    Returns 0 when every image was processed, 1 when some were skipped (each reported on stderr).
    """
    from tqdm import tqdm

    from .ui import default_models

    inputs = collect_inputs(images)
    chosen = list(models) if models else default_models()
    if not chosen:
        raise AttnvizError("No models available: the bundled weights are missing.")
    pipeline.check_limits(chosen, methods)
    out_dir.mkdir(parents=True, exist_ok=True)
    prediction_rows: list[dict] = []
    score_rows: list[dict] = []
    skipped = 0
    for path in tqdm(inputs, desc="explain", unit="image", disable=not progress, file=sys.stderr):
        try:
            request = pipeline.Request(image=path, models=chosen, methods=methods, target=target, layer=layer,
                                       mask=_mask_beside(path), source=str(path))
            result = pipeline.run(request)
        except AttnvizError as exc:
            if "Unknown model" in str(exc) or "Unknown CAM method" in str(exc) or "limit is" in str(exc):
                raise  # a mistake in the command, not in this file
            skipped += 1
            tqdm.write(f"skipped {path}: {exc}", file=sys.stderr)
            continue
        stem = path.stem
        cv2.imwrite(str(out_dir / f"{stem}_grid.png"), cv2.cvtColor(result.grid, cv2.COLOR_RGB2BGR))
        (out_dir / f"{stem}.json").write_text(json.dumps(result.report, indent=2))
        if npz:
            (out_dir / f"{stem}_maps.npz").write_bytes(maps_npz_bytes(result.comparison))
        for row in result.predictions:
            prediction_rows.append({**row, "image": str(path)})
        for model, per_map in result.scores.items():
            for name, s in per_map.items():
                score_rows.append({"image": str(path), "model": model, "map": name, **s})
    write_csv(out_dir / "predictions.csv", prediction_rows, PREDICTION_COLUMNS)
    write_csv(out_dir / "scores.csv", score_rows, SCORE_COLUMNS)
    done = len(inputs) - skipped
    print(f"{done} of {len(inputs)} images processed; results in {out_dir}", file=sys.stderr)
    if done == 0:
        raise AttnvizError("No image could be processed.")
    return EXIT_PARTIAL if skipped else 0
