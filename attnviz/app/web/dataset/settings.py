"""What the operator of a server decides for the Data set tab, read from the environment at import.

* ``ATTNVIZ_DATASET_JOBS``: data-set jobs running at once on the server (default 1: a 2-core machine stays
  responsive for the Compare tab); a tab that asks for more is told so in one line.
* ``ATTNVIZ_DATASET_MAX_IMAGES``: images per job (default 500); larger sets are scored up to this many.
* ``ATTNVIZ_DATASETS``: folders on the server a visitor may choose, as ``name=/path`` entries separated by
  ``;`` (or plain paths, named by their last folder). Visitors see the names only and can never type a path.
* Archive caps: ``ATTNVIZ_ARCHIVE_MAX_MB`` and ``ATTNVIZ_ARCHIVE_MAX_FILES`` (:mod:`attnviz.data.archive`).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from attnviz.data.scenes import EVAL_SEED

JOB_ROOT = Path(os.environ.get("ATTNVIZ_TMP", tempfile.gettempdir())) / "attnviz-datasets"
DEFAULT_SCENES = 100
SCENES_SEED = EVAL_SEED
DISAGREE_K = 6                       # images shown in "where they disagree"


def _int(name: str, default: int) -> int:
    try:
        return max(1, int(os.environ.get(name, str(default))))
    except ValueError:
        return default


def max_jobs() -> int:
    return _int("ATTNVIZ_DATASET_JOBS", 1)


def max_images() -> int:
    return _int("ATTNVIZ_DATASET_MAX_IMAGES", 500)


def operator_folders() -> dict[str, Path]:
    """``{name: folder}`` of the folders the operator lists in ``ATTNVIZ_DATASETS`` that exist."""
    found: dict[str, Path] = {}
    for entry in os.environ.get("ATTNVIZ_DATASETS", "").split(";"):
        entry = entry.strip()
        if not entry:
            continue
        name, _, path = entry.partition("=") if "=" in entry else ("", "", entry)
        folder = Path(path.strip()).expanduser()
        if folder.is_dir():
            found[(name.strip() or folder.name)] = folder
    return found
