"""Without a browser the README's test command stays green with ONE line saying why and how to enable the
browser tests; under CI=true the same absence is a failure (tests/conftest.py, tests/webapp.py)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from conftest import PROJECT_ROOT

DUMMY = '''
import pytest
pytestmark = pytest.mark.browser

def test_one(browser):
    pass

def test_two(browser):
    pass
'''


def _run(tmp_path, **env) -> subprocess.CompletedProcess:
    for name in ("conftest.py", "webapp.py"):
        shutil.copy(PROJECT_ROOT / "tests" / name, tmp_path / name)
    (tmp_path / "test_dummy_browser.py").write_text(DUMMY)
    (tmp_path / "test_plain.py").write_text("def test_not_a_browser_test():\n    pass\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    browser: x\n")
    environment = {k: v for k, v in os.environ.items() if k != "CI"}
    environment.update(env, ATTNVIZ_CHROMIUM=str(tmp_path / "no-chromium"), PYTHONPATH=str(PROJECT_ROOT))
    return subprocess.run([sys.executable, "-m", "pytest", "-ra", "-p", "no:cacheprovider", str(tmp_path)],
                          cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)


def test_no_browser_is_one_summary_line_and_a_green_run(tmp_path):
    result = _run(tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    lines = [line for line in result.stdout.splitlines() if "browser tests skipped" in line]
    assert len(lines) == 1 and lines[0].startswith("SKIPPED [2] "), result.stdout[-3000:]
    assert "1 passed, 2 deselected" in result.stdout
    assert "is not an executable file" in lines[0] and "apt-get install -y chromium" in lines[0]


@pytest.mark.parametrize("ci", ["true", "1"])
def test_under_ci_no_browser_fails(tmp_path, ci):
    result = _run(tmp_path, CI=ci)
    assert result.returncode == 1 and "CI=true: browser tests skipped" in result.stdout, result.stdout[-3000:]
