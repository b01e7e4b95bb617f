"""The Gradio page: panels from :mod:`.widgets`, events wired to :mod:`.handlers`, and the launch.

The comparison is also the named API endpoint ``/compare`` (image in; grid, predictions table, JSON report
out), which goes through the same queue, concurrency limit and per-model locks as the page. The modules of
this package each do one job: :mod:`.choices` (what the lists offer), :mod:`.components` (safe upload widget,
errors), :mod:`.handlers` (events), :mod:`.views` (grid HTML, tables, status), :mod:`.downloads`,
:mod:`.sessions` (per-tab checkpoints), :mod:`.memory`, :mod:`.assets` (CSS and scripts). The Data set tab is
the package :mod:`.dataset` (its own widgets, handlers, views and jobs), sharing the model and method choices.
"""
from __future__ import annotations

import logging
import os
import threading

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from attnviz.app.web import handlers, widgets  # noqa: E402
from attnviz.app.web import sessions as uploads  # noqa: E402
from attnviz.app.web.assets import CSS, DARK_JS, GRID_ZOOM_JS, SHOW_RESULTS_JS  # noqa: E402
from attnviz.app.web.choices import intro_markdown, method_choices, model_choices  # noqa: E402, F401
from attnviz.app.web.components import SafeImage  # noqa: E402
from attnviz.app.web.dataset import handlers as dataset_handlers  # noqa: E402
from attnviz.app.web.dataset import tab as dataset_tab  # noqa: E402
from attnviz.app.web.dataset import widgets as dataset_widgets  # noqa: E402
from attnviz.core.methods import DEFAULT_METHODS  # noqa: E402
from attnviz.zoo.registry import default_models  # noqa: E402

CONCURRENCY = int(os.environ.get("ATTNVIZ_CONCURRENCY", "2"))
# Requests waiting beyond the CONCURRENCY running ones; one more is refused at once (HTTP 503): the page shows
# Gradio's "This application is currently busy. Please try again.", gradio_client raises QueueError
# ("Queue is full! Please try again."). benchmarks/load.py measures it.
QUEUE_SIZE = int(os.environ.get("ATTNVIZ_QUEUE_SIZE", "64"))
# Gradio refuses larger uploads before they reach us (checkpoints can be ~100 MB; images are further
# capped at images.MAX_UPLOAD_BYTES by the decoder).
DEFAULT_MAX_UPLOAD_MB = 200
# Gradio keeps every session's last outputs in memory until this many newer sessions exist; closed tabs are
# released at once (handlers.release_tab), so this only bounds API clients, which never close a tab.
SESSION_CAPACITY = int(os.environ.get("ATTNVIZ_SESSION_CAPACITY", "256"))


def _wire_inputs(ip: widgets.InputPanel, op: widgets.OptionsPanel, states: dict) -> None:
    box_outputs = [states["clicks"], states["box"], ip.box_info, ip.box_picker]
    ip.image.change(handlers.on_image_change, ip.image,
                    [ip.image, ip.image_error, states["clicks"], states["box"], ip.box_info, states["picker"],
                     ip.box_picker], api_visibility="private", show_progress="hidden")
    ip.image.clear(lambda: gr.update(value="", visible=False), None, ip.image_error, api_visibility="private",
                   show_progress="hidden")
    ip.box_picker.select(handlers.on_picker_select, [states["picker"], states["clicks"]], box_outputs,
                         api_visibility="private")
    ip.clear_box.click(handlers.on_clear_box, states["picker"], box_outputs, api_visibility="private")
    op.models.change(handlers.on_models_change, [op.models, op.layer, op.target, op.contrast, states["session"]],
                     [op.layer, op.model_limit, op.target, op.contrast], api_visibility="private",
                     show_progress="hidden")


def _wire_compare(ip: widgets.InputPanel, op: widgets.OptionsPanel, rp: widgets.ResultsPanel,
                  ap: widgets.AttentionPanel, states: dict) -> None:
    """Compare: disabled while it runs, progress beside it, the results brought into view when they arrive; a
    refusal is a line under it (handlers.refused_compare) and Compare is enabled again either way."""
    inputs = [ip.image, op.models, op.methods, op.target, op.layer, rp.opacity, rp.scale, rp.cmap, states["box"],
              states["dark"], states["session"], op.contrast, op.smoothing]
    outputs = [rp.box, rp.status, rp.ood_note, rp.grid, rp.predictions, rp.scores, rp.agreement, rp.downloads,
               states["comparison"], ap.model, ap.scope, ap.gallery, states["query"], ap.query_image,
               states["session"], op.run_message]
    busy = op.run.click(lambda: gr.update(interactive=False), None, op.run, queue=False, api_visibility="private",
                        show_progress="hidden")
    done = busy.then(handlers.on_compare, inputs, outputs, api_name="compare_page", api_visibility="private",
                     concurrency_limit=CONCURRENCY, concurrency_id="compare", time_limit=600,
                     show_progress_on=[op.run_progress])
    done.then(lambda: gr.update(interactive=True), None, op.run, queue=False, api_visibility="private",
              show_progress="hidden", js=SHOW_RESULTS_JS)
    # Gradio 6's page runs a .then() only after success; an unexpected fault must not leave Compare disabled
    done.failure(lambda: gr.update(interactive=True), None, op.run, queue=False, api_visibility="private",
                 show_progress="hidden")


def _wire_results(op: widgets.OptionsPanel, rp: widgets.ResultsPanel, ap: widgets.AttentionPanel,
                  states: dict) -> None:
    panel_inputs = [states["comparison"], ap.model, ap.scope, rp.opacity, rp.cmap, states["dark"]]
    for trigger in (ap.model.input, ap.scope.input):
        trigger(handlers.on_attention_model, panel_inputs, [states["query"], ap.query_image, ap.gallery],
                api_visibility="private")
    ap.query_image.select(handlers.on_query_click, panel_inputs, [states["query"], ap.query_image, ap.gallery],
                          api_visibility="private")
    display_inputs = [states["comparison"], rp.opacity, rp.scale, rp.cmap, states["dark"], ap.model, ap.scope,
                      states["query"], rp.downloads]
    for control in (rp.opacity, rp.scale, rp.cmap):
        control.change(handlers.on_display, display_inputs, [rp.grid, ap.gallery, rp.downloads],
                       api_visibility="private", trigger_mode="always_last", show_progress="hidden")


def _wire_checkpoints(cp: widgets.CheckpointPanel, op: widgets.OptionsPanel, states: dict):
    loaded = cp.load.click(handlers.on_load_checkpoint, [cp.file, cp.arch, cp.classes, op.models, states["session"]],
                  [op.models, cp.status, states["session"]], api_name="load_checkpoint",
                  concurrency_id="compare", concurrency_limit=CONCURRENCY)
    cp.box.expand(handlers.on_checkpoint_panel_open, None, cp.arch, api_visibility="private",
                  show_progress="hidden", queue=False)
    # a checkpoint (or class list) is the tab's from the moment it arrives, even if it is never loaded
    for upload in (cp.file, cp.classes):
        upload.upload(handlers.on_file_arrived, upload, None, api_visibility="private", show_progress="hidden",
                      queue=False)
    cp.convert.click(handlers.on_convert_checkpoint, [cp.file, cp.arch], cp.out, api_visibility="private",
                     concurrency_id="compare", concurrency_limit=CONCURRENCY)
    return loaded


def _public_api(selection: list[str], session_state: gr.State) -> None:
    """The named endpoint ``/compare``: the same pipeline, fewer knobs."""
    with gr.Row(visible=False):
        image = SafeImage(type="filepath", sources=["upload"], label="image")
        models = gr.Textbox(value=",".join(selection), label="models")
        methods = gr.Textbox(value=",".join(DEFAULT_METHODS), label="methods")
        target = gr.Textbox(value="", label="target")
        grid = gr.Image(type="numpy", format="png", label="grid")
        table = gr.Dataframe(label="predictions")
        report = gr.JSON(label="report")
        button = gr.Button("api")
    button.click(handlers.api_compare, [image, models, methods, target, session_state], [grid, table, report],
                 api_name="compare", concurrency_limit=CONCURRENCY, concurrency_id="compare", time_limit=600)


def build_app(models: list[str] | None = None) -> gr.Blocks:
    offered = model_choices()
    selection = [m for m in (models or default_models()) if m in {c[1] for c in offered}]
    with gr.Blocks(title="attnviz", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(intro_markdown(), elem_id="intro")
        if not offered:
            gr.Markdown("**No models are available.** The bundled weights are missing from `models/weights/`.")
        states = {"comparison": gr.State(None), "query": gr.State(None), "clicks": gr.State([]),
                  "box": gr.State(None), "picker": gr.State(None),
                  "session": gr.State(None, time_to_live=uploads.SESSION_TTL_S, delete_callback=uploads.release_state),
                  "dark": gr.Checkbox(False, visible=False, elem_id="dark-mode")}
        with gr.Tabs(elem_id="tabs") as tabs:
            with gr.Tab("Compare", id="compare", elem_id="tab-compare"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=300):
                        ip = widgets.input_panel()
                    with gr.Column(scale=1, min_width=300):
                        op = widgets.options_panel(offered, selection, ip.image)
                        widgets.not_downloaded_panel()
                        cp = widgets.checkpoint_panel()
                rp, ap = widgets.results_panel(GRID_ZOOM_JS)
            with gr.Tab("Data set", id="dataset", elem_id="tab-dataset"):
                dp = dataset_widgets.dataset_panel(offered, selection)
        app.load(None, None, states["dark"], js=DARK_JS)
        _wire_inputs(ip, op, states)
        _wire_compare(ip, op, rp, ap, states)
        _wire_results(op, rp, ap, states)
        loaded = _wire_checkpoints(cp, op, states)
        dataset_tab.wire(dp, tabs, ip.image, op.models, op.methods, states["session"], states["dark"])
        dataset_tab.refresh_models(loaded, dp, states["session"])
        app.unload(dataset_handlers.unloader())
        app.unload(handlers.unloader(app))
        _public_api(selection, states["session"])
        dataset_tab.public_api(states["session"])
    uploads.attach(app)   # every file a tab uploads or is served goes when the tab goes
    app.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    return app


def max_upload_bytes() -> int:
    """Per-file upload limit the server enforces (``ATTNVIZ_MAX_UPLOAD_MB``, read at launch)."""
    return int(os.environ.get("ATTNVIZ_MAX_UPLOAD_MB", str(DEFAULT_MAX_UPLOAD_MB))) * 1024 * 1024


def theme() -> gr.themes.Base:
    """System fonts only: the default theme would make browsers fetch web fonts from the internet."""
    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "SFMono-Regular", "monospace"])


def _configure_logging() -> None:
    """One line per refused request on stderr (``attnviz: WARNING request refused: ...``), unless the
    embedding program configured logging itself."""
    logger = logging.getLogger("attnviz")
    if logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("attnviz: %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def launch(host: str | None = None, port: int | None = None, models: list[str] | None = None,
           share: bool = False, prevent_thread_lock: bool = False) -> gr.Blocks:
    """Build and start the page (``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` are honoured)."""
    _configure_logging()
    app = build_app(models)
    app.launch(server_name=host or os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
               server_port=port or int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
               share=share, prevent_thread_lock=True, max_file_size=max_upload_bytes(),
               theme=theme(), css=CSS, footer_links=["api"], show_error=True, ssr_mode=False, quiet=False,
               state_session_capacity=SESSION_CAPACITY)
    app.warm_up = threading.Thread(target=_warm_up, args=(models or default_models(),), name="attnviz-warm-up",
                                   daemon=True)
    app.warm_up.start()   # serve_until_stopped joins it: exiting inside torch's import aborts the process
    if not prevent_thread_lock:
        app.block_thread()
    return app


def _warm_up(names: list[str]) -> None:
    """After the page answers: import the engine and load the selected models, so the first Compare does not wait
    for them (the page's first answer did not)."""
    try:
        from attnviz import api  # noqa: F401
        from attnviz.app.pipeline import compare  # noqa: F401
        from attnviz.zoo import registry as zoo

        for name in names:
            zoo.load(name)
    except Exception:  # noqa: BLE001 - a model that cannot load says so when it is chosen, not here
        logging.getLogger("attnviz").debug("warm-up stopped", exc_info=True)
