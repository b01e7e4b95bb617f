"""Files the page hands out: the grid PNG, raw maps (.npz), the JSON report, converted checkpoints.

Each download lives in its own fresh folder under the writable temp dir; it goes with its tab
(:func:`attnviz.app.web.sessions.own`), and any folder older than an hour goes anyway.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from attnviz.app import pipeline
from attnviz.app.report import maps_npz_bytes
from attnviz.app.web.sessions import TMP_PREFIX, TMP_ROOT

DOWNLOAD_ROOT = TMP_ROOT / f"{TMP_PREFIX}downloads"
DOWNLOAD_TTL_S = 3600


def cleanup_downloads() -> None:
    if not DOWNLOAD_ROOT.is_dir():
        return
    cutoff = time.time() - DOWNLOAD_TTL_S
    for d in DOWNLOAD_ROOT.iterdir():
        try:
            if d.is_dir() and d.stat().st_mtime < cutoff:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            continue


def new_download_folder(prefix: str) -> Path:
    cleanup_downloads()
    DOWNLOAD_ROOT.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=DOWNLOAD_ROOT))


def write_png(path: Path, rgb: np.ndarray) -> Path:
    import cv2

    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def write_downloads(result: pipeline.PageResult) -> list[str]:
    """grid.png, maps.npz and report.json in a fresh folder under the writable temp dir."""
    folder = new_download_folder("cmp-")
    grid_path = write_png(folder / "attnviz-grid.png", result.grid)
    npz_path = folder / "attnviz-maps.npz"
    npz_path.write_bytes(maps_npz_bytes(result.comparison))
    report_path = folder / "attnviz-report.json"
    report_path.write_text(json.dumps(result.report, indent=2))
    return [str(grid_path), str(npz_path), str(report_path)]


def replace_grid_png(files: list[str] | None, light_grid: np.ndarray) -> list[str]:
    """The downloads with a re-drawn grid PNG (always on a light background); [] when there were none."""
    files = list(files or [])
    if files:
        files[0] = str(write_png(new_download_folder("grid-") / "attnviz-grid.png", light_grid))
    return files
