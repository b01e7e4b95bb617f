"""The Data set tab's events: Run (a generator that reports the background job's progress and partial tables),
Stop, the "where they disagree" rows, opening one of them on the Compare tab, and the ``/evaluate`` endpoint.

A refusal (no models, a bad archive, the server's job cap) is one line in the tab's status area and the tab is
usable again at once; the job's files stay in its own folder (:mod:`.jobs`), which goes when the tab closes.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Iterator

import gradio as gr
import numpy as np

from attnviz.app.web import choices, downloads
from attnviz.app.web import sessions as uploads
from attnviz.app.web.dataset import jobs, settings, views
from attnviz.app.web.downloads import write_png
from attnviz.core.methods import check_methods, title
from attnviz.core.specs import ModelSpec
from attnviz.errors import AttnvizError
from attnviz.evaluation.report import OUTPUT_FILES
from attnviz.zoo import registry as zoo

log = logging.getLogger("attnviz.app.web")

BENCHMARK, UPLOAD, SERVER = "benchmark scenes", "your .zip", "a server folder"
DEFAULT_METHODS = ("gradcam", "gradcam++")
POLL_S = 0.5                # how often the Run generator looks at the job
TABLE_EVERY_S = 3.0         # partial tables (a bootstrap per cell) at most this often


def sources() -> list[str]:
    return [BENCHMARK, UPLOAD] + ([SERVER] if settings.operator_folders() else [])


def _refused(message: str) -> str:
    log.warning("data-set job refused: %s", message)
    return f"<div class='av-refused'>\n\n**Not started.** {message}\n\n</div>"


def build_request(source: str, n, seed, archive, folder, models, methods, perturbation,
                  session: uploads.SessionModels | None) -> jobs.JobRequest:
    """The job the widgets describe, or an AttnvizError saying what is missing. A server folder is looked up
    by name in the operator's list; a path typed by a visitor is never used."""
    if not models:
        raise AttnvizError("Choose at least one model (the baseline as well, for paired differences).")
    if not methods:
        raise AttnvizError("Choose at least one CAM method.")
    methods = check_methods(methods)
    cap = settings.max_images()
    resolved = uploads.resolve(session, list(models))
    common = dict(models=resolved, methods=methods, perturbation=bool(perturbation))
    if source == UPLOAD:
        if not archive:
            raise AttnvizError("Upload a .zip of <class>/<image> folders first (the layout `attnviz synth export` "
                               "writes).")
        path = Path(archive)
        if path.suffix.lower() != ".zip":
            raise AttnvizError(f"{path.name}: upload a .zip archive.")
        return jobs.JobRequest(archive=path, n=cap, label=f"`{path.name}`", **common)
    if source == SERVER:
        found = settings.operator_folders().get(folder or "")
        if found is None:
            raise AttnvizError("Choose one of the server's data sets from the list.")
        return jobs.JobRequest(folder=found, n=cap, label=f"`{folder}`", **common)
    count = int(n or settings.DEFAULT_SCENES)
    if not 1 <= count <= cap:
        raise AttnvizError(f"Choose between 1 and {cap} scenes (ATTNVIZ_DATASET_MAX_IMAGES).")
    seed = settings.SCENES_SEED if seed in (None, "") else int(seed)
    return jobs.JobRequest(n=count, seed=seed, label=f"{count} benchmark scenes (seed {seed})", **common)


def _files(job: jobs.DatasetJob) -> list[str]:
    return [str(job.out / name) for name in OUTPUT_FILES if (job.out / name).is_file()]


def _final(job: jobs.DatasetJob) -> tuple:
    """(status, table, forest, findings, skipped, variant, method, files) once the job has ended."""
    if job.error is not None or job.result is None:
        message = job.error or "The job ended without a result."
        return (_refused(message),) + (gr.skip(),) * 7
    result = job.result
    picks = views.variants(result)
    cap = settings.max_images()
    notes = [f"Only the first {cap} images of the set were scored (this server's ATTNVIZ_DATASET_MAX_IMAGES)."] \
        if job.request.data is not None and len(result["ids"]) >= cap else []
    return (views.done_markdown(result, notes), views.results_table(result),
            str(job.out / "forest.png") if (job.out / "forest.png").is_file() else None,
            views.findings_markdown(result), views.skipped_markdown(result),
            gr.update(choices=picks, value=picks[0][1] if picks else None),
            gr.update(choices=[(title(m), m) for m in result["methods"]],
                      value=result["methods"][0]),
            _files(job))


def on_run(source, n, seed, archive, folder, models, methods, perturbation, session,
           request: gr.Request = None) -> Iterator[tuple]:
    """Start the tab's job and report on it until it ends: the progress line every half second, the table of
    the images finished so far every few seconds, everything at the end. Outputs: run, stop, status, table,
    forest, findings, skipped, variant, method, downloads."""
    idle = (gr.update(interactive=True), gr.update(interactive=False))
    try:
        job = jobs.start(_session(request), build_request(source, n, seed, archive, folder, models, methods,
                                                         perturbation, session))
    except AttnvizError as exc:
        yield idle + (_refused(str(exc)),) + (gr.skip(),) * 7
        return
    busy = (gr.update(interactive=False), gr.update(interactive=True))
    label, count = job.request.label, len(job.request.models)
    yield busy + (views.progress_markdown(None, count, label), "", None, "", "", gr.update(choices=[], value=None),
                  gr.update(choices=[], value=None), None)
    last_table = time.monotonic()
    while not job.done.wait(POLL_S):
        progress, table = job.progress, gr.skip()
        if progress is not None and progress.images_done and time.monotonic() - last_table > TABLE_EVERY_S:
            try:
                table = views.results_table(progress.partial())
            except (AttnvizError, KeyError, ValueError):  # the run moved on while it was assembled: next time
                table = gr.skip()
            last_table = time.monotonic()
        status = views.progress_markdown(progress, count, label)
        if job.stop_flag.is_set():
            status += " · **stopping** after this model pass …"
        yield busy + (status, table) + (gr.skip(),) * 6
    yield idle + _final(job)


def on_stop(request: gr.Request = None) -> str:
    """Ask the tab's job to stop after the model pass under way (a few seconds); what is finished is kept."""
    job = jobs.current(_session(request))
    if job is None or job.done.is_set():
        return gr.skip()
    job.stop()
    return "**Stopping** after the current model pass; the images every model finished are kept …"


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or "anonymous"


# ---- where they disagree ----------------------------------------------------------------------------------

def _loaded(job: jobs.DatasetJob, name: str):
    for item in job.request.models:
        if (item.name if isinstance(item, ModelSpec) else item) == name:
            return zoo.load(item)          # the default device, as run_eval's
    return zoo.load(name)


def on_disagree(variant: str | None, method: str | None, dark: bool = False, request: gr.Request = None):
    """The k images where ``variant``'s ``method`` map agrees least with the reference's, as grid rows
    (input, reference map, variant map, difference; on the dark page's colours when ``dark``). Outputs: gallery,
    the picks (state)."""
    from attnviz.api import explain_batch
    from attnviz.app.render.draw import DARK, LIGHT

    job = jobs.current(_session(request))
    if job is None or job.result is None or not variant or not method:
        return [], []
    result = job.result
    picks = views.disagreements(result, variant, method, settings.DISAGREE_K)
    if not picks:
        return [], []
    ref, var = _loaded(job, result["reference"]), _loaded(job, variant)
    images = job.images([ref.spec, var.spec])
    decoded = [images.load(p["index"]) for p in picks]
    maps = {}
    for loaded in (ref, var):
        labels = [images.label(p["index"], loaded.spec)[0] for p in picks]
        es = explain_batch(loaded, [d[0] for d in decoded], (method,), targets=labels, record=False,
                           class_names=loaded.spec.class_names, device=loaded.device)
        maps[loaded.spec.name] = [e.cams[method].heatmap for e in es]
    folder = job.folder / "disagree"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    gallery = []
    for k, (pick, (image, mask)) in enumerate(zip(picks, decoded)):
        row = views.disagreement_row(image, mask, maps[ref.spec.name][k], maps[var.spec.name][k],
                                     (ref.spec.display_name, var.spec.display_name), pick, DARK if dark else LIGHT)
        gallery.append((str(write_png(folder / f"row{k}.png", row)), views.disagreement_caption(pick)))
        write_png(folder / f"input{k}.png", np.ascontiguousarray(image))
        pick["input"] = str(folder / f"input{k}.png")
    return gallery, [dict(p, variant=variant, method=method, reference=result["reference"]) for p in picks]


def on_open_in_compare(evt: gr.SelectData, picks):
    """A disagreement row clicked: its image, the reference and the variant, and the method on the Compare tab."""
    if not picks or evt.index is None or evt.index >= len(picks):
        return gr.skip(), gr.skip(), gr.skip(), gr.skip()
    pick = picks[evt.index]
    return (pick["input"], [pick["reference"], pick["variant"]], [pick["method"]], gr.Tabs(selected="compare"))


def on_checkpoints_changed(session, selected):
    """The Compare tab loaded a checkpoint: it is offered here too (this tab only)."""
    offered = choices.model_choices() + (session.choices() if isinstance(session, uploads.SessionModels) else [])
    return gr.update(choices=offered, value=selected)


# ---- the API and the tab's end -------------------------------------------------------------------------------

def api_evaluate(archive, models: str = "", methods: str = "gradcam,gradcam++", n: float = 100,
                 seed: float = settings.SCENES_SEED, perturbation: bool = False, session=None,
                 request: gr.Request = None):
    """``/evaluate``: a .zip (or nothing: the benchmark scenes), models and methods in; results.json and the
    files the CLI writes out. Runs as the tab's jobs do, under the same cap; the job folder goes afterwards."""
    names = [m.strip() for m in (models or "").split(",") if m.strip()] or zoo.default_models()
    wanted = [m.strip() for m in (methods or "").split(",") if m.strip()] or list(DEFAULT_METHODS)
    key = f"api-{_session(request)}-{time.monotonic_ns()}"
    try:
        job = jobs.start(key, build_request(UPLOAD if archive else BENCHMARK, n, seed, archive, None, names,
                                            wanted, perturbation, session))
    except AttnvizError as exc:
        raise gr.Error(str(exc), print_exception=False) from None
    job.done.wait()
    try:
        if job.error is not None or job.result is None:
            raise gr.Error(job.error or "The job ended without a result.", print_exception=False)
        folder = downloads.new_download_folder("eval-")
        files = [str(shutil.copy(f, folder / Path(f).name)) for f in _files(job)]
        return job.result, files
    finally:
        jobs.release_session(key)


def unloader():
    """The tab closed: its job stops and its folder goes."""
    def on_unload(request: gr.Request):
        jobs.release_session(getattr(request, "session_hash", None))

    return on_unload
