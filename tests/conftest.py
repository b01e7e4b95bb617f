"""Shared test setup: offline environment, the optional ../shared reference folder, hook counting."""
from __future__ import annotations

import os
import zipfile
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


def zip_folder(folder: Path, path: Path, wrapper: str = "") -> Path:
    """Zip every file under ``folder`` into ``path``, each name prefixed by ``wrapper`` (e.g. "scenes/": the layout
    `attnviz synth export` writes, wrapped in one top folder as users zip it)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(folder.rglob("*")):
            if f.is_file():
                zf.write(f, wrapper + f.relative_to(folder).as_posix())
    return path


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


_BROWSER: dict[str, object] = {}   # the session's one answer: {"path": str} or {"missing": reason}


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _find_chromium(config: pytest.Config) -> None:
    """Once per session: Chromium's path, installed through apt first where this machine allows (webapp.py)."""
    from webapp import BrowserMissing, ensure_chromium

    if _BROWSER:
        return
    capture = config.pluginmanager.getplugin("capturemanager")
    reporter = config.pluginmanager.getplugin("terminalreporter")
    with capture.global_and_fixture_disabled():
        try:
            _BROWSER["path"] = ensure_chromium(say=lambda line: reporter.write_line(line) if reporter else None)
        except BrowserMissing as exc:
            _BROWSER["missing"] = str(exc)


def _skip_reason() -> str:
    from webapp import ENABLE_HINT

    return f"browser tests skipped: {_BROWSER['missing']}; to run them: {ENABLE_HINT}"


@pytest.hookimpl(trylast=True)   # after -m / -k have deselected what the run does not want
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """No Chromium and none installable: the browser tests leave the run, and one summary line says why
    (a skip per test would be one line each). Under CI=true they stay and fail in the fixture."""
    wanted = [i for i in items if i.get_closest_marker("browser") or "browser" in getattr(i, "fixturenames", ())]
    if not wanted:
        return
    _find_chromium(config)
    if "missing" in _BROWSER and not _in_ci():
        left_out = set(map(id, wanted))
        items[:] = [i for i in items if id(i) not in left_out]
        config.hook.pytest_deselected(items=wanted)
        _BROWSER["left_out"] = len(wanted)


def pytest_terminal_summary(terminalreporter) -> None:
    if _BROWSER.get("left_out"):
        terminalreporter.write_line(f"SKIPPED [{_BROWSER['left_out']}] {_skip_reason()}", yellow=True)


@pytest.fixture(scope="module")
def browser(request):
    """One headless Debian Chromium per browser-test module (flags: webapp.py; installed once where possible)."""
    from webapp import FLAGS

    _find_chromium(request.config)
    if "missing" in _BROWSER:
        if _in_ci():
            pytest.fail(f"CI=true: {_skip_reason()}", pytrace=False)
        pytest.skip(_skip_reason())
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(_BROWSER["path"]), args=FLAGS, headless=True)
        yield b
        b.close()
