"""The page's event handlers: widgets in, a :class:`pipeline.Request` through the one request path, views out.

Display settings re-draw the stored comparison without running a model. Uploaded checkpoints belong to the
browser session that loaded them (:mod:`attnviz.app.web.sessions`); when the tab closes, they and the tab's
stored comparison are released at once (:func:`release_tab`).
"""
from __future__ import annotations

import logging
from pathlib import Path

import gradio as gr

from attnviz.app import pipeline, render
from attnviz.app.web import choices, downloads, memory, views
from attnviz.app.web import sessions as uploads
from attnviz.app.web.components import guard, user_error
from attnviz.core.methods import DEFAULT_METHODS
from attnviz.data.images import decode_image
from attnviz.errors import AttnvizError
from attnviz.zoo.files import CHECKPOINT_SUFFIXES
from attnviz.zoo.registry import default_models

log = logging.getLogger("attnviz.app.web")

PICKER_PX = 384          # the object-box picker: tiny scenes are drawn this large
NO_BOX = "No object box (click two corners on the picture below to draw one)."


# ---- parsing the widgets ---------------------------------------------------------------------

def parse_target(target: str | None) -> str | None:
    return None if not target or target == choices.TOP1 else target


def parse_layer(layer: str | list[str] | None) -> str | list[str] | None:
    """One layer, several (fused into one map, as pytorch-grad-cam does), or each model's default."""
    chosen = [layer] if isinstance(layer, str) else list(layer or [])
    chosen = [c for c in chosen if c and c != choices.DEFAULT_LAYER]
    if not chosen:
        return None
    return chosen[0] if len(chosen) == 1 else chosen


def parse_contrast(contrast: str | None) -> str | None:
    return None if not contrast or contrast == choices.NO_CONTRAST else contrast


def _csv(text: str | None, default: tuple[str, ...] | list[str]) -> list[str]:
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    return items or list(default)


def _run(request: pipeline.Request, progress: gr.Progress | None) -> pipeline.PageResult:
    def report(i: int, n: int, name: str) -> None:
        if progress is not None:
            progress((i, n), desc=f"running {name}" if i < n else "rendering")

    return guard(pipeline.run, request, progress=report)


# ---- the input column ---------------------------------------------------------------------------

def on_image_change(image):
    """Check an upload the moment it arrives (one readable error, the box emptied) and draw the box picker."""
    if image is None:  # also right after a refused upload was emptied: keep its message on screen
        return gr.skip(), gr.skip(), [], None, NO_BOX, None, gr.update(value=None)
    try:
        decoded = decode_image(image)
    except AttnvizError as exc:
        log.warning("upload refused: %s", exc)
        return (gr.update(value=None), gr.update(value=f"**This image was not accepted:** {exc}", visible=True),
                [], None, NO_BOX, None, gr.update(value=None))
    picture, scale = render.picker_image(decoded, side=PICKER_PX)
    picker = {"base": picture, "scale": scale, "size": decoded.shape[:2]}
    return (gr.skip(), gr.update(value="", visible=False), [], None, NO_BOX, picker, picture)


def on_picker_select(evt: gr.SelectData, picker, clicks):
    """Two clicks on the box picker define an object box (in upload pixels) for localisation scores."""
    if not picker:
        return clicks, None, NO_BOX, gr.skip()
    h, w = picker["size"]
    scale = picker["scale"]
    point = [min(w - 1, max(0, int(evt.index[0] / scale))), min(h - 1, max(0, int(evt.index[1] / scale)))]
    clicks = (clicks or [])[-1:] + [point] if clicks and len(clicks) == 1 else [point]
    base = picker["base"]
    if len(clicks) == 2:
        (x0, y0), (x1, y1) = clicks
        box = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
        picture = render.mark_picker(base, scale, box=box)
        return (clicks, box, f"Object box: ({box[0]}, {box[1]}) – ({box[2]}, {box[3]}) in image pixels. "
                             "Localisation will be scored against it.", picture)
    return (clicks, None, f"First corner at ({point[0]}, {point[1]}); click the opposite corner.",
            render.mark_picker(base, scale, first=point))


def on_clear_box(picker):
    return [], None, NO_BOX, (picker["base"] if picker else None)


def _keep(value, offered: list[str], default: str) -> str:
    return value if value in offered or (value and value not in (choices.TOP1, choices.NO_CONTRAST)) else default


def on_models_change(selected, layer, target, contrast, session):
    """Offer the layers every selected model has and the selected models' classes; say so at the model limit."""
    offered = choices.layer_choices(selected or [], session)
    kept = [v for v in ([layer] if isinstance(layer, str) else (layer or [])) if v in offered]
    specs = choices.specs_for(selected or [], session)
    targets, contrasts = choices.target_choices(specs), choices.contrast_choices(specs)
    return (gr.update(choices=offered, value=kept or [choices.DEFAULT_LAYER]), choices.limit_note(selected),
            gr.update(choices=targets, value=_keep(target, targets, choices.TOP1)),
            gr.update(choices=contrasts, value=_keep(contrast, contrasts, choices.NO_CONTRAST)))


# ---- compare ------------------------------------------------------------------------------------

def _request(image, models, methods, target, layer, opacity, scale, cmap, box, session, contrast, smoothing):
    smoothing = set(smoothing or [])
    return pipeline.Request(image=image, models=uploads.resolve(session, models or []), methods=methods or [],
                            target=parse_target(target), layer=parse_layer(layer), opacity=float(opacity),
                            shared_scale=scale == "shared", cmap=cmap, box=tuple(box) if box else None,
                            source="upload", contrast=parse_contrast(contrast),
                            eigen_smooth=choices.EIGEN_SMOOTH in smoothing, aug_smooth=choices.AUG_SMOOTH in smoothing,
                            refine=choices.REFINE in smoothing, sess=choices.SESS_SCALES if choices.SESS in smoothing else 0)


COMPARE_OUTPUTS = 16   # what on_compare returns: the result views, the states, and the refusal line last


def refused_compare(message: str) -> tuple:
    """A refused comparison: one line beside Compare, everything else left as it was (the button is enabled
    again by the event chain, so the next Compare works)."""
    return (*[gr.skip()] * (COMPARE_OUTPUTS - 1),
            gr.update(value=f"**Not compared.** {message}", visible=True))


def _tab(request: gr.Request | None) -> str | None:
    return getattr(request, "session_hash", None)


def on_compare(image, models, methods, target, layer, opacity, scale, cmap, box, dark, session, contrast=None,
               smoothing=None, progress=gr.Progress(), request: gr.Request = None):
    """Run the comparison; every result view at once, the results area shown. A refusal is a line beside
    Compare, not an exception: an exception would leave Gradio's error badge on the page."""
    try:
        if image is None:
            raise user_error("Upload an image (or pick an example) first.")
        run = _request(image, models, methods, target, layer, opacity, scale, cmap, box, session, contrast,
                       smoothing)
        return _compare_views(_run(run, progress), opacity, scale, cmap, dark, session, _tab(request))
    except gr.Error as exc:
        return refused_compare(exc.message)


def _compare_views(result: pipeline.PageResult, opacity, scale, cmap, dark, session, tab: str | None) -> tuple:
    files = downloads.write_downloads(result)
    uploads.own(tab, Path(files[0]).parent)
    comparison = result.comparison
    grid = views.page_grid(comparison, float(opacity), scale == "shared", cmap, bool(dark))
    named = [(e.display_name, e.model) for e in comparison.explanations]
    first = next((e.model for e in comparison.explanations if e.attention_maps), named[0][1])
    gallery = views.attention_gallery(comparison, first, "stage summaries", float(opacity), cmap, None, bool(dark))
    scores, agreement = views.scores_html(result), views.agreement_html(result)
    ood = gr.update(visible=bool(result.warnings), value=views.folded_note(" ".join(result.warnings)))
    memory.trim()   # the comparison's temporaries are freed: hand the pages back to the system
    return (gr.update(visible=True), views.status_markdown(result), ood, grid, views.predictions_html(result),
            gr.update(value=scores, visible=bool(scores)), gr.update(value=agreement, visible=bool(agreement)),
            files, comparison, gr.update(choices=named, value=first), gr.update(value="stage summaries"), gallery,
            None, views.query_view(comparison, first, None), session, gr.update(value="", visible=False))


def api_compare(image, models: str = "", methods: str = "gradcam,gradcam++", target: str = "",
                session: uploads.SessionModels | None = None):
    """API: image in; the grid image, the predictions table and the JSON report out.

    ``models`` may name checkpoints this API session loaded through ``/load_checkpoint``.
    """
    if image is None:
        raise user_error("Send an image.")
    names = _csv(models, default_models())
    request = pipeline.Request(image=image, models=uploads.resolve(session, names),
                               methods=_csv(methods, DEFAULT_METHODS), target=target or None, source="api")
    result = _run(request, None)
    return result.grid, views.predictions_frame(result), result.report


# ---- re-drawing the stored comparison ---------------------------------------------------------

def on_query_click(evt: gr.SelectData, comparison, model, scope, opacity, cmap, dark):
    if views.explanation_of(comparison, model) is None:
        return None, None, []
    x, y = evt.index
    px = views.QUERY_VIEW_PX
    query = [min(1.0, max(0.0, x / px)), min(1.0, max(0.0, y / px))]
    return (query, views.query_view(comparison, model, query),
            views.attention_gallery(comparison, model, scope, opacity, cmap, query, bool(dark)))


def on_attention_model(comparison, model, scope, opacity, cmap, dark):
    """A new model or scope: reset the query to that model's Grad-CAM peak."""
    return (None, views.query_view(comparison, model, None),
            views.attention_gallery(comparison, model, scope, opacity, cmap, None, bool(dark)))


def on_display(comparison, opacity, scale, cmap, dark, model, scope, query, files, request: gr.Request = None):
    """Opacity, colour scale, colour map: re-draw the stored comparison (no model runs) and its grid PNG."""
    if comparison is None:
        return gr.skip(), gr.skip(), gr.skip()

    def redraw():
        shared = scale == "shared"
        grid = views.page_grid(comparison, opacity, shared, cmap, bool(dark))
        light = pipeline.render_grid(comparison, opacity=opacity, shared_scale=shared, cmap=cmap)
        new_files = downloads.replace_grid_png(files, light)
        if new_files:
            uploads.own(_tab(request), Path(new_files[0]).parent)
        gallery = views.attention_gallery(comparison, model, scope, opacity, cmap, query, bool(dark))
        return grid, gallery, new_files or gr.skip()

    return guard(redraw)


# ---- checkpoints ----------------------------------------------------------------------------------

DETAILS = " Details: "   # where a checkpoint mismatch message's key lists start (zoo.checkpoints.mismatch_message)


def refused_markdown(exc: AttnvizError | str) -> str:
    """The refusal's first sentence on screen; a key-by-key diff folded under it (one click away)."""
    lead, _, details = str(exc).partition(DETAILS)
    folded = f"\n\n<details><summary>Key details</summary>\n\n{details}\n\n</details>" if details else ""
    return f"<div class='av-refused'>\n\n**Not loaded.** {lead}{folded}\n\n</div>"


def on_load_checkpoint(file_path, arch, classes_path, selected, session=None, request: gr.Request = None):
    """Validate an uploaded checkpoint strictly and add it to *this session's* model list (nothing from the
    file is executed; other sessions never see it). A refusal stays in the checkpoint status area."""
    if not file_path:
        return gr.skip(), refused_markdown(f"Choose a checkpoint file first ({', '.join(CHECKPOINT_SUFFIXES)})."), \
            session
    if not arch:
        return gr.skip(), refused_markdown("Choose the architecture the checkpoint was trained with."), session
    session = session if isinstance(session, uploads.SessionModels) else uploads.SessionModels()
    uploads.track(getattr(request, "session_hash", None), session)
    try:
        spec = guard(session.add, file_path, arch, classes_path)
    except gr.Error as exc:
        return gr.skip(), refused_markdown(exc.message), session
    offered = choices.model_choices() + session.choices()
    chosen = list(selected or [])
    value = chosen + [spec.name] if spec.name not in chosen else chosen
    value = value[-pipeline.MAX_MODELS_PER_REQUEST:]
    message = (f"Loaded **{spec.display_name}** as `{spec.name}`: {len(spec.class_names)} classes, strict key "
               f"match with {arch}; CAM layer {spec.default_layer}. It is in your model list (this browser tab "
               "only; it is unloaded when you close the tab).")
    return gr.update(choices=offered, value=value), message, session


def on_checkpoint_panel_open():
    """The architecture list, when someone opens the checkpoint panel (listing it imports every network)."""
    return gr.update(choices=choices.architectures())


def on_file_arrived(file_path) -> None:
    """Nothing to do: the request itself records the uploaded file as this tab's (sessions.attach)."""
    return None


def on_convert_checkpoint(file_path, arch, request: gr.Request = None):
    """The uploaded checkpoint, strictly loaded into ``arch``, written back as .safetensors."""
    from attnviz.zoo.checkpoints import load_into
    from attnviz.zoo.files import checkpoint_suffix, read_checkpoint, save_safetensors

    if not file_path or not arch:
        raise user_error("Choose a checkpoint file and its architecture first.")
    model = guard(lambda: load_into(arch, read_checkpoint(file_path), allow_python=False))
    name = Path(file_path).name
    stem = name[: -len(checkpoint_suffix(name))] if checkpoint_suffix(name) else Path(name).stem
    folder = downloads.new_download_folder("ckpt-")
    uploads.own(_tab(request), folder)
    return gr.update(value=str(save_safetensors(model, folder / f"{stem}.safetensors")), visible=True)


def release_tab(blocks: gr.Blocks, session_hash: str | None) -> None:
    """The tab was closed: its checkpoints leave the model cache and the disk, every file it uploaded or was
    served is deleted (:data:`sessions.tab_files`), and Gradio's copy of the tab's state (the stored comparison,
    the pictures) goes now instead of an hour later."""
    uploads.release_session(session_hash)
    uploads.release_tab_files(session_hash)      # its uploads, pictures and downloads: their URLs answer 403
    holder = getattr(blocks, "state_holder", None)
    if holder is not None and session_hash:
        holder.delete_state(session_hash)        # runs the states' delete callbacks
        with holder.lock:
            holder.session_data.pop(session_hash, None)
            holder.time_last_used.pop(session_hash, None)
    memory.trim()


def unloader(blocks: gr.Blocks):
    def on_unload(request: gr.Request):
        release_tab(blocks, getattr(request, "session_hash", None))

    return on_unload
