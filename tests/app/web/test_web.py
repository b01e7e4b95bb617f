"""The web page's API through gradio_client, errors as messages, the server keeps serving."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import PROJECT_ROOT, count_hooks
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image
from webapp import free_port, running_app, wait_until_serving

from attnviz.app import render
from attnviz.data import synth
from attnviz.data.examples import EXAMPLES_DIR
from attnviz.zoo import registry as zoo

DEFAULT = ["baseline", "se", "cbam", "triplet", "coord"]


@pytest.fixture(scope="module")
def url():
    with running_app() as u:
        yield u


@pytest.fixture(scope="module")
def client(url) -> Client:
    return Client(url, verbose=False)


@pytest.fixture(scope="module")
def scene_path() -> Path:
    return sorted(p for p in EXAMPLES_DIR.glob("*.png") if not p.name.endswith("_mask.png"))[0]


def test_compare_endpoint_returns_grid_predictions_and_report(client, scene_path):
    grid_path, table, report = client.predict(handle_file(str(scene_path)), api_name="/compare")
    grid = np.asarray(Image.open(grid_path))
    assert grid.shape[:2] == render.grid_shape(len(DEFAULT), 2, extra_columns=1)  # + "vs baseline"
    assert table["headers"] == ["model", "rank", "class", "probability", "target"]
    assert [row[0] for row in table["data"]] == [m for m in DEFAULT for _ in range(5)]
    assert [m["model"] for m in report["models"]] == DEFAULT
    assert report["methods"] == ["gradcam", "gradcam++"]
    assert report["versions"]["torch"] and report["versions"]["gradio"]
    assert all(len(m["weights_sha256"]) == 64 for m in report["models"])
    # a bundled benchmark scene is recognised, so localisation is scored against its mask
    assert report["mask_source"] == "benchmark scene"
    assert set(report["localisation"]) == set(DEFAULT)
    true_class = scene_path.stem.split("_", 1)[1]
    assert sum(m["predictions"][0]["label"] == true_class for m in report["models"]) >= 4


def test_compare_endpoint_takes_models_methods_and_a_class_name_target(client, scene_path):
    _, table, report = client.predict(handle_file(str(scene_path)), "baseline,eca", "layercam,hirescam", "star",
                                      api_name="/compare")
    assert [m["model"] for m in report["models"]] == ["baseline", "eca"]
    assert report["methods"] == ["layercam", "hirescam"]
    assert {m["target"]["label"] for m in report["models"]} == {"star"}


@pytest.mark.parametrize("payload,phrase", [
    (b"this is text, not an image", "not a recognised image"),
    (b"", "The file is empty"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", "SVG is not supported"),
])
def test_bad_uploads_become_readable_errors_and_the_server_keeps_serving(client, tmp_path, scene_path, payload, phrase):
    bad = tmp_path / "upload.jpg"
    bad.write_bytes(payload)
    with pytest.raises(AppError, match=phrase):
        client.predict(handle_file(str(bad)), api_name="/compare")
    _, _, report = client.predict(handle_file(str(scene_path)), "baseline", api_name="/compare")
    assert report["models"][0]["model"] == "baseline"


def test_unknown_model_and_class_are_readable_errors(client, scene_path):
    with pytest.raises(AppError, match="Unknown model 'resnet9000'"):
        client.predict(handle_file(str(scene_path)), "baseline,resnet9000", api_name="/compare")
    with pytest.raises(AppError, match="Unknown class 'dodecahedron'"):
        client.predict(handle_file(str(scene_path)), "baseline", "gradcam", "dodecahedron", api_name="/compare")


def test_no_hooks_left_on_any_model_after_requests(client, scene_path):
    client.predict(handle_file(str(scene_path)), api_name="/compare")
    for loaded in zoo.loaded_models():
        assert count_hooks(loaded.model) == 0


def test_api_lists_only_the_public_compare_endpoint(client):
    info = client.view_api(print_info=False, return_format="dict")
    assert "/compare" in info["named_endpoints"]
    assert "/compare_page" not in info["named_endpoints"]


def test_app_py_serves_the_page_from_a_fresh_process(tmp_path):
    """`python app.py` honours GRADIO_SERVER_PORT and serves the bundled zoo (README's first command)."""
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_PORT": str(port), "GRADIO_SERVER_NAME": "127.0.0.1",
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        seconds = wait_until_serving(f"http://127.0.0.1:{port}/", timeout=90)
        (tmp_path / "startup_seconds.txt").write_text(f"{seconds:.2f}\n")
        config = json.loads(__import__("urllib.request").request.urlopen(f"http://127.0.0.1:{port}/config").read())
        labels = json.dumps(config)
        assert "Triplet Attention (triplet)" in labels and "Baseline (baseline)" in labels
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_eight_clients_at_once_get_the_serial_results_and_leave_no_hooks(url, scene_path, tmp_path):
    """API calls go through the queue and the per-model locks: concurrent == serial, bit for bit."""
    from concurrent.futures import ThreadPoolExecutor

    images = []
    for i in range(8):
        img, _, _ = synth.render_scene(777, i)
        path = tmp_path / f"c{i}.png"
        Image.fromarray(img).save(path)
        images.append(path)
    models_csv = "baseline,cbam,triplet"
    serial_client = Client(url, verbose=False)
    serial = [serial_client.predict(handle_file(str(p)), models_csv, api_name="/compare") for p in images]

    def call(path):
        return Client(url, verbose=False).predict(handle_file(str(path)), models_csv, api_name="/compare")

    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(call, images))
    for (g1, t1, r1), (g2, t2, r2) in zip(serial, concurrent):
        assert t1 == t2
        assert [m["logits"] for m in r1["models"]] == [m["logits"] for m in r2["models"]]
        assert np.array_equal(np.asarray(Image.open(g1)), np.asarray(Image.open(g2)))
    for loaded in zoo.loaded_models():
        assert count_hooks(loaded.model) == 0
