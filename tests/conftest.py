"""Shared test setup: offline environment, the optional ../shared reference folder, hook counting."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED = PROJECT_ROOT.parent / "shared"
REFERENCE_JSON = SHARED / "reference" / "official_state_dicts.json"
OUTPUT_DIR = Path(os.environ.get("ATTNVIZ_TEST_OUTPUT", PROJECT_ROOT / "test-output"))


def count_hooks(model: torch.nn.Module) -> int:
    """Forward, pre-forward and backward hooks attached anywhere in ``model``."""
    total = 0
    for m in model.modules():
        total += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        total += len(getattr(m, "_backward_pre_hooks", {}))
    return total


@pytest.fixture(scope="session")
def output_dir() -> Path:
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    return OUTPUT_DIR


def assert_json_close(a, b, tol: float = 1e-6, path: str = "") -> None:
    """Two JSON trees equal: keys, lengths and strings exactly, numbers to ``tol`` (relative above 1)."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            assert_json_close(a[k], b[k], tol, f"{path}/{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b)):
            assert_json_close(u, v, tol, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert abs(a - b) <= tol * max(1.0, abs(b)), f"{path}: {a} != {b}"
    else:
        assert a == b, path


@pytest.fixture(scope="module")
def browser():
    """One headless Debian Chromium per browser-test module (flags and path: webapp.py)."""
    from webapp import CHROMIUM, FLAGS

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's Chromium is required for the browser test: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()
