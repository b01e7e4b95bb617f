"""What one browser tab owns, and how it goes when the tab goes: its checkpoints (:class:`SessionModels`) and every
file it uploaded or was served (:class:`TabFiles`).

The page holds one :class:`SessionModels` in a ``gr.State``; its models reach the pipeline as
``ModelSpec`` objects, so another client never sees them (not in its model list, not in an error message
listing the registry). When the session ends — the tab closes (``Blocks.unload``) or the state expires
(``gr.State(time_to_live=..., delete_callback=...)``) — the models leave the model cache and their files
are deleted.

:data:`tab_files` is the per-tab registry of files: :func:`attach` records every file a tab's requests carry in
or out (uploads, result downloads, pictures, converted checkpoints — Gradio's cached copies included) and
:func:`own` takes any other file or folder a handler makes for the tab (a job folder, a download folder). When
the tab closes (:func:`release_tab_files`, from the page's unload event) or has been idle for
:data:`SESSION_TTL_S`, each of them that no other live tab also holds is deleted, so its ``/file=`` URL answers
403 to anyone. Example files (Gradio's ``keep_in_cache``) are never deleted.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from attnviz.core.specs import ModelSpec
from attnviz.errors import CheckpointError
from attnviz.zoo import registry as zoo
from attnviz.zoo.files import CHECKPOINT_SUFFIXES, checkpoint_suffix

TMP_ROOT = Path(os.environ.get("ATTNVIZ_TMP", tempfile.gettempdir()))   # attnviz's own temp folders live here
TMP_PREFIX = "attnviz-"                                                   # ... each named attnviz-<what>
CHECKPOINT_ROOT = TMP_ROOT / f"{TMP_PREFIX}checkpoints"
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
        from attnviz.zoo.checkpoints import checkpoint_spec  # torch and the networks: on the first checkpoint

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


# ---- every file a tab uploaded or was served ----------------------------------------------------------------

log = logging.getLogger("attnviz.app.web")


class TabFiles:
    """Files and folders owned by browser tabs (Gradio session hashes), deleted when their last tab goes.

    A path can be owned by several tabs at once: Gradio stores a file under the hash of its content, so two tabs
    that upload the same photo (or are served the same picture) share one cached copy. Only paths under
    :attr:`roots` are ever deleted, and never one that :attr:`protected` returns (the examples).
    """

    def __init__(self, ttl_s: float = SESSION_TTL_S) -> None:
        self.ttl_s = ttl_s
        self.roots: list[Path] = [TMP_ROOT.resolve()]
        self.protected: Callable[[], set[str]] = set
        self._owners: dict[str, set[str]] = {}     # path -> tabs
        self._paths: dict[str, set[str]] = {}      # tab -> paths
        self._seen: dict[str, float] = {}          # tab -> last request (monotonic seconds)
        self._lock = threading.Lock()

    def add_root(self, root: str | Path) -> None:
        resolved = Path(root).resolve()
        if resolved not in self.roots:
            self.roots.append(resolved)

    def _deletable(self, path: Path) -> bool:
        for root in self.roots:
            try:
                rel = path.relative_to(root)
            except ValueError:
                continue
            # Gradio's cache: anything under it; the temp dir: only attnviz's own folders
            if rel.parts and (root != TMP_ROOT.resolve() or rel.parts[0].startswith(TMP_PREFIX)):
                return True
        return False

    def own(self, tab: str | None, path: str | Path) -> None:
        """``path`` (a file or a folder) belongs to ``tab`` from now on, and goes when the tab goes."""
        if not tab or not path:
            return
        key = str(Path(path).resolve())
        with self._lock:
            self._owners.setdefault(key, set()).add(tab)
            self._paths.setdefault(tab, set()).add(key)
            self._seen[tab] = time.monotonic()

    def touch(self, tab: str | None) -> None:
        if tab:
            with self._lock:
                if tab in self._paths:
                    self._seen[tab] = time.monotonic()

    def owned(self, tab: str) -> set[str]:
        with self._lock:
            return set(self._paths.get(tab, ()))

    def release(self, tab: str | None) -> list[str]:
        """The tab is gone: delete every path it held that no other tab holds. Returns the deleted paths."""
        if not tab:
            return []
        with self._lock:
            paths = self._paths.pop(tab, set())
            self._seen.pop(tab, None)
            orphans = []
            for key in paths:
                holders = self._owners.get(key, set())
                holders.discard(tab)
                if not holders:
                    self._owners.pop(key, None)
                    orphans.append(key)
        keep = self.protected()
        return [key for key in orphans if key not in keep and self._delete(Path(key))]

    def expire(self, now: float | None = None) -> list[str]:
        """Release the tabs idle for longer than ``ttl_s`` (API clients, which have no tab to close)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            idle = [tab for tab, seen in self._seen.items() if now - seen > self.ttl_s]
        return [p for tab in idle for p in self.release(tab)]

    def _delete(self, path: Path) -> bool:
        if not self._deletable(path):
            log.warning("not deleting %s: outside the temp folders", path)
            return False
        try:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists():
                path.unlink()
                parent = path.parent   # Gradio's per-content folder, now empty
                if not any(parent.iterdir()) and self._deletable(parent) and parent.resolve() not in self.roots:
                    parent.rmdir()
            else:
                return False
        except OSError:
            return False
        return True


tab_files = TabFiles()


def own(tab: str | None, path: str | Path) -> None:
    """Register a file or folder a handler made for this tab (``request.session_hash``): it goes with the tab."""
    tab_files.own(tab, path)


def release_tab_files(tab: str | None) -> list[str]:
    return tab_files.release(tab)


def file_paths(data: Any) -> Iterable[str]:
    """The paths of every Gradio file object (``{"path": ..., "meta": {"_type": "gradio.FileData"}}``) in a
    request's inputs or outputs."""
    if isinstance(data, dict):
        meta = data.get("meta")
        if isinstance(data.get("path"), str) and isinstance(meta, dict) and meta.get("_type") == "gradio.FileData":
            yield data["path"]
            return
        for value in data.values():
            yield from file_paths(value)
    elif isinstance(data, (list, tuple)):
        for value in data:
            yield from file_paths(value)


def _protected_files(blocks) -> Callable[[], set[str]]:
    def protected() -> set[str]:
        keep: set[str] = set()
        for block in list(getattr(blocks, "blocks", {}).values()):
            keep.update(str(Path(p).resolve()) for p in getattr(block, "keep_in_cache", ()) or ())
        return keep

    return protected


def attach(blocks) -> None:
    """Record, for every request of ``blocks``, the files it carries in and out as its tab's (see :class:`TabFiles`).

    It wraps this Blocks object's own ``process_api`` (the one call every event of the page and the API goes
    through); nothing global is changed.
    """
    from gradio.utils import get_upload_folder

    tab_files.add_root(get_upload_folder())
    tab_files.protected = _protected_files(blocks)
    original = blocks.process_api

    async def process_api(*args, **kwargs):
        tab = kwargs.get("session_hash") or getattr(kwargs.get("request"), "session_hash", None)
        for path in file_paths(kwargs.get("inputs")):
            tab_files.own(tab, path)
        tab_files.touch(tab)
        out = await original(*args, **kwargs)
        for path in file_paths(out.get("data") if isinstance(out, dict) else None):
            tab_files.own(tab, path)
        tab_files.expire()
        return out

    blocks.process_api = process_api
