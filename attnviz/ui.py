"""The Gradio page. Handlers only translate widgets to a :class:`pipeline.Request` and results back.

Uploads reach our own safe decoder untouched (see :class:`SafeImage`); every user-facing failure
becomes a ``gr.Error`` with a readable message and the server keeps serving. The comparison is also
exposed as the named API endpoint ``/compare`` (image in; grid, predictions table, JSON report out),
which goes through the same queue, concurrency limit and per-model locks as the page.
"""
from __future__ import annotations

import json
import logging
from abc import ABCMeta
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
import pandas as pd  # noqa: E402

from . import pipeline, render, zoo  # noqa: E402
from .engine import ALL_METHODS, DEFAULT_METHODS  # noqa: E402
from .errors import AttnvizError  # noqa: E402
from .report import maps_npz_bytes  # noqa: E402
from .results import Comparison  # noqa: E402

log = logging.getLogger("attnviz.ui")

DEFAULT_SELECTION = ("baseline", "se", "cbam", "triplet", "coord")
TOP1 = "top-1 (each model)"
DEFAULT_LAYER = "default (each model's last stage)"
DOWNLOAD_ROOT = Path(os.environ.get("ATTNVIZ_TMP", tempfile.gettempdir())) / "attnviz-downloads"
DOWNLOAD_TTL_S = 3600
CONCURRENCY = int(os.environ.get("ATTNVIZ_CONCURRENCY", "2"))
PHOTO_EXAMPLES = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
QUERY_VIEW_PX = 256
# Gradio refuses larger uploads before they reach us (checkpoints can be ~100 MB; images are further
# capped at images.MAX_UPLOAD_BYTES by the decoder).
DEFAULT_MAX_UPLOAD_MB = 200


def _safe_image_preprocess(self, payload: Any) -> str | bytes | None:
    """Hand the uploaded file's path (or a pasted image's bytes) to attnviz's decoder, unopened."""
    if payload is None:
        return None
    url = getattr(payload, "url", None) or ""
    if url.startswith("data:"):
        import base64

        return base64.b64decode(url.split(",", 1)[1])
    if getattr(payload, "path", None) is None:
        raise gr.Error("The upload did not arrive; please try again.")
    return str(payload.path)


# ``gr.Image`` whose preprocessing does not open the upload with PIL: Gradio's own would decode it (or fail
# with a generic error) before our size, bomb and format checks run. ``is_template`` makes the browser use
# the normal image widget. The class is made with ABCMeta directly because Gradio's ComponentMeta would
# write a .pyi stub next to this file at import time (a read-only install could not even import it).
SafeImage = ABCMeta.__new__(type(gr.Image), "SafeImage", (gr.Image,), {
    "__module__": __name__, "__doc__": "gr.Image that leaves decoding to attnviz.images.decode_image.",
    "is_template": True, "preprocess": _safe_image_preprocess})


# ---- helpers -------------------------------------------------------------------------------

def _model_choices() -> list[tuple[str, str]]:
    out = []
    for spec in zoo.all_specs():
        if spec.source in ("random", "replicate"):
            continue
        label = f"{spec.display_name} ({spec.name})"
        if not spec.weights.available():
            label += " — not downloaded"
        out.append((label, spec.name))
    return out


def _architectures() -> list[str]:
    import models

    return models.available()


def default_models() -> list[str]:
    bundled = zoo.bundled()
    picked = [n for n in DEFAULT_SELECTION if n in bundled]
    return picked or bundled[:5]


def _class_choices() -> list[str]:
    names: list[str] = []
    for spec in zoo.all_specs():
        if spec.source == "bundled zoo":
            names.extend(n for n in spec.class_names if n not in names)
    return [TOP1] + names


def _layer_choices() -> list[str]:
    layers: list[str] = []
    for spec in zoo.all_specs():
        if spec.source == "bundled zoo":
            layers.extend(layer for layer in spec.layers if layer not in layers)
    return [DEFAULT_LAYER] + layers


def example_inputs() -> tuple[list[list[str]], list[str]]:
    """Bundled benchmark scenes (with masks) and a few photographs that ship with scikit-image."""
    paths, labels = [], []
    if pipeline.EXAMPLES_DIR.is_dir():
        for p in sorted(pipeline.EXAMPLES_DIR.glob("*.png")):
            if not p.name.endswith("_mask.png"):
                paths.append([str(p)])
                labels.append(f"scene: {p.stem.split('_', 1)[-1].replace('_', ' ')}")
    try:
        import skimage

        folder = Path(skimage.__file__).resolve().parent / "data"
        for name in PHOTO_EXAMPLES:
            if (folder / name).is_file():
                paths.append([str(folder / name)])
                labels.append(f"photo: {Path(name).stem}")
    except ImportError:
        pass
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


def write_downloads(result: pipeline.PageResult) -> list[str]:
    """grid.png, maps.npz and report.json in a fresh folder under the writable temp dir."""
    import cv2

    _cleanup_downloads()
    DOWNLOAD_ROOT.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="cmp-", dir=DOWNLOAD_ROOT))
    grid_path = folder / "attnviz-grid.png"
    cv2.imwrite(str(grid_path), cv2.cvtColor(result.grid, cv2.COLOR_RGB2BGR))
    npz_path = folder / "attnviz-maps.npz"
    npz_path.write_bytes(maps_npz_bytes(result.comparison))
    report_path = folder / "attnviz-report.json"
    report_path.write_text(json.dumps(result.report, indent=2))
    return [str(grid_path), str(npz_path), str(report_path)]


def predictions_frame(result: pipeline.PageResult) -> pd.DataFrame:
    rows = [{"model": r["model"], "rank": r["rank"], "class": r["label"],
             "probability": f"{r['probability']:.1%}", "target": r["target"]} for r in result.predictions]
    return pd.DataFrame(rows, columns=["model", "rank", "class", "probability", "target"])


def scores_frame(result: pipeline.PageResult) -> pd.DataFrame:
    rows = []
    for model, per_map in result.scores.items():
        for name, s in per_map.items():
            rows.append({"model": model, "map": render.METHOD_TITLES.get(name, name),
                         "pointing game": "hit" if s["pointing_game"] else "miss",
                         "energy on object": f"{s['energy_pointing_game']:.1%}", "IoU": f"{s['iou']:.2f}"})
    return pd.DataFrame(rows, columns=["model", "map", "pointing game", "energy on object", "IoU"])


def _explanation(comparison: Comparison | None, model: str | None):
    if comparison is None or not model:
        return None
    return next((e for e in comparison.explanations if e.model == model), None)


def attention_gallery(comparison: Comparison | None, model: str | None, scope: str, opacity: float = 0.5,
                      cmap: str = "jet", query: list[float] | None = None) -> list[tuple[np.ndarray, str]]:
    """Rendered attention maps of one model: stage summaries, or every block's maps.

    Query-based maps (Non-local, criss-cross, DANet, self-attention) are drawn for ``query`` (x, y
    fractions of the image; default: the Grad-CAM peak). Nothing is re-run: the maps are in the state.
    """
    expl = _explanation(comparison, model)
    if expl is None:
        return []
    q = tuple(query) if query else render.cam_peak(expl)
    maps = list(expl.stage_summaries) if scope == "stage summaries" else list(expl.attention_maps)
    if scope == "stage summaries":  # query maps and transforms have no stage mean; show them anyway
        maps += [m for m in expl.attention_maps if m.layout in ("affinity", "affine") and
                 m.name in ("mean of heads", "2-step reach", "affinity", "position attention", "sampled region")]
    return [(render.attention_map_image(m, expl.image, 200, opacity, cmap, query=q), f"{m.label} — {m.note}")
            for m in maps]


def query_view(comparison: Comparison | None, model: str | None, query: list[float] | None):
    """The model's view with the current query point marked (click it to move the query)."""
    expl = _explanation(comparison, model)
    if expl is None or expl.image is None:
        return None
    q = tuple(query) if query else render.cam_peak(expl)
    return render.query_marker_image(expl.image, q, QUERY_VIEW_PX)


def on_query_click(evt: gr.SelectData, comparison, model, scope, opacity, cmap):
    expl = _explanation(comparison, model)
    if expl is None:
        return None, None, []
    x, y = evt.index
    query = [min(1.0, max(0.0, x / QUERY_VIEW_PX)), min(1.0, max(0.0, y / QUERY_VIEW_PX))]
    return query, query_view(comparison, model, query), attention_gallery(comparison, model, scope, opacity, cmap, query)


def on_attention_model(comparison, model, scope, opacity, cmap):
    """A new model or scope: reset the query to that model's Grad-CAM peak."""
    return None, query_view(comparison, model, None), attention_gallery(comparison, model, scope, opacity, cmap)


def _status(result: pipeline.PageResult) -> str:
    c = result.comparison
    times = ", ".join(f"{e.display_name} {e.timings.get('total', 0):.0f} ms" for e in c.explanations)
    lines = [f"**{len(c.explanations)} models** in {c.timings.get('total', 0) / 1000:.1f} s ({times})."]
    if result.mask_source:
        lines.append(f"Localisation scored against the **{result.mask_source}** (green contour in the input column).")
    lines.extend(f"Note: {n}" for n in result.notes)
    return "\n\n".join(lines)


def _parse_target(target: str | None) -> str | None:
    return None if not target or target == TOP1 else target


def _parse_layer(layer: str | None) -> str | None:
    return None if not layer or layer == DEFAULT_LAYER else layer


def _csv(text: str | None, default: tuple[str, ...] | list[str]) -> list[str]:
    items = [t.strip() for t in (text or "").split(",") if t.strip()]
    return items or list(default)


def _run(request: pipeline.Request, progress: gr.Progress | None) -> pipeline.PageResult:
    def report(i: int, n: int, name: str) -> None:
        if progress is not None:
            progress((i, n), desc=f"running {name}" if i < n else "rendering")

    try:
        return pipeline.run(request, progress=report)
    except AttnvizError as exc:
        raise gr.Error(str(exc)) from None
    except Exception as exc:  # keep serving; the log has the traceback
        log.exception("comparison failed")
        raise gr.Error(f"Something went wrong while running the models ({type(exc).__name__}). "
                       "The server is still running; try another image or fewer models.") from None


# ---- handlers -------------------------------------------------------------------------------

def on_compare(image, models, methods, target, layer, opacity, scale, cmap, box, progress=gr.Progress()):
    if image is None:
        raise gr.Error("Upload an image (or pick an example) first.")
    request = pipeline.Request(image=image, models=models or [], methods=methods or [],
                               target=_parse_target(target), layer=_parse_layer(layer), opacity=float(opacity),
                               shared_scale=scale == "shared", cmap=cmap, box=tuple(box) if box else None,
                               source="upload")
    result = _run(request, progress)
    files = write_downloads(result)
    names = [e.model for e in result.comparison.explanations]
    first = next((e.model for e in result.comparison.explanations if e.attention_maps), names[0])
    gallery = attention_gallery(result.comparison, first, "stage summaries", float(opacity), cmap)
    scores = scores_frame(result)
    return (result.grid, predictions_frame(result), gr.update(value=scores, visible=not scores.empty),
            _status(result), files, result.comparison,
            gr.update(choices=names, value=first), gr.update(value="stage summaries"), gallery,
            None, query_view(result.comparison, first, None))


def api_compare(image, models: str = "", methods: str = "gradcam,gradcam++", target: str = ""):
    """API: image in; the grid image, the predictions table and the JSON report out."""
    if image is None:
        raise gr.Error("Send an image.")
    request = pipeline.Request(image=image, models=_csv(models, default_models()),
                               methods=_csv(methods, DEFAULT_METHODS), target=target or None, source="api")
    result = _run(request, None)
    return result.grid, predictions_frame(result), result.report


CHECKPOINT_ROOT = DOWNLOAD_ROOT.parent / "attnviz-checkpoints"


def on_load_checkpoint(file_path, arch, classes_path, selected):
    """Validate an uploaded checkpoint strictly and add it to the model list (nothing from it is executed)."""
    from .checkpoints import checkpoint_spec

    if not file_path:
        raise gr.Error("Choose a checkpoint file first (.safetensors, .pth or .pt).")
    if not arch:
        raise gr.Error("Choose the architecture the checkpoint was trained with.")
    source = Path(file_path)
    CHECKPOINT_ROOT.mkdir(parents=True, exist_ok=True)
    kept = CHECKPOINT_ROOT / f"{zoo.sha256_file(source)[:16]}{source.suffix.lower()}"
    if not kept.exists():
        shutil.copyfile(source, kept)
    try:
        spec = checkpoint_spec(arch, kept, classes_path, name=f"{arch}@{source.stem}"[:80])
    except AttnvizError as exc:
        raise gr.Error(str(exc)) from None
    zoo.register(spec, replace=True)
    choices = _model_choices()
    value = [*(selected or []), spec.name] if spec.name not in (selected or []) else selected
    message = (f"Loaded **{spec.name}**: {len(spec.class_names)} classes, strict key match with {arch}; "
               f"CAM layer {spec.default_layer}. It is now in the model list.")
    return gr.update(choices=choices, value=value), message


def on_convert_checkpoint(file_path, arch):
    """The uploaded checkpoint, strictly loaded into ``arch``, written back as .safetensors."""
    from .checkpoints import load_into, read_checkpoint, save_safetensors

    if not file_path or not arch:
        raise gr.Error("Choose a checkpoint file and its architecture first.")
    try:
        model = load_into(arch, read_checkpoint(file_path))
    except AttnvizError as exc:
        raise gr.Error(str(exc)) from None
    DOWNLOAD_ROOT.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="ckpt-", dir=DOWNLOAD_ROOT))
    return str(save_safetensors(model, folder / f"{Path(file_path).stem}.safetensors"))


def on_select(evt: gr.SelectData, clicks):
    """Two clicks on the input image define an object box for localisation scores."""
    point = [int(v) for v in evt.index]
    clicks = (clicks or [])[-1:] + [point] if clicks and len(clicks) == 1 else [point]
    if len(clicks) == 2:
        (x0, y0), (x1, y1) = clicks
        box = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
        return clicks, box, f"Object box: ({box[0]}, {box[1]}) – ({box[2]}, {box[3]}). Localisation will be scored against it."
    return clicks, None, f"First corner at ({point[0]}, {point[1]}); click the opposite corner."


def on_clear_box():
    return [], None, "No object box (click two corners on the input image to draw one)."


# ---- page -----------------------------------------------------------------------------------

INTRO = """# attnviz — what does attention change?
Upload an image and compare a baseline CNN with the same network plus **SE, ECA, CBAM, Triplet Attention and
Coordinate Attention**: predictions, Grad-CAM-family heatmaps, and the maps each attention module computes.
The bundled models were trained by attnviz with one recipe on a procedural shape benchmark (known object masks),
so heatmaps on the example scenes can be *scored*. Click two corners on your image to draw an object box."""


def build_app(models: list[str] | None = None) -> gr.Blocks:
    choices = _model_choices()
    selection = [m for m in (models or default_models()) if m in {c[1] for c in choices}]
    examples, example_labels = example_inputs()
    with gr.Blocks(title="attnviz", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(INTRO)
        if not choices:
            gr.Markdown("**No models are available.** The bundled weights are missing from `models/weights/`.")
        comparison_state = gr.State(None)
        query_state = gr.State(None)
        clicks_state = gr.State([])
        box_state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                image_in = SafeImage(label="Image (drag & drop, paste or webcam)", type="filepath",
                                     sources=["upload", "clipboard", "webcam"], height=300, elem_id="input-image")
                box_info = gr.Markdown("No object box (click two corners on the input image to draw one).")
                clear_box = gr.Button("Clear box", size="sm")
                if examples:
                    gr.Examples(examples, inputs=[image_in], example_labels=example_labels, examples_per_page=12,
                                label="Examples: benchmark scenes (with masks) and photographs")
                with gr.Accordion("Your own checkpoint", open=False):
                    ckpt_file = gr.File(label="Checkpoint (.safetensors, or .pth/.pt read with weights_only=True)",
                                        file_types=[".safetensors", ".pth", ".pt", ".bin"], type="filepath",
                                        elem_id="checkpoint-file")
                    ckpt_arch = gr.Dropdown(_architectures(), value="resnet50", label="Architecture",
                                            info="Official layouts: triplet_resnet50, cbam_resnet50, se_resnet50, "
                                                 "eca_resnet50, ca_mobilenet_v2, triplet_mobilenet_v2, ...",
                                            elem_id="checkpoint-arch")
                    ckpt_classes = gr.File(label="Class names (optional: .txt one per line, or .json)",
                                           file_types=[".txt", ".json"], type="filepath")
                    with gr.Row():
                        ckpt_load = gr.Button("Load checkpoint", elem_id="checkpoint-load")
                        ckpt_convert = gr.Button("Convert to .safetensors")
                    ckpt_status = gr.Markdown(elem_id="checkpoint-status")
                    ckpt_out = gr.File(label="Converted checkpoint", interactive=False)
            with gr.Column(scale=1, min_width=320):
                models_in = gr.Dropdown(choices, value=selection, multiselect=True, label="Models",
                                        max_choices=pipeline.MAX_MODELS_PER_REQUEST, elem_id="models")
                methods_in = gr.CheckboxGroup([(render.METHOD_TITLES[m], m) for m in ALL_METHODS],
                                              value=list(DEFAULT_METHODS), label="CAM methods",
                                              info="Score-, Eigen- and Ablation-CAM are slow (many forward passes).")
                target_in = gr.Dropdown(_class_choices(), value=TOP1, label="Target class", allow_custom_value=True)
                layer_in = gr.Dropdown(_layer_choices(), value=DEFAULT_LAYER, label="Target layer / stage")
                with gr.Row():
                    opacity_in = gr.Slider(0, 1, value=0.5, step=0.05, label="Overlay opacity")
                    scale_in = gr.Radio(["per model", "shared"], value="per model", label="Colour scale")
                    cmap_in = gr.Dropdown(list(render.COLORMAPS), value="jet", label="Colour map")
                run = gr.Button("Compare", variant="primary", elem_id="compare-button")
        status = gr.Markdown(elem_id="status")
        grid_out = gr.Image(label="Side by side (rows = models)", type="numpy", format="png", interactive=False,
                            elem_id="grid")
        with gr.Row():
            predictions_out = gr.Dataframe(label="Top-5 predictions", interactive=False, elem_id="predictions")
            scores_out = gr.Dataframe(label="Localisation scores (pointing game, energy on object, IoU)",
                                      interactive=False, visible=False, elem_id="scores")
        with gr.Accordion("Attention panel: every block's maps", open=True):
            with gr.Row():
                with gr.Column(scale=1, min_width=260):
                    attn_model = gr.Dropdown([], label="Model", interactive=True)
                    attn_scope = gr.Radio(["stage summaries", "every block"], value="stage summaries", label="Show")
                    query_img = gr.Image(label="Query point for Non-local / criss-cross / DANet / self-attention "
                                               "maps: click to move it (default: the Grad-CAM peak)",
                                         type="numpy", interactive=False, height=256, elem_id="query-image")
                with gr.Column(scale=3):
                    attn_gallery = gr.Gallery(label="Attention maps", columns=4, height="auto",
                                              elem_id="attention-gallery")
        downloads = gr.File(label="Downloads: grid PNG, raw maps (.npz), JSON report", file_count="multiple",
                            interactive=False, elem_id="downloads")

        inputs = [image_in, models_in, methods_in, target_in, layer_in, opacity_in, scale_in, cmap_in, box_state]
        outputs = [grid_out, predictions_out, scores_out, status, downloads, comparison_state, attn_model,
                   attn_scope, attn_gallery, query_state, query_img]
        run.click(on_compare, inputs, outputs, api_name="compare_page", api_visibility="private",
                  concurrency_limit=CONCURRENCY, concurrency_id="compare", time_limit=600)
        image_in.select(on_select, [clicks_state], [clicks_state, box_state, box_info], api_visibility="private")
        image_in.change(on_clear_box, None, [clicks_state, box_state, box_info], api_visibility="private")
        clear_box.click(on_clear_box, None, [clicks_state, box_state, box_info], api_visibility="private")
        ckpt_load.click(on_load_checkpoint, [ckpt_file, ckpt_arch, ckpt_classes, models_in], [models_in, ckpt_status],
                        api_name="load_checkpoint", concurrency_id="compare", concurrency_limit=CONCURRENCY)
        ckpt_convert.click(on_convert_checkpoint, [ckpt_file, ckpt_arch], ckpt_out, api_visibility="private",
                           concurrency_id="compare", concurrency_limit=CONCURRENCY)
        panel_inputs = [comparison_state, attn_model, attn_scope, opacity_in, cmap_in]
        for trigger in (attn_model.input, attn_scope.input):
            trigger(on_attention_model, panel_inputs, [query_state, query_img, attn_gallery], api_visibility="private")
        query_img.select(on_query_click, panel_inputs, [query_state, query_img, attn_gallery],
                         api_visibility="private")

        with gr.Row(visible=False):  # the public API: same pipeline, fewer knobs
            api_image = SafeImage(type="filepath", sources=["upload"], label="image")
            api_models = gr.Textbox(value=",".join(selection), label="models")
            api_methods = gr.Textbox(value=",".join(DEFAULT_METHODS), label="methods")
            api_target = gr.Textbox(value="", label="target")
            api_grid = gr.Image(type="numpy", format="png", label="grid")
            api_table = gr.Dataframe(label="predictions")
            api_report = gr.JSON(label="report")
            api_button = gr.Button("api")
        api_button.click(api_compare, [api_image, api_models, api_methods, api_target],
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


def launch(host: str | None = None, port: int | None = None, models: list[str] | None = None,
           share: bool = False, prevent_thread_lock: bool = False) -> gr.Blocks:
    """Build and start the page (``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT`` are honoured)."""
    app = build_app(models)
    app.launch(server_name=host or os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
               server_port=port or int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
               share=share, prevent_thread_lock=prevent_thread_lock, max_file_size=max_upload_bytes(),
               theme=theme(), footer_links=["api"], show_error=True, ssr_mode=False, quiet=False)
    return app
