"""A page session's own checkpoints: kept per browser session, never in the server-wide registry.

The page holds one :class:`SessionModels` in a ``gr.State``; its models reach the pipeline as
``ModelSpec`` objects, so another client never sees them (not in its model list, not in an error message
listing the registry). When the session ends — the tab closes (``Blocks.unload``) or the state expires
(``gr.State(time_to_live=..., delete_callback=...)``) — the models leave the model cache and their files
are deleted.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import threading
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from attnviz.core.specs import ModelSpec
from attnviz.errors import CheckpointError
from attnviz.zoo import registry as zoo
from attnviz.zoo.checkpoints import checkpoint_spec
from attnviz.zoo.files import CHECKPOINT_SUFFIXES, checkpoint_suffix

CHECKPOINT_ROOT = Path(os.environ.get("ATTNVIZ_TMP", tempfile.gettempdir())) / "attnviz-checkpoints"
# An open tab keeps its checkpoints while it is used (every comparison renews this); API clients have no
# tab to close, so this bounds how long their uploads stay in memory and on disk.
SESSION_TTL_S = float(os.environ.get("ATTNVIZ_SESSION_TTL_S", str(3 * 3600)))


def model_name(arch: str, filename: str) -> str:
    """The name a checkpoint gets in the model list: ``arch@file`` without the checkpoint ending."""
    stem = filename[: -len(checkpoint_suffix(filename))] if checkpoint_suffix(filename) else Path(filename).stem
    return f"{arch}@{stem}"[:80]


class SessionModels:
    """The checkpoints one page session loaded: specs by name, and the folder holding their files."""

    def __init__(self) -> None:
        CHECKPOINT_ROOT.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="session-", dir=CHECKPOINT_ROOT))
        self.specs: dict[str, ModelSpec] = {}
        self.files: dict[str, str] = {}      # model name -> the uploaded file's name
        self._lock = threading.Lock()
        self._added = 0

    def add(self, upload: str | Path, arch: str, classes: str | Path | None = None,
            filename: str | None = None) -> ModelSpec:
        """Validate ``upload`` against ``arch`` (strict) and keep it for this session under its own name."""
        upload = Path(upload)
        filename = Path(filename or upload.name).name
        if not checkpoint_suffix(filename):
            raise CheckpointError(f"{filename}: a checkpoint file ends in one of {', '.join(CHECKPOINT_SUFFIXES)}.")
        with self._lock:
            if not self.folder.is_dir():  # released earlier (expired state): start a fresh folder
                self.folder = Path(tempfile.mkdtemp(prefix="session-", dir=CHECKPOINT_ROOT))
            self._added += 1
            target = self.folder / str(self._added) / filename
            name = self._unique_name(model_name(arch, filename), filename)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(upload, target)  # the server's upload cache is cleaned on its own schedule
        try:
            spec = checkpoint_spec(arch, target, classes, name=name, allow_python=False)
        except Exception:
            shutil.rmtree(target.parent, ignore_errors=True)
            raise
        spec = replace(spec, display_name=f"{arch} ({filename})")
        with self._lock:
            old = self.specs.pop(spec.name, None)
            self.specs[spec.name] = spec
            self.files[spec.name] = filename
        if old is not None:
            self._drop(old)
        return spec

    def _unique_name(self, name: str, filename: str) -> str:
        """``name``, or ``name-2``, ``name-3`` ... when another file of this session already has it (x.pth and
        x.pth.tar); loading the *same* file name again replaces that model."""
        candidate, n = name, 1
        while candidate in self.files and self.files[candidate] != filename:
            n += 1
            candidate = f"{name}-{n}"
        return candidate

    def choices(self) -> list[tuple[str, str]]:
        """(label, name) pairs for the page's model list."""
        return [(s.display_name, s.name) for s in self.specs.values()]

    def resolve(self, names: Sequence[str]) -> list[str | ModelSpec]:
        """This session's specs for its checkpoint names; every other name is left for the registry."""
        return [self.specs.get(n, n) for n in names]

    def _drop(self, spec: ModelSpec) -> None:
        zoo.evict(spec)
        if spec.weights.path is not None:
            shutil.rmtree(spec.weights.path.parent, ignore_errors=True)

    def release(self) -> None:
        """Evict every model of this session from the cache and delete its files (idempotent)."""
        with self._lock:
            specs, self.specs, self.files = list(self.specs.values()), {}, {}
        for spec in specs:
            zoo.evict(spec)
        shutil.rmtree(self.folder, ignore_errors=True)


def resolve(session: SessionModels | None, names: Sequence[str]) -> list[str | ModelSpec]:
    return session.resolve(names) if session is not None else list(names)


# Sessions with checkpoints, by Gradio session hash: how the tab's unload event finds the state to release.
_live: dict[str, SessionModels] = {}
_live_lock = threading.Lock()


def track(session_hash: str | None, session: SessionModels) -> None:
    if session_hash:
        with _live_lock:
            _live[session_hash] = session


def release_session(session_hash: str | None) -> None:
    """The tab closed: release its checkpoints now (the state itself is dropped by Gradio later)."""
    with _live_lock:
        session = _live.pop(session_hash, None) if session_hash else None
    if session is not None:
        session.release()


def release_state(session: SessionModels | None) -> None:
    """``gr.State`` delete callback: the session's state expired or was deleted."""
    if session is None:
        return
    with _live_lock:
        for key in [k for k, v in _live.items() if v is session]:
            del _live[key]
    session.release()
