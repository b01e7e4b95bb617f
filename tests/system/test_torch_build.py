"""docker/torch_build.py, the Dockerfile's guard: an unreachable TORCH_INDEX fails in seconds with one line;
the recorded torch build must be the one the PyTorch index named."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch
from conftest import PROJECT_ROOT

SCRIPT = str(PROJECT_ROOT / "docker" / "torch_build.py")
sys.path.insert(0, str(PROJECT_ROOT / "docker"))
import torch_build  # noqa: E402


def test_an_unreachable_index_is_one_line_and_exit_1_in_seconds():
    start = time.perf_counter()
    result = subprocess.run([sys.executable, SCRIPT, "check", "http://127.0.0.1:9/simple"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1 and time.perf_counter() - start < 30
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "TORCH_INDEX=http://127.0.0.1:9/simple is unreachable" in lines[0], result.stderr


@pytest.mark.parametrize("index, build", [("https://download.pytorch.org/whl/cpu", "cpu"),
                                          ("https://download.pytorch.org/whl/cu130/", "cu130"),
                                          ("https://pypi.org/simple", None)])
def test_which_build_an_index_promises(index, build):
    assert torch_build.wanted_build(index) == build


def test_the_pin_is_requirements_txt_s():
    assert torch_build.pinned_torch() == torch.__version__.partition("+")[0]


def test_record_fails_when_the_cpu_index_delivered_another_build(tmp_path, monkeypatch):
    monkeypatch.setattr(torch_build, "RECORD", tmp_path / "TORCH_BUILD")
    other = "cu130" if torch.__version__.endswith("+cpu") else "cpu"
    assert torch_build.record(f"https://download.pytorch.org/whl/{other}") == 1
    assert (tmp_path / "TORCH_BUILD").read_text().startswith(f"torch {torch.__version__} (")
    assert torch_build.record("https://pypi.org/simple") == 0
