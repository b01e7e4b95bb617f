"""The page's panels. Each function lays out one panel inside the current Blocks and returns a small record
of its widgets, so :mod:`attnviz.app.web.page` only wires events.

DOM order is tab order: the image and its box, the models and Compare, the examples (beside the upload box,
right of it), then the settings; the results come right below and stay hidden (taking no space) until the
first comparison.
"""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from attnviz.app import pipeline, render
from attnviz.app.web import choices
from attnviz.app.web.components import SafeImage
from attnviz.app.web.handlers import NO_BOX, PICKER_PX
from attnviz.app.web.views import CONCEPT_COUNT, CONCEPTS, QUERY_VIEW_PX
from attnviz.core.methods import DEFAULT_METHODS
from attnviz.zoo.files import CHECKPOINT_SUFFIXES


@dataclass
class InputPanel:
    image: gr.Image
    image_error: gr.Markdown
    box_info: gr.Markdown
    box_picker: gr.Image
    clear_box: gr.Button


@dataclass
class OptionsPanel:
    models: gr.Dropdown
    model_limit: gr.Markdown
    run: gr.Button
    run_progress: gr.Markdown
    run_message: gr.Markdown
    methods: gr.CheckboxGroup
    target: gr.Dropdown
    contrast: gr.Dropdown
    layer: gr.Dropdown
    smoothing: gr.CheckboxGroup


@dataclass
class CheckpointPanel:
    box: gr.Accordion
    file: gr.File
    arch: gr.Dropdown
    classes: gr.File
    load: gr.Button
    convert: gr.Button
    status: gr.Markdown
    out: gr.File


@dataclass
class ResultsPanel:
    box: gr.Column
    status: gr.Markdown
    ood_note: gr.Markdown
    opacity: gr.Slider
    scale: gr.Radio
    cmap: gr.Dropdown
    grid: gr.HTML
    predictions: gr.HTML
    scores: gr.HTML
    agreement: gr.HTML
    downloads: gr.File


@dataclass
class AttentionPanel:
    model: gr.Dropdown
    scope: gr.Radio
    query_image: gr.Image
    gallery: gr.Gallery


def input_panel() -> InputPanel:
    image = SafeImage(label="Image (drag & drop, paste or webcam)", type="filepath",
                      sources=["upload", "clipboard", "webcam"], height=300, elem_id="input-image")
    image_error = gr.Markdown(visible=False, elem_id="image-error")
    with gr.Accordion("Object box (optional): click two corners to score localisation", open=False,
                      elem_id="box-accordion"):
        box_info = gr.Markdown(NO_BOX, elem_id="box-info")
        box_picker = gr.Image(type="numpy", interactive=False, show_label=False, elem_id="box-picker",
                              height=PICKER_PX + 16, buttons=[])
        clear_box = gr.Button("Clear box", size="sm")
    return InputPanel(image, image_error, box_info, box_picker, clear_box)


def examples_panel(image: gr.Image) -> None:
    examples, labels = choices.example_inputs()
    if examples:
        gr.Examples(examples, inputs=[image], example_labels=labels, examples_per_page=16, elem_id="examples",
                    label="Examples: benchmark scenes (with masks) and photographs")


def options_panel(model_list: list[tuple[str, str]], selection: list[str], image: gr.Image) -> OptionsPanel:
    limit = pipeline.MAX_MODELS_PER_REQUEST
    models = gr.Dropdown(model_list, value=selection, multiselect=True, label="Models",
                         info=f"Up to {limit} per request.", max_choices=limit, elem_id="models")
    model_limit = gr.Markdown(visible=len(selection) >= limit, elem_id="model-limit")
    with gr.Row(elem_id="run-row"):
        run = gr.Button("Compare", variant="primary", elem_id="compare-button", scale=1, min_width=140)
        run_progress = gr.Markdown("", elem_id="run-progress")
    run_message = gr.Markdown("", visible=False, elem_id="run-message")   # why the last Compare was refused
    examples_panel(image)
    methods = gr.CheckboxGroup(choices.method_choices(), value=list(DEFAULT_METHODS), label="CAM methods",
                               elem_id="cam-methods", info=choices.method_info())
    with gr.Row():
        # min_width: on a phone the two boxes stack instead of cutting their values short
        target = gr.Dropdown(choices.target_choices(), value=choices.TOP1, label="Target class",
                             allow_custom_value=True, elem_id="target", min_width=280)
        contrast = gr.Dropdown(choices.contrast_choices(), value=choices.NO_CONTRAST, label="compared with",
                               allow_custom_value=True, elem_id="contrast", min_width=280,
                               info="The maps explain logit target − logit this class (Finer-CAM's comparison).")
    layer = gr.Dropdown(choices.layer_choices(selection), value=[choices.DEFAULT_LAYER], multiselect=True,
                        label="Target layer / stage", elem_id="layer",
                        info="Layers every selected model has; several are fused (mean); the attention column "
                             "follows.")
    smoothing = gr.CheckboxGroup([choices.EIGEN_SMOOTH, choices.AUG_SMOOTH, choices.REFINE, choices.SESS], value=[],
                                 label="Smoothing and refinement", elem_id="smoothing",
                                 info="eigen: first principal component; aug: mean of 6 flipped / "
                                      "brightened copies; RefineCAM: product of 2+ layers' maps; SESS: 12 scales "
                                      "of sliding patches (slow).")
    return OptionsPanel(models, model_limit, run, run_progress, run_message, methods, target, contrast, layer, smoothing)


def not_downloaded_panel() -> None:
    missing = choices.not_downloaded_markdown()
    if missing:
        with gr.Accordion("ImageNet models (not downloaded)", open=False, elem_id="not-downloaded-box"):
            gr.Markdown(missing, elem_id="not-downloaded")


def checkpoint_panel() -> CheckpointPanel:
    with gr.Accordion("Your own checkpoint", open=False, elem_id="checkpoint-box") as box:
        file = gr.File(label=f"Checkpoint ({', '.join(CHECKPOINT_SUFFIXES)}; pickles are read with "
                             "weights_only=True)", file_types=list(CHECKPOINT_SUFFIXES), type="filepath",
                       elem_id="checkpoint-file")
        # the list is filled when the panel opens (page.py): building it imports every network, which the
        # page's first answer does not need
        arch = gr.Dropdown([], value="resnet50", label="Architecture",
                           info="Official layouts: triplet_resnet50, cbam_resnet50, se_resnet50, eca_resnet50, "
                                "ca_mobilenet_v2, triplet_mobilenet_v2, ...; or type any timm model as "
                                "timm:<name>, e.g. timm:vit_small_patch16_224",
                           allow_custom_value=True, elem_id="checkpoint-arch")
        classes = gr.File(label="Class names (optional: .txt one per line, or .json)", file_types=[".txt", ".json"],
                          type="filepath", elem_id="checkpoint-classes")
        with gr.Row():
            load = gr.Button("Load checkpoint", elem_id="checkpoint-load")
            convert = gr.Button("Convert to .safetensors", elem_id="checkpoint-convert")
        status = gr.Markdown(elem_id="checkpoint-status")
        out = gr.File(label="Converted checkpoint", interactive=False, visible=False, elem_id="checkpoint-out")
    return CheckpointPanel(box, file, arch, classes, load, convert, status, out)


def results_panel(grid_js: str) -> tuple[ResultsPanel, AttentionPanel]:
    with gr.Column(visible=False, elem_id="results") as box:
        status = gr.Markdown(elem_id="status")
        ood_note = gr.Markdown(pipeline.OOD_NOTE, visible=False, elem_id="ood-note")
        with gr.Row(elem_id="display-options"):
            opacity = gr.Slider(0, 1, value=0.5, step=0.05, label="Overlay opacity", elem_id="opacity")
            scale = gr.Radio(["per model", "shared"], value="per model", label="Colour scale", elem_id="colour-scale")
            cmap = gr.Dropdown(list(render.COLORMAPS), value="jet", label="Colour map", elem_id="cmap")
        grid = gr.HTML("", elem_id="grid", js_on_load=grid_js, padding=False, apply_default_css=False)
        predictions = gr.HTML("", elem_id="predictions", padding=False)
        scores = gr.HTML("", visible=False, elem_id="scores", padding=False)
        agreement = gr.HTML("", visible=False, elem_id="agreement", padding=False)
        attention = attention_panel()
        downloads = gr.File(label="Downloads: grid PNG, raw maps (.npz), JSON report", file_count="multiple",
                            interactive=False, elem_id="downloads")
    return (ResultsPanel(box, status, ood_note, opacity, scale, cmap, grid, predictions, scores, agreement,
                         downloads), attention)


def attention_panel() -> AttentionPanel:
    with gr.Accordion("Attention panel: every block's maps", open=True, elem_id="attention-panel"):
        with gr.Row():
            with gr.Column(scale=1, min_width=260):
                model = gr.Dropdown([], label="Model", interactive=True, elem_id="attention-model")
                scope = gr.Radio(["stage summaries", "every block", CONCEPTS], value="stage summaries",
                                 label="Show", info=f"{CONCEPTS}: Deep Feature Factorization, "
                                                    f"{CONCEPT_COUNT} NMF concepts of the last stage and the "
                                                    "classes each scores")
                gr.Markdown("**Query point** for Non-local / criss-cross / DANet / self-attention maps: click the "
                            "picture to move it (default: the Grad-CAM peak).")
                query_image = gr.Image(type="numpy", interactive=False, height=QUERY_VIEW_PX + 8, show_label=False,
                                       elem_id="query-image", buttons=[])
            with gr.Column(scale=3):
                gr.Markdown(f"Spatial gates: {render.GATE_LEGEND} (not scaled per map, unlike the CAMs). Channel "
                            "gates: one bar per channel on a 0–1 axis; red bars are the 5 largest.",
                            elem_id="attention-legend")
                gallery = gr.Gallery(show_label=False, columns=4, height="auto", object_fit="contain",
                                     elem_id="attention-gallery")
    return AttentionPanel(model, scope, query_image, gallery)
