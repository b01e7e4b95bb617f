"""One tab's data-set job: its own folder, a background thread running :func:`attnviz.evaluation.run.run_eval`,
a stop flag, and the latest progress. The server runs at most :func:`settings.max_jobs` jobs at once.

Everything a job writes — the unpacked archive, results.json and the other files, the images drawn for
"where they disagree" — lives in the job's folder, a fresh ``mkdtemp`` under :data:`settings.JOB_ROOT`; the
folder is removed when the tab closes (:func:`release_session`) or the tab starts another job. Jobs are found
by the tab's Gradio session hash, so one tab never reaches another's data.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from attnviz.app.web import memory
from attnviz.app.web.dataset import settings
from attnviz.core.specs import ModelSpec
from attnviz.data.archive import data_root
from attnviz.errors import AttnvizError, LimitExceededError
from attnviz.evaluation.hooks import EvalHooks, EvalProgress
from attnviz.evaluation.run import ROAD_SCENES, run_eval
from attnviz.evaluation.sources import FolderImages, SceneImages

log = logging.getLogger("attnviz.app.web")
STOP_WAIT_S = 30.0      # how long closing a tab waits for its job's current model pass before removing the folder


@dataclass
class JobRequest:
    """What to score: the models (names or this tab's checkpoint specs), maps, and one data source."""

    models: Sequence[str | ModelSpec]
    methods: Sequence[str]
    n: int | None = None                  # benchmark scenes, or at most this many images of a set
    seed: int | None = None               # benchmark data seed (None: the eval seed)
    archive: Path | None = None           # an uploaded .zip
    folder: Path | None = None            # an operator-listed folder (resolved on the server, never typed)
    perturbation: bool = False            # deletion / insertion and ROAD as well
    batch_size: int = 32
    label: str = ""                       # how the source is named on the page

    @property
    def data(self) -> Path | None:
        return self.archive or self.folder


@dataclass
class DatasetJob:
    request: JobRequest
    folder: Path = field(default_factory=lambda: _new_folder())
    stop_flag: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    progress: EvalProgress | None = None
    result: dict | None = None
    error: str | None = None
    started: float = field(default_factory=time.perf_counter)
    thread: threading.Thread | None = None

    @property
    def out(self) -> Path:
        return self.folder / "results"

    @property
    def unpacked(self) -> Path:
        return self.folder / "data"

    def run(self) -> None:
        """The job itself (in its thread): every number comes from run_eval, files into the job's folder."""
        r = self.request
        try:
            self.result = run_eval(
                models=list(r.models), n=r.n, seed=None if r.data is not None else r.seed, out=self.out,
                progress=False, methods=list(r.methods), road_scenes=ROAD_SCENES if r.perturbation else 0,
                data=r.data, batch_size=r.batch_size, faithfulness=r.perturbation,
                hooks=EvalHooks(self._on_progress, self.stop_flag.is_set), unpack_to=self.unpacked,
                command=f"Data set tab: {r.label}")
        except AttnvizError as exc:
            self.error = str(exc)
        except Exception as exc:  # the server keeps serving; the log has the traceback
            log.exception("data-set job failed")
            self.error = f"Something went wrong ({type(exc).__name__}); the server is still running."
        finally:
            self.done.set()
            _finished(self)
            memory.trim(collect=True)

    def _on_progress(self, p: EvalProgress) -> None:
        self.progress = p

    def stop(self) -> None:
        self.stop_flag.set()

    def close(self) -> None:
        """Stop, wait for the current model pass, remove the folder (idempotent)."""
        self.stop_flag.set()
        if self.thread is not None and self.thread.is_alive():
            self.thread.join(STOP_WAIT_S)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.result = self.progress = None

    def images(self, specs: Sequence[ModelSpec]):
        """The scored images again (for drawing): the benchmark scenes or the set's folder, ids as in results.json."""
        r = self.request
        if r.data is None:
            return SceneImages(self.result["n"] if not self.result.get("stopped") else
                               self.result["stopped"]["images_total"], self.result["seed"], False)
        root = data_root(self.unpacked) if r.archive is not None else r.folder
        return FolderImages(root, specs, None)


def _new_folder() -> Path:
    settings.JOB_ROOT.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="job-", dir=settings.JOB_ROOT))


# ---- the server's jobs, by tab ------------------------------------------------------------------------

_lock = threading.Lock()
_by_session: dict[str, DatasetJob] = {}
_running: set[int] = set()


def _finished(job: DatasetJob) -> None:
    with _lock:
        _running.discard(id(job))


def running() -> int:
    with _lock:
        return len(_running)


def start(session: str, request: JobRequest) -> DatasetJob:
    """Start a job for the tab ``session`` (closing its previous, finished one), or refuse in one line."""
    with _lock:
        old = _by_session.get(session)
        if old is not None and not old.done.is_set():
            raise LimitExceededError("A data-set job is already running in this tab; stop it first.")
        if len(_running) >= settings.max_jobs():
            raise LimitExceededError(f"{len(_running)} data-set job(s) are running on this server, the most it runs "
                                     "at once (ATTNVIZ_DATASET_JOBS); try again when one has finished.")
        job = DatasetJob(request)
        _running.add(id(job))
        _by_session[session] = job
    if old is not None:
        old.close()
    job.thread = threading.Thread(target=job.run, name=f"attnviz-dataset-{job.folder.name}", daemon=True)
    job.thread.start()
    return job


def current(session: str | None) -> DatasetJob | None:
    with _lock:
        return _by_session.get(session) if session else None


def release_session(session: str | None) -> None:
    """The tab closed: stop its job and remove its folder."""
    with _lock:
        job = _by_session.pop(session, None) if session else None
    if job is not None:
        job.close()
        memory.trim(collect=True)
