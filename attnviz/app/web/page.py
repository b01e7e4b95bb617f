"""The Gradio page. Handlers only translate widgets to a :class:`pipeline.Request` and results back.

Uploads reach our own safe decoder untouched (see :class:`SafeImage`) and are checked as soon as they
arrive; every user-facing failure becomes a ``gr.Error`` with a readable message (one log line, no
traceback) and the server keeps serving. Display settings re-draw the stored comparison without running
a model. Uploaded checkpoints belong to the browser session that loaded them (:mod:`attnviz.app.web.sessions`).
The comparison is also the named API endpoint ``/compare`` (image in; grid, predictions table, JSON
report out), which goes through the same queue, concurrency limit and per-model locks as the page.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from abc import ABCMeta
from pathlib import Path
from typing import Any, Sequence

import numpy as np

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402

from attnviz.app import pipeline, render
from attnviz.app.report import dead_gate, maps_npz_bytes  # noqa: E402
from attnviz.app.web import sessions as uploads
from attnviz.core import methods as catalogue  # noqa: E402
from attnviz.core.methods import DEFAULT_METHODS  # noqa: E402
from attnviz.core.specs import ModelSpec  # noqa: E402
from attnviz.data.examples import EXAMPLES_DIR
from attnviz.data.images import decode_image  # noqa: E402
from attnviz.errors import AttnvizError  # noqa: E402
from attnviz.results import Comparison  # noqa: E402
from attnviz.zoo import registry as zoo  # noqa: E402
from attnviz.zoo.files import CHECKPOINT_SUFFIXES  # noqa: E402
from attnviz.zoo.registry import default_models  # noqa: E402

log = logging.getLogger("attnviz.app.web.page")

EIGEN_SMOOTH = "eigen smooth"
AUG_SMOOTH = "augmentation smooth"
TOP1 = "top-1 (each model)"
DEFAULT_LAYER = "each model's default"
DOWNLOAD_ROOT = Path(os.environ.get("ATTNVIZ_TMP", tempfile.gettempdir())) / "attnviz-downloads"
DOWNLOAD_TTL_S = 3600
CONCURRENCY = int(os.environ.get("ATTNVIZ_CONCURRENCY", "2"))
PHOTO_EXAMPLES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
QUERY_VIEW_PX = 256
PICKER_PX = 384          # the object-box picker: tiny scenes are drawn this large
PREDICTION_COLUMNS = ["model", "rank", "class", "probability", "target"]
SCORE_COLUMNS = ["model", "map", "pointing game", "energy on object", "IoU"]
AGREEMENT_COLUMNS = ["model", "map", "Spearman", "top-20 % IoU", "peak distance", "same target"]
NO_CONTRAST = "nothing (the target's own score)"
# Gradio refuses larger uploads before they reach us (checkpoints can be ~100 MB; images are further
# capped at images.MAX_UPLOAD_BYTES by the decoder).
DEFAULT_MAX_UPLOAD_MB = 200
NO_BOX = "No object box (click two corners on the picture below to draw one)."


def _safe_image_preprocess(self, payload: Any) -> str | bytes | None:
    """Hand the uploaded file's path (or a pasted image's bytes) to attnviz's decoder, unopened."""
    if payload is None:
        return None
    url = getattr(payload, "url", None) or ""
    if url.startswith("data:"):
        import base64

        return base64.b64decode(url.split(",", 1)[1])
    if getattr(payload, "path", None) is None:
        raise gr.Error("The upload did not arrive; please try again.", print_exception=False)
    return str(payload.path)


# ``gr.Image`` whose preprocessing does not open the upload with PIL: Gradio's own would decode it (or fail
# with a generic error) before our size, bomb and format checks run. ``is_template`` makes the browser use
# the normal image widget. The class is made with ABCMeta directly because Gradio's ComponentMeta would
# write a .pyi stub next to this file at import time (a read-only install could not even import it).
SafeImage = ABCMeta.__new__(type(gr.Image), "SafeImage", (gr.Image,), {
    "__module__": __name__, "__doc__": "gr.Image that leaves decoding to attnviz.data.images.decode_image.",
    "is_template": True, "preprocess": _safe_image_preprocess})


# ---- errors --------------------------------------------------------------------------------

def user_error(exc: AttnvizError | str) -> gr.Error:
    """A refused request: one log line for the operator, the message for the user, no traceback."""
    log.warning("request refused: %s", exc)
    return gr.Error(str(exc), print_exception=False)


def _guard(fn, *args, **kwargs):
    """Run ``fn``; user errors become :func:`user_error`, real faults are logged with their traceback."""
    try:
        return fn(*args, **kwargs)
    except gr.Error:
        raise
    except AttnvizError as exc:
        raise user_error(exc) from None
    except Exception as exc:  # keep serving; the log has the traceback
        log.exception("request failed")
        raise gr.Error(f"Something went wrong ({type(exc).__name__}). The server is still running; try another "
                       "image or fewer models.", print_exception=False) from None


# ---- model lists ---------------------------------------------------------------------------

def _selectable(spec: ModelSpec) -> bool:
    return spec.source not in ("random", "replicate")  # replicates are for `attnviz eval`, not the page


def _model_choices() -> list[tuple[str, str]]:
    """Models that can run now: the bundled zoo and ImageNet models whose weights are on disk."""
    return [(f"{s.display_name} ({s.name})", s.name) for s in zoo.all_specs()
            if _selectable(s) and s.weights.available()]


def _not_downloaded() -> list[ModelSpec]:
    return [s for s in zoo.all_specs() if _selectable(s) and not s.weights.available()]


def not_downloaded_markdown() -> str:
    """The models that cannot run yet, apart from the list, each with the command that fetches it."""
    missing = _not_downloaded()
    if not missing:
        return ""
    rows = "\n".join(f"| {s.display_name} | `{s.weights.download_hint.removeprefix('run ').strip('`') or s.name}` |"
                     for s in missing)
    return (f"**{len(missing)} ImageNet models are not downloaded** and cannot be selected. Fetch them all with "
            "`attnviz weights download --set imagenet` (or one at a time below), then restart the page.\n\n"
            f"| model | command |\n|---|---|\n{rows}")


def _architectures() -> list[str]:
    import models

    return models.available()




def method_choices() -> list[tuple[str, str]]:
    """(title, name) of every catalogue method, in catalogue order: the page's CAM-method checkboxes."""
    return [(catalogue.title(m), m) for m in catalogue.names()]


def _class_choices() -> list[str]:
    names: list[str] = []
    for spec in zoo.all_specs():
        if spec.source == "bundled zoo":
            names.extend(n for n in spec.class_names if n not in names)
    return [TOP1] + names


def _specs_for(names: Sequence[str], session: uploads.SessionModels | None) -> list[ModelSpec]:
    out = []
    for item in uploads.resolve(session, names):
        try:
            out.append(item if isinstance(item, ModelSpec) else zoo.get_spec(item))
        except AttnvizError:
            continue
    return out


def layer_choices(names: Sequence[str], session: uploads.SessionModels | None = None) -> list[str]:
    """"each model's default" plus the CAM layers every selected model offers."""
    return [DEFAULT_LAYER] + pipeline.shared_layers(_specs_for(names, session))


def limit_note(names: Sequence[str] | None) -> dict:
    """Visible when the model list is full: the dropdown then silently refuses more."""
    full = len(names or []) >= pipeline.MAX_MODELS_PER_REQUEST
    return gr.update(visible=full, value=(f"**{pipeline.MAX_MODELS_PER_REQUEST} models is the limit per request** "
                                          "(`ATTNVIZ_MAX_MODELS`); remove one to add another." if full else ""))


def intro_markdown() -> str:
    """The page's first lines; the attention types are named from the bundled model cards."""
    kinds = [zoo.get_spec(n).display_name for n in zoo.bundled() if zoo.get_spec(n).attention != "none"]
    listed = ", ".join(f"**{k}**" for k in kinds[:-1]) + (f" and **{kinds[-1]}**" if len(kinds) > 1 else
                                                          (f"**{kinds[0]}**" if kinds else ""))
    return ("# attnviz — what does attention change?\n"
            f"Compare a baseline CNN with the same network plus {listed or 'attention modules'}: predictions, "
            "Grad-CAM-family heatmaps, and the maps each attention module computes. The bundled models were "
            "trained by attnviz with one recipe on a procedural benchmark of 11 shapes with known object masks, "
            "so heatmaps on the example scenes can be *scored*; on photos they can only say which shape a photo "
            "resembles.")


# ---- examples and downloads ----------------------------------------------------------------

def _skimage_data_dir() -> Path | None:
    """scikit-image's bundled photos, found without importing scikit-image (it costs memory)."""
    found = importlib.util.find_spec("skimage")
    if found is None or not found.submodule_search_locations:
        return None
    return Path(list(found.submodule_search_locations)[0]) / "data"


def example_inputs() -> tuple[list[list[str]], list[str]]:
    """Bundled benchmark scenes (with masks) and a few photographs that ship with scikit-image."""
    paths, labels = [], []
    if EXAMPLES_DIR.is_dir():
        for p in sorted(EXAMPLES_DIR.glob("*.png")):
            if not p.name.endswith("_mask.png"):
                paths.append([str(p)])
                labels.append(f"scene: {p.stem.split('_', 1)[-1].replace('_', ' ')}")
    folder = _skimage_data_dir()
    if folder is not None:
        for name in PHOTO_EXAMPLES:
            if (folder / name).is_file():
                paths.append([str(folder / name)])
                labels.append(f"photo: {Path(name).stem}")
    return paths, labels


def _cleanup_downloads() -> None:
    if not DOWNLOAD_ROOT.is_dir():
        return
    cutoff = time.time() - DOWNLOAD_TTL_S
    for d in DOWNLOAD_ROOT.iterdir():
        try:
            if d.is_dir() and d.stat().st_mtime < cutoff:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            continue


def _new_download_folder(prefix: str) -> Path:
    _cleanup_downloads()
    DOWNLOAD_ROOT.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=DOWNLOAD_ROOT))


def _write_png(path: Path, rgb: np.ndarray) -> Path:
    import cv2

    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def write_downloads(result: pipeline.PageResult) -> list[str]:
    """grid.png, maps.npz and report.json in a fresh folder under the writable temp dir."""
    folder = _new_download_folder("cmp-")
    grid_path = _write_png(folder / "attnviz-grid.png", result.grid)
    npz_path = folder / "attnviz-maps.npz"
    npz_path.write_bytes(maps_npz_bytes(result.comparison))
    report_path = folder / "attnviz-report.json"
    report_path.write_text(json.dumps(result.report, indent=2))
    return [str(grid_path), str(npz_path), str(report_path)]


def predictions_frame(result: pipeline.PageResult) -> pd.DataFrame:
    rows = [{"model": r["model"], "rank": r["rank"], "class": r["label"],
             "probability": f"{r['probability']:.1%}", "target": r["target"]} for r in result.predictions]
    return pd.DataFrame(rows, columns=PREDICTION_COLUMNS)


def scores_frame(result: pipeline.PageResult) -> pd.DataFrame:
    rows = []
    for model, per_map in result.scores.items():
        for name, s in per_map.items():
            rows.append({"model": model, "map": catalogue.title(name),
                         "pointing game": "hit" if s["pointing_game"] else "miss",
                         "energy on object": f"{s['energy_pointing_game']:.1%}", "IoU": f"{s['iou']:.2f}"})
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


def agreement_frame(result: pipeline.PageResult) -> pd.DataFrame:
    """What attention changed: each variant's map against the baseline row's (same method, target and layer)."""
    names = {e.model: e.display_name for e in result.comparison.explanations}
    rows = [{"model": names.get(model, model), "map": catalogue.title(method),
             "Spearman": f"{a['spearman']:.2f}", "top-20 % IoU": f"{a['top20_iou']:.2f}",
             "peak distance": f"{a['peak_distance']:.0f} px ({a['peak_distance_pct']:.0f} % of the side)",
             "same target": "yes" if a["same_target"] else "no (each model's top-1 differs)"}
            for (model, method), a in result.comparison.agreement.items()]
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)


# ---- the attention panel -------------------------------------------------------------------

def _explanation(comparison: Comparison | None, model: str | None):
    if comparison is None or not model:
        return None
    return next((e for e in comparison.explanations if e.model == model), None)


def gallery_caption(amap) -> str:
    """Block and map, the dead-gate label when the gate is constant, then how the map was derived."""
    dead = dead_gate(amap)
    return f"{amap.label}{' — ' + dead.upper() if dead else ''} — {amap.note}"


def attention_gallery(comparison: Comparison | None, model: str | None, scope: str, opacity: float = 0.5,
                      cmap: str = "jet", query: list[float] | None = None,
                      dark: bool = False) -> list[tuple[np.ndarray, str]]:
    """Rendered attention maps of one model: stage summaries, or every block's maps.

    Query-based maps (Non-local, criss-cross, DANet, self-attention) are drawn for ``query`` (x, y
    fractions of the image; default: the Grad-CAM peak). Nothing is re-run: the maps are in the state.
    """
    expl = _explanation(comparison, model)
    if expl is None:
        return []
    q = tuple(query) if query else render.cam_peak(expl)
    maps = list(expl.stage_summaries) if scope == "stage summaries" else list(expl.attention_maps)
    if scope == "stage summaries":  # query maps, transforms and dead gates have no stage mean; show them anyway
        maps += [m for m in expl.attention_maps if m.layout in ("affinity", "affine") and
                 m.name in ("mean of heads", "2-step reach", "affinity", "position attention", "sampled region")]
        maps += [m for m in expl.attention_maps if dead_gate(m)]
    palette = render.DARK if dark else render.LIGHT
    return [(render.attention_map_image(m, expl.image, 200, opacity, cmap, query=q, palette=palette),
             gallery_caption(m)) for m in maps]


def query_view(comparison: Comparison | None, model: str | None, query: list[float] | None):
    """The model's view with the current query point marked (click it to move the query)."""
    expl = _explanation(comparison, model)
    if expl is None or expl.image is None:
        return None
    q = tuple(query) if query else render.cam_peak(expl)
    return render.query_marker_image(expl.image, q, QUERY_VIEW_PX)


def on_query_click(evt: gr.SelectData, comparison, model, scope, opacity, cmap, dark):
    expl = _explanation(comparison, model)
    if expl is None:
        return None, None, []
    x, y = evt.index
    query = [min(1.0, max(0.0, x / QUERY_VIEW_PX)), min(1.0, max(0.0, y / QUERY_VIEW_PX))]
    return (query, query_view(comparison, model, query),
            attention_gallery(comparison, model, scope, opacity, cmap, query, bool(dark)))


def on_attention_model(comparison, model, scope, opacity, cmap, dark):
    """A new model or scope: reset the query to that model's Grad-CAM peak."""
    return (None, query_view(comparison, model, None),
            attention_gallery(comparison, model, scope, opacity, cmap, None, bool(dark)))


def on_display(comparison, opacity, scale, cmap, dark, model, scope, query, files):
    """Opacity, colour scale, colour map: re-draw the stored comparison (no model runs) and its grid PNG."""
    if comparison is None:
        return gr.skip(), gr.skip(), gr.skip()

    def redraw():
        shared = scale == "shared"
        grid = pipeline.render_grid(comparison, opacity=opacity, shared_scale=shared, cmap=cmap, dark=bool(dark))
        light = grid if not dark else pipeline.render_grid(comparison, opacity=opacity, shared_scale=shared,
                                                           cmap=cmap)
        new_files = list(files or [])
        if new_files:  # the downloadable grid follows the view (always on a light background)
            new_files[0] = str(_write_png(_new_download_folder("grid-") / "attnviz-grid.png", light))
        gallery = attention_gallery(comparison, model, scope, opacity, cmap, query, bool(dark))
        return grid, gallery, new_files or gr.skip()

    return _guard(redraw)


# ---- status --------------------------------------------------------------------------------

def _status(result: pipeline.PageResult) -> str:
    c = result.comparison
    times = ", ".join(f"{e.display_name} {e.timings.get('total', 0):.0f} ms" for e in c.explanations)
    lines = [f"**{len(c.explanations)} models** in {c.timings.get('total', 0) / 1000:.1f} s ({times})."]
    if result.mask_source:
        lines.append(f"Localisation scored against the **{result.mask_source}** (green contour in the input column).")
    lines.extend(f"Note: {n}" for n in result.notes)
    dead = [f"{e.display_name} {d['block']}" for e in c.explanations for d in result_dead_gates(result, e.model)]
    if dead:
        lines.append(f"Dead gates (one constant weight on this image, no attention): {', '.join(dead)}.")
    return "\n\n".join(lines)


def result_dead_gates(result: pipeline.PageResult, model: str) -> list[dict]:
    return next((m["dead_gates"] for m in result.report["models"] if m["model"] == model), [])


def _parse_target(target: str | None) -> str | None:
    return None if not target or target == TOP1 else target


def _parse_layer(layer: str | list[str] | None) -> str | list[str] | None:
    """One layer, several (fused into one map, as pytorch-grad-cam does), or each model's default."""
    chosen = [layer] if isinstance(layer, str) else list(layer or [])
    chosen = [c for c in chosen if c and c != DEFAULT_LAYER]
    if not chosen:
        return None
    return chosen[0] if len(chosen) == 1 else chosen


def _parse_contrast(contrast: str | None) -> str | None:
    return None if not contrast or contrast == NO_CONTRAST else contrast


def _csv(text: str | None, default: tuple[str, ...] | list[str]) -> list[str]:
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    return items or list(default)


def _run(request: pipeline.Request, progress: gr.Progress | None) -> pipeline.PageResult:
    def report(i: int, n: int, name: str) -> None:
        if progress is not None:
            progress((i, n), desc=f"running {name}" if i < n else "rendering")

    return _guard(pipeline.run, request, progress=report)


# ---- handlers -------------------------------------------------------------------------------

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


def on_models_change(selected, layer, session):
    """Offer the layers every selected model has; say so when the model limit is reached."""
    choices = layer_choices(selected or [], session)
    kept = [v for v in ([layer] if isinstance(layer, str) else (layer or [])) if v in choices]
    return gr.update(choices=choices, value=kept or [DEFAULT_LAYER]), limit_note(selected)


def on_compare(image, models, methods, target, layer, opacity, scale, cmap, box, dark, session, contrast=None,
               smoothing=None, progress=gr.Progress()):
    if image is None:
        raise user_error("Upload an image (or pick an example) first.")
    smoothing = set(smoothing or [])
    request = pipeline.Request(image=image, models=uploads.resolve(session, models or []), methods=methods or [],
                               target=_parse_target(target), layer=_parse_layer(layer), opacity=float(opacity),
                               shared_scale=scale == "shared", cmap=cmap, box=tuple(box) if box else None,
                               source="upload", contrast=_parse_contrast(contrast),
                               eigen_smooth=EIGEN_SMOOTH in smoothing, aug_smooth=AUG_SMOOTH in smoothing)
    result = _run(request, progress)
    files = write_downloads(result)
    grid = result.grid if not dark else pipeline.render_grid(result.comparison, opacity=float(opacity),
                                                             shared_scale=scale == "shared", cmap=cmap, dark=True)
    choices = [(e.display_name, e.model) for e in result.comparison.explanations]
    first = next((e.model for e in result.comparison.explanations if e.attention_maps), choices[0][1])
    gallery = attention_gallery(result.comparison, first, "stage summaries", float(opacity), cmap, None, bool(dark))
    scores = scores_frame(result)
    ood = gr.update(visible=bool(result.warnings), value=" ".join(result.warnings) or pipeline.OOD_NOTE)
    agreement = agreement_frame(result)
    return (grid, ood, predictions_frame(result), gr.update(value=scores, visible=not scores.empty),
            gr.update(value=agreement, visible=not agreement.empty),
            _status(result), files, result.comparison,
            gr.update(choices=choices, value=first), gr.update(value="stage summaries"), gallery,
            None, query_view(result.comparison, first, None), session)


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
    return result.grid, predictions_frame(result), result.report


def on_load_checkpoint(file_path, arch, classes_path, selected, session=None, request: gr.Request = None):
    """Validate an uploaded checkpoint strictly and add it to *this session's* model list (nothing from the
    file is executed; other sessions never see it)."""
    if not file_path:
        raise user_error(f"Choose a checkpoint file first ({', '.join(CHECKPOINT_SUFFIXES)}).")
    if not arch:
        raise user_error("Choose the architecture the checkpoint was trained with.")
    session = session if isinstance(session, uploads.SessionModels) else uploads.SessionModels()
    spec = _guard(session.add, file_path, arch, classes_path)
    uploads.track(getattr(request, "session_hash", None), session)
    choices = _model_choices() + session.choices()
    chosen = list(selected or [])
    value = chosen + [spec.name] if spec.name not in chosen else chosen
    value = value[-pipeline.MAX_MODELS_PER_REQUEST:]
    message = (f"Loaded **{spec.display_name}** as `{spec.name}`: {len(spec.class_names)} classes, strict key "
               f"match with {arch}; CAM layer {spec.default_layer}. It is in your model list (this browser tab "
               "only; it is unloaded when you close the tab).")
    return gr.update(choices=choices, value=value), message, session


def on_unload(request: gr.Request):
    """The tab was closed: its uploaded checkpoints leave the model cache and the disk now."""
    uploads.release_session(getattr(request, "session_hash", None))


def on_convert_checkpoint(file_path, arch):
    """The uploaded checkpoint, strictly loaded into ``arch``, written back as .safetensors."""
    from attnviz.zoo.checkpoints import load_into
    from attnviz.zoo.files import checkpoint_suffix, read_checkpoint, save_safetensors

    if not file_path or not arch:
        raise user_error("Choose a checkpoint file and its architecture first.")
    model = _guard(lambda: load_into(arch, read_checkpoint(file_path), allow_python=False))
    name = Path(file_path).name
    stem = name[: -len(checkpoint_suffix(name))] if checkpoint_suffix(name) else Path(name).stem
    return str(save_safetensors(model, _new_download_folder("ckpt-") / f"{stem}.safetensors"))


# ---- page -----------------------------------------------------------------------------------

CSS = """
/* tiny benchmark scenes fill the upload box instead of sitting at 128 px */
#input-image img { width: 100%; height: 100%; object-fit: contain; }
/* clickable pictures are never drawn larger than they are: Gradio maps clicks as if they were not */
#box-picker img, #query-image img { width: auto !important; height: auto !important; max-width: 100%;
  max-height: 100%; object-fit: contain; }
/* the grid keeps its drawn size: on a narrow screen it scrolls sideways instead of shrinking to mush */
#grid .image-container, #grid .image-frame, #grid button { overflow-x: auto; justify-content: flex-start; }
#grid img { max-width: none !important; width: auto !important; height: auto !important; object-fit: none; }
/* a visible focus ring on every checkbox and radio (Gradio's default draws none on some) */
#cam-methods input:focus-visible, #colour-scale input:focus-visible, input[type=checkbox]:focus-visible {
  outline: 3px solid var(--color-accent, #f97316) !important; outline-offset: 2px; }
/* gallery captions sit under their picture and wrap, instead of being cut or covering the map */
#attention-gallery .thumbnail-item { aspect-ratio: auto !important; height: auto !important;
  display: flex; flex-direction: column; }
#attention-gallery .thumbnail-lg > img { height: auto !important; aspect-ratio: 200 / 218; }
#attention-gallery .caption-label { position: static !important; white-space: normal !important;
  overflow: visible !important; text-overflow: clip !important; max-width: 100% !important; opacity: 1 !important;
  border: none !important; border-top: 1px solid var(--border-color-primary) !important; border-radius: 0 !important; }
#attention-gallery .grid-wrap.fixed-height { max-height: none !important; min-height: 0 !important; }
@media (max-width: 640px) {
  #attention-gallery .grid-container { grid-template-columns: repeat(2, minmax(0, 1fr)) !important; }
}
/* the grid's corner buttons sit above the picture, not over its column titles */
#grid .image-container { padding-top: 34px; }
#ood-note { border-left: 4px solid var(--color-accent, #f97316); padding-left: 10px; }
#image-error { color: var(--error-text-color, #b91c1c); }
"""

DARK_JS = "() => document.body.classList.contains('dark') || document.documentElement.classList.contains('dark')"


def build_app(models: list[str] | None = None) -> gr.Blocks:
    choices = _model_choices()
    selection = [m for m in (models or default_models()) if m in {c[1] for c in choices}]
    examples, example_labels = example_inputs()
    limit = pipeline.MAX_MODELS_PER_REQUEST
    with gr.Blocks(title="attnviz", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(intro_markdown(), elem_id="intro")
        if not choices:
            gr.Markdown("**No models are available.** The bundled weights are missing from `models/weights/`.")
        comparison_state = gr.State(None)
        session_state = gr.State(None, time_to_live=uploads.SESSION_TTL_S, delete_callback=uploads.release_state)
        query_state = gr.State(None)
        clicks_state = gr.State([])
        box_state = gr.State(None)
        picker_state = gr.State(None)
        dark_in = gr.Checkbox(False, visible=False, elem_id="dark-mode")
        # DOM order is tab order: image, box, models, Compare come first; settings, examples, checkpoints after.
        with gr.Row():
            with gr.Column(scale=1, min_width=300):
                image_in = SafeImage(label="Image (drag & drop, paste or webcam)", type="filepath",
                                     sources=["upload", "clipboard", "webcam"], height=300, elem_id="input-image")
                image_error = gr.Markdown(visible=False, elem_id="image-error")
                with gr.Accordion("Object box (optional): click two corners to score localisation",
                                  open=False, elem_id="box-accordion"):
                    box_info = gr.Markdown(NO_BOX, elem_id="box-info")
                    box_picker = gr.Image(type="numpy", interactive=False, show_label=False, elem_id="box-picker",
                                          height=PICKER_PX + 16, buttons=[])
                    clear_box = gr.Button("Clear box", size="sm")
            with gr.Column(scale=1, min_width=300):
                models_in = gr.Dropdown(choices, value=selection, multiselect=True, label="Models",
                                        info=f"Up to {limit} per request.", max_choices=limit, elem_id="models")
                model_limit = gr.Markdown(visible=len(selection) >= limit, elem_id="model-limit")
                run = gr.Button("Compare", variant="primary", elem_id="compare-button")
                methods_in = gr.CheckboxGroup(method_choices(),
                                              value=list(DEFAULT_METHODS), label="CAM methods", elem_id="cam-methods",
                                              info="Score- and Ablation-CAM are slow (many forward passes); rollout "
                                                   "and grad-rollout need a ViT/DeiT-style transformer.")
                smoothing_in = gr.CheckboxGroup([EIGEN_SMOOTH, AUG_SMOOTH], value=[], label="Smoothing",
                                                elem_id="smoothing",
                                                info="pytorch-grad-cam's eigen_smooth (first principal component) "
                                                     "and aug_smooth (mean over 6 flipped / brightness-scaled "
                                                     "copies, run as one batch).")
                with gr.Row():
                    target_in = gr.Dropdown(_class_choices(), value=TOP1, label="Target class",
                                            allow_custom_value=True, elem_id="target")
                    contrast_in = gr.Dropdown([NO_CONTRAST] + _class_choices()[1:], value=NO_CONTRAST,
                                              label="compared with", allow_custom_value=True, elem_id="contrast",
                                              info="Target versus this class: the maps explain logit target - "
                                                   "logit this class (Finer-CAM uses it as its comparison).")
                layer_in = gr.Dropdown(layer_choices(selection), value=[DEFAULT_LAYER], multiselect=True,
                                       label="Target layer / stage", elem_id="layer",
                                       info="Layers every selected model has; the attention column follows. "
                                            "Several layers are fused into one map (pytorch-grad-cam's mean).")
                with gr.Row():
                    opacity_in = gr.Slider(0, 1, value=0.5, step=0.05, label="Overlay opacity", elem_id="opacity")
                    scale_in = gr.Radio(["per model", "shared"], value="per model", label="Colour scale",
                                        elem_id="colour-scale")
                    cmap_in = gr.Dropdown(list(render.COLORMAPS), value="jet", label="Colour map", elem_id="cmap")
        if examples:
            gr.Examples(examples, inputs=[image_in], example_labels=example_labels, examples_per_page=16,
                        label="Examples: benchmark scenes (with masks) and photographs")
        missing = not_downloaded_markdown()
        if missing:
            with gr.Accordion("ImageNet models (not downloaded)", open=False, elem_id="not-downloaded-box"):
                gr.Markdown(missing, elem_id="not-downloaded")
        with gr.Accordion("Your own checkpoint", open=False, elem_id="checkpoint-box"):
            ckpt_file = gr.File(label=f"Checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}; pickles are read with "
                                      "weights_only=True)",
                                file_types=list(CHECKPOINT_SUFFIXES), type="filepath", elem_id="checkpoint-file")
            ckpt_arch = gr.Dropdown(_architectures(), value="resnet50", label="Architecture",
                                    info="Official layouts: triplet_resnet50, cbam_resnet50, se_resnet50, "
                                         "eca_resnet50, ca_mobilenet_v2, triplet_mobilenet_v2, ...; or type "
                                         "any timm model as timm:<name>, e.g. timm:vit_small_patch16_224",
                                    allow_custom_value=True, elem_id="checkpoint-arch")
            ckpt_classes = gr.File(label="Class names (optional: .txt one per line, or .json)",
                                   file_types=[".txt", ".json"], type="filepath")
            with gr.Row():
                ckpt_load = gr.Button("Load checkpoint", elem_id="checkpoint-load")
                ckpt_convert = gr.Button("Convert to .safetensors")
            ckpt_status = gr.Markdown(elem_id="checkpoint-status")
            ckpt_out = gr.File(label="Converted checkpoint", interactive=False)
        status = gr.Markdown(elem_id="status")
        ood_note = gr.Markdown(pipeline.OOD_NOTE, visible=False, elem_id="ood-note")
        # no floating label: it would cover the grid's column titles on a narrow screen
        grid_out = gr.Image(show_label=False, type="numpy", format="png", interactive=False, elem_id="grid",
                            buttons=["fullscreen", "download"])
        with gr.Row():
            predictions_out = gr.Dataframe(pd.DataFrame(columns=PREDICTION_COLUMNS), headers=PREDICTION_COLUMNS,
                                           label="Top-5 predictions", interactive=False, elem_id="predictions")
            scores_out = gr.Dataframe(pd.DataFrame(columns=SCORE_COLUMNS), headers=SCORE_COLUMNS,
                                      label="Localisation scores (pointing game, energy on object, IoU)",
                                      interactive=False, visible=False, elem_id="scores")
        agreement_out = gr.Dataframe(pd.DataFrame(columns=AGREEMENT_COLUMNS), headers=AGREEMENT_COLUMNS,
                                     label="What attention changed: each variant's map vs the baseline's (same "
                                           "method, target and layer; the grid's last column shows the difference)",
                                     interactive=False, visible=False, elem_id="agreement")
        with gr.Accordion("Attention panel: every block's maps", open=True):
            with gr.Row():
                with gr.Column(scale=1, min_width=260):
                    attn_model = gr.Dropdown([], label="Model", interactive=True, elem_id="attention-model")
                    attn_scope = gr.Radio(["stage summaries", "every block"], value="stage summaries", label="Show")
                    gr.Markdown("**Query point** for Non-local / criss-cross / DANet / self-attention maps: click "
                                "the picture to move it (default: the Grad-CAM peak).")
                    query_img = gr.Image(type="numpy", interactive=False, height=QUERY_VIEW_PX + 8, show_label=False,
                                         elem_id="query-image", buttons=[])
                with gr.Column(scale=3):
                    attn_gallery = gr.Gallery(show_label=False, columns=4, height="auto", object_fit="contain",
                                              elem_id="attention-gallery")
        downloads = gr.File(label="Downloads: grid PNG, raw maps (.npz), JSON report", file_count="multiple",
                            interactive=False, elem_id="downloads")

        app.load(None, None, dark_in, js=DARK_JS)
        inputs = [image_in, models_in, methods_in, target_in, layer_in, opacity_in, scale_in, cmap_in, box_state,
                  dark_in, session_state, contrast_in, smoothing_in]
        outputs = [grid_out, ood_note, predictions_out, scores_out, agreement_out, status, downloads,
                   comparison_state, attn_model, attn_scope, attn_gallery, query_state, query_img, session_state]
        run.click(on_compare, inputs, outputs, api_name="compare_page", api_visibility="private",
                  concurrency_limit=CONCURRENCY, concurrency_id="compare", time_limit=600,
                  show_progress_on=[grid_out])
        box_outputs = [clicks_state, box_state, box_info, box_picker]
        image_in.change(on_image_change, image_in,
                        [image_in, image_error, clicks_state, box_state, box_info, picker_state, box_picker],
                        api_visibility="private", show_progress="hidden")
        image_in.clear(lambda: gr.update(value="", visible=False), None, image_error, api_visibility="private",
                       show_progress="hidden")
        box_picker.select(on_picker_select, [picker_state, clicks_state], box_outputs, api_visibility="private")
        clear_box.click(on_clear_box, picker_state, box_outputs, api_visibility="private")
        models_in.change(on_models_change, [models_in, layer_in, session_state], [layer_in, model_limit],
                         api_visibility="private", show_progress="hidden")
        ckpt_load.click(on_load_checkpoint, [ckpt_file, ckpt_arch, ckpt_classes, models_in, session_state],
                        [models_in, ckpt_status, session_state], api_name="load_checkpoint",
                        concurrency_id="compare", concurrency_limit=CONCURRENCY)
        ckpt_convert.click(on_convert_checkpoint, [ckpt_file, ckpt_arch], ckpt_out, api_visibility="private",
                           concurrency_id="compare", concurrency_limit=CONCURRENCY)
        app.unload(on_unload)
        panel_inputs = [comparison_state, attn_model, attn_scope, opacity_in, cmap_in, dark_in]
        for trigger in (attn_model.input, attn_scope.input):
            trigger(on_attention_model, panel_inputs, [query_state, query_img, attn_gallery], api_visibility="private")
        query_img.select(on_query_click, panel_inputs, [query_state, query_img, attn_gallery],
                         api_visibility="private")
        display_inputs = [comparison_state, opacity_in, scale_in, cmap_in, dark_in, attn_model, attn_scope,
                          query_state, downloads]
        for control in (opacity_in, scale_in, cmap_in):
            control.change(on_display, display_inputs, [grid_out, attn_gallery, downloads], api_visibility="private",
                           trigger_mode="always_last", show_progress="hidden")

        with gr.Row(visible=False):  # the public API: same pipeline, fewer knobs
            api_image = SafeImage(type="filepath", sources=["upload"], label="image")
            api_models = gr.Textbox(value=",".join(selection), label="models")
            api_methods = gr.Textbox(value=",".join(DEFAULT_METHODS), label="methods")
            api_target = gr.Textbox(value="", label="target")
            api_grid = gr.Image(type="numpy", format="png", label="grid")
            api_table = gr.Dataframe(label="predictions")
            api_report = gr.JSON(label="report")
            api_button = gr.Button("api")
        api_button.click(api_compare, [api_image, api_models, api_methods, api_target, session_state],
                         [api_grid, api_table, api_report], api_name="compare",
                         concurrency_limit=CONCURRENCY, concurrency_id="compare", time_limit=600)
    app.queue(default_concurrency_limit=CONCURRENCY, max_size=64)
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
               share=share, prevent_thread_lock=prevent_thread_lock, max_file_size=max_upload_bytes(),
               theme=theme(), css=CSS, footer_links=["api"], show_error=True, ssr_mode=False, quiet=False)
    return app
