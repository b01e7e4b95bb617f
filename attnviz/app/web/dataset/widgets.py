"""The Data set tab's layout: where the images come from, which models and maps, Run / Stop and the progress
line, then the results (table, forest plot, findings, where they disagree, downloads). The model and method
lists are the Compare tab's (:mod:`attnviz.app.web.choices`), this tab's checkpoints included."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from attnviz.app.web import choices
from attnviz.app.web.dataset import handlers, settings


@dataclass
class DatasetPanel:
    source: gr.Radio
    n: gr.Number
    seed: gr.Number
    archive: gr.File
    folder: gr.Dropdown
    models: gr.Dropdown
    methods: gr.CheckboxGroup
    perturbation: gr.Checkbox
    run: gr.Button
    stop: gr.Button
    status: gr.Markdown
    table: gr.HTML
    forest: gr.Image
    findings: gr.Markdown
    skipped: gr.Markdown
    variant: gr.Dropdown
    method: gr.Dropdown
    gallery: gr.Gallery
    picks: gr.State
    downloads: gr.File


LAYOUT_HELP = ("A .zip in the layout `attnviz synth export` writes and `attnviz eval --data` reads: "
               "`<class>/<stem>.png` with `<stem>_mask.png` (object mask) or `<stem>.xml` (Pascal VOC boxes) beside "
               "each image, optionally inside one top folder. Class folders are matched to each model's class names.")


def _data_inputs() -> tuple:
    folders = list(settings.operator_folders())
    source = gr.Radio(handlers.sources(), value=handlers.BENCHMARK, label="Images", elem_id="ds-source")
    with gr.Row():
        n = gr.Number(settings.DEFAULT_SCENES, precision=0, minimum=1, maximum=settings.max_images(),
                      label="Benchmark scenes", elem_id="ds-n")
        seed = gr.Number(settings.SCENES_SEED, precision=0, label="Data seed (default: the held-out eval seed)",
                         elem_id="ds-seed")
    archive = gr.File(label="Your data set (.zip)", file_types=[".zip"], type="filepath", elem_id="ds-archive")
    gr.Markdown(LAYOUT_HELP, elem_id="ds-layout")
    folder = gr.Dropdown(folders, value=folders[0] if folders else None, label="Server data set",
                         visible=bool(folders), elem_id="ds-folder")
    return source, n, seed, archive, folder


def dataset_panel(model_list: list[tuple[str, str]], selection: list[str]) -> DatasetPanel:
    gr.Markdown("Score the models over many images with `attnviz eval`'s code: localisation against the objects' "
                "masks or boxes and agreement with the baseline's maps, each with a 95 % bootstrap CI, paired "
                "differences from the baseline, and the images where a variant's map differs most from the "
                f"baseline's. At most {settings.max_images()} images per job and {settings.max_jobs()} job(s) at "
                f"once on this server. {choices.CLAIMS_LINE}", elem_id="ds-intro")
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            source, n, seed, archive, folder = _data_inputs()
        with gr.Column(scale=1, min_width=300):
            models = gr.Dropdown(model_list, value=selection, multiselect=True, label="Models",
                                 info="The baseline, when chosen, is the reference for paired differences.",
                                 elem_id="ds-models")
            methods = gr.CheckboxGroup(choices.method_choices(), value=list(handlers.DEFAULT_METHODS),
                                       label="CAM methods", elem_id="ds-methods")
            perturbation = gr.Checkbox(False, label="Perturbation metrics too (deletion / insertion AUC, ROAD)",
                                       info="Costs many forward passes per map: expect the job to take about "
                                            "10× as long as localisation alone.", elem_id="ds-perturbation")
            with gr.Row():
                run = gr.Button("Run on the data set", variant="primary", elem_id="ds-run")
                stop = gr.Button("Stop", interactive=False, elem_id="ds-stop")
            status = gr.Markdown("", elem_id="ds-status")
    table = gr.HTML("", elem_id="ds-table", padding=False)
    forest = gr.Image(type="filepath", label="Forest plot: mean and 95 % CI per model and map",
                      interactive=False, elem_id="ds-forest", buttons=["download"])
    findings = gr.Markdown("", elem_id="ds-findings")
    with gr.Accordion("Where they disagree: the images whose maps differ most from the baseline's", open=True,
                      elem_id="ds-disagree"):
        with gr.Row():
            variant = gr.Dropdown([], label="Variant", elem_id="ds-variant")
            method = gr.Dropdown([], label="Method", elem_id="ds-method")
        gr.Markdown("Each picture: the input (object outlined) · the baseline's map · the variant's map · their "
                    "difference (red where the variant's map is higher, blue where lower). Click one to open it on "
                    "the Compare tab.", elem_id="ds-disagree-help")
        gallery = gr.Gallery(columns=1, height="auto", object_fit="contain", show_label=False, elem_id="ds-gallery",
                             allow_preview=False, buttons=[])   # a picture is a link to Compare, no buttons over it
    skipped = gr.Markdown("", elem_id="ds-skipped")
    files = gr.File(label="Downloads: results.json, results.md, per-image CSV, plots (the files attnviz eval writes)",
                    file_count="multiple", interactive=False, elem_id="ds-downloads")
    return DatasetPanel(source, n, seed, archive, folder, models, methods, perturbation, run, stop, status, table,
                        forest, findings, skipped, variant, method, gallery, gr.State([]), files)
