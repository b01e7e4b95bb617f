"""The Data set tab's events, wired to :mod:`.handlers`; :func:`wire` is all :mod:`attnviz.app.web.page` calls.

Run is a generator in its own concurrency group, so the Compare tab's queue (``concurrency_id="compare"``) is
never behind a data-set job; Stop goes around the queue so it lands within the poll interval.
"""
from __future__ import annotations

import gradio as gr

from attnviz.app.web.assets import OPEN_ON_COMPARE_JS
from attnviz.app.web.dataset import handlers, settings
from attnviz.app.web.dataset.widgets import DatasetPanel


def wire(dp: DatasetPanel, tabs: gr.Tabs, image: gr.Image, models: gr.Dropdown, methods: gr.CheckboxGroup,
         session: gr.State, dark: gr.Checkbox) -> None:
    """``image``, ``models``, ``methods``: the Compare tab's widgets a disagreement row is opened in; ``dark``: the
    page's dark-mode flag (the rows are drawn in its colours)."""
    inputs = [dp.source, dp.n, dp.seed, dp.archive, dp.folder, dp.models, dp.methods, dp.perturbation, session]
    outputs = [dp.run, dp.stop, dp.status, dp.table, dp.forest, dp.findings, dp.skipped, dp.variant, dp.method,
               dp.downloads]
    dp.run.click(handlers.on_run, inputs, outputs, api_visibility="private", concurrency_id="dataset",
                 concurrency_limit=settings.max_jobs() + 2, show_progress="hidden")
    dp.stop.click(handlers.on_stop, None, dp.status, queue=False, api_visibility="private", show_progress="hidden")
    for control in (dp.variant, dp.method):
        control.change(handlers.on_disagree, [dp.variant, dp.method, dark], [dp.gallery, dp.picks],
                       api_visibility="private", concurrency_id="compare", trigger_mode="always_last")
    opened = dp.gallery.select(handlers.on_open_in_compare, dp.picks, [image, models, methods, tabs],
                               api_visibility="private")
    opened.then(None, None, None, js=OPEN_ON_COMPARE_JS, queue=False, api_visibility="private",
                show_progress="hidden")


def refresh_models(event, dp: DatasetPanel, session: gr.State) -> None:
    """After the Compare tab loads a checkpoint (``event``), offer it in this tab's model list too."""
    event.then(handlers.on_checkpoints_changed, [session, dp.models], dp.models, api_visibility="private",
               show_progress="hidden")


def public_api(session: gr.State) -> None:
    """The named endpoint ``/evaluate`` (same job, same cap): a .zip or nothing (benchmark scenes) in,
    results.json and the files out."""
    with gr.Row(visible=False):
        archive = gr.File(label="archive", file_types=[".zip"], type="filepath")
        models = gr.Textbox(value="", label="models")
        methods = gr.Textbox(value=",".join(handlers.DEFAULT_METHODS), label="methods")
        n = gr.Number(settings.DEFAULT_SCENES, precision=0, label="n")
        seed = gr.Number(settings.SCENES_SEED, precision=0, label="seed")
        perturbation = gr.Checkbox(False, label="perturbation")
        result = gr.JSON(label="results")
        files = gr.File(file_count="multiple", label="files")
        button = gr.Button("evaluate")
    button.click(handlers.api_evaluate, [archive, models, methods, n, seed, perturbation, session], [result, files],
                 api_name="evaluate", concurrency_id="dataset", concurrency_limit=settings.max_jobs() + 2)
