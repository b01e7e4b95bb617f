"""The Docker image, built from the Dockerfile unchanged and run (marker ``docker``; CI runs ``pytest -m docker``).

Builds with docker where a daemon answers, else podman (tests/containers.py: what this machine lacks and how it
is supplied), starts the container with a mounted models file, and checks what a user of ``docker run`` relies
on: HTTP 200, a healthy health check, a real ``/compare`` through gradio_client, a non-root user, the mounted
model on the page, and ``docker stop`` ending it within 3 s with exit status 0. The image, the stand-in base and
dangling layers are removed afterwards. While working on the run side: ``ATTNVIZ_DOCKER_KEEP=1`` keeps the image,
``ATTNVIZ_DOCKER_REUSE=1`` runs the tests on the kept image instead of building it again.
Figures (build time, image size, start and stop times) go to test-output/docker_image.json.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
import urllib.request
from pathlib import Path

import containers
import pytest
import torch
from conftest import PROJECT_ROOT
from webapp import free_port, wait_until_serving

from attnviz.data.examples import EXAMPLES_DIR

pytestmark = pytest.mark.docker

TAG = "localhost/attnviz-test:latest"
KEEP = os.environ.get("ATTNVIZ_DOCKER_KEEP") == "1"
REUSE = os.environ.get("ATTNVIZ_DOCKER_REUSE") == "1"
STOP_LIMIT_S = 3.0
FIGURES: dict[str, object] = {}
SCENE = sorted(p for p in EXAMPLES_DIR.glob("*.png") if not p.name.endswith("_mask.png"))[0]


@pytest.fixture(scope="module")
def engine():
    workdir = containers.scratch_dir()
    try:
        found = containers.find_engine(workdir)
    except containers.Unavailable as exc:
        shutil.rmtree(workdir, ignore_errors=True)
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(f"CI: the Docker-image tests cannot run: {exc}")
        pytest.skip(f"Docker-image tests skipped: {exc}")
    FIGURES["engine"] = found.name
    yield found
    if not KEEP:
        found("rmi", "-f", TAG, timeout=300)
        for name in found.imported:
            found("rmi", "-f", name, timeout=300)
        found("system", "prune", "-f", timeout=600)
    shutil.rmtree(workdir, ignore_errors=True)
    output = Path(os.environ.get("ATTNVIZ_TEST_OUTPUT", PROJECT_ROOT / "test-output"))
    output.mkdir(parents=True, exist_ok=True)
    (output / "docker_image.json").write_text(json.dumps(FIGURES, indent=2) + "\n")


_FAILED: list[str] = []   # a module fixture that failed once: the other tests stop at once with its reason


def _once(reason: str) -> None:
    _FAILED.append(reason)
    pytest.fail(reason, pytrace=False)


@pytest.fixture(scope="module")
def image(engine) -> str:
    """The image, built once for the module: its build log is kept for the torch record test."""
    if _FAILED:
        pytest.fail(f"(as before) {_FAILED[0]}", pytrace=False)
    stand_in = containers.ensure_base(engine, engine.workdir)
    index = containers.torch_index()
    FIGURES.update({"stand_in_base": stand_in, "torch_index": index or containers.CPU_INDEX})
    if REUSE and engine.has_image(TAG):
        FIGURES["reused_image"] = True
        FIGURES["image_bytes"] = int(engine("image", "inspect", "--format", "{{.Size}}", TAG).stdout.strip())
        return TAG
    start = time.perf_counter()
    result = engine(*containers.build_command(engine, TAG, stand_in, index), timeout=1800)
    FIGURES["build_s"] = round(time.perf_counter() - start, 1)
    engine.build_log = result.stdout + result.stderr
    if result.returncode != 0:
        _once(f"the build failed:\n{engine.build_log[-5000:]}")
    FIGURES["image_bytes"] = int(engine("image", "inspect", "--format", "{{.Size}}", TAG).stdout.strip())
    return TAG


@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> Path:
    """A folder to mount: models.toml naming a 3-class timm resnet18 (random weights) and its classes file,
    readable by the image's user (uid 10001)."""
    import timm
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("lab")
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=3).eval()
    save_file(model.state_dict(), str(folder / "mine.safetensors"))
    (folder / "classes.txt").write_text("cat\ndog\nbird\n")
    (folder / "models.toml").write_text('[[model]]\nname = "mine"\narch = "timm:resnet18"\n'
                                        'checkpoint = "mine.safetensors"\nclasses = "classes.txt"\n')
    for path in [folder, *folder.iterdir()]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


@pytest.fixture(scope="module")
def container(engine, image, lab):
    name = f"attnviz-test-{os.getpid()}"
    port = free_port()
    start = time.perf_counter()
    engine("run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:7860", "-v", f"{lab}:/lab:ro",
           "-e", "ATTNVIZ_MODELS_FILE=/lab/models.toml", image, check=True, timeout=120)
    url = f"http://127.0.0.1:{port}/"
    try:
        try:
            wait_until_serving(url, timeout=180)
        except TimeoutError:
            pytest.fail(f"{url} never answered; container log:\n{engine('logs', name).stdout[-3000:]}")
        FIGURES["run_to_http_200_s"] = round(time.perf_counter() - start, 1)
        yield name, url
    finally:
        engine("rm", "-f", name, timeout=120)


def test_the_build_says_which_torch_it_installed(engine, image):
    recorded = engine("run", "--rm", "--entrypoint", "cat", image, "/app/TORCH_BUILD", check=True).stdout.strip()
    FIGURES["torch"] = recorded
    assert re.fullmatch(r"torch 2\.14\.1\+(cpu|cu\d+) \((CPU only|CUDA [\d.]+)\) from \S+", recorded), recorded
    if FIGURES["torch_index"] == containers.CPU_INDEX:
        assert "+cpu" in recorded
    if engine.build_log:
        assert f"attnviz build: {recorded}" in engine.build_log


def test_an_unreachable_torch_index_fails_the_build_in_seconds(engine, image):
    """Port 9 on loopback refuses at once: the check step stops the build with one line, no pip retries."""
    start = time.perf_counter()
    result = engine(*containers.build_command(engine, "localhost/attnviz-unreachable:latest", True,
                                              "http://127.0.0.1:9/simple"), timeout=600)
    elapsed = time.perf_counter() - start
    log = result.stdout + result.stderr
    assert result.returncode != 0 and "TORCH_INDEX=http://127.0.0.1:9/simple is unreachable" in log, log[-3000:]
    assert elapsed < 120, f"{elapsed:.0f} s"
    FIGURES["unreachable_index_fails_after_s"] = round(elapsed, 1)


def test_the_page_answers_and_the_health_check_is_healthy(engine, container):
    name, url = container
    deadline = time.monotonic() + 120   # docker runs the check on its own 30 s schedule; podman on demand
    while (status := engine.health(name)) != "healthy" and time.monotonic() < deadline:
        time.sleep(2)
    assert status == "healthy"


def test_compare_through_gradio_client(container):
    from gradio_client import Client, handle_file

    _, url = container
    start = time.perf_counter()
    grid, table, report = Client(url, verbose=False).predict(handle_file(str(SCENE)), "mine,baseline", "gradcam",
                                                             "", api_name="/compare")
    FIGURES["first_compare_s"] = round(time.perf_counter() - start, 1)
    assert Path(grid).is_file() and Path(grid).stat().st_size > 1000
    assert [m["model"] for m in report["models"]] == ["mine", "baseline"]
    # The predictions table has a row per model and top-k class, the models in the order asked for.
    assert list(dict.fromkeys(row[0] for row in table["data"])) == ["mine", "baseline"]


def test_the_server_does_not_run_as_root(engine, container):
    name, _ = container
    uid = engine("exec", name, "id", "-u", check=True).stdout.strip()
    assert uid.isdigit() and int(uid) != 0, uid


def test_the_mounted_models_file_adds_its_model_to_the_page(container):
    _, url = container
    with urllib.request.urlopen(url + "config", timeout=30) as response:
        config = response.read().decode()
    assert "(mine)" in config and "mine.safetensors" in config


def test_stop_ends_the_container_within_3_s_with_status_0(engine, container):
    name, _ = container
    start = time.perf_counter()
    engine("stop", "-t", "10", name, check=True, timeout=60)
    elapsed = time.perf_counter() - start
    code = engine("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
    FIGURES["stop_s"] = round(elapsed, 2)
    assert code == "0" and elapsed <= STOP_LIMIT_S, f"exit {code} after {elapsed:.1f} s"
