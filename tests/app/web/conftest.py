"""The page's browser tests share one headless Chromium per test module."""
from __future__ import annotations

from pathlib import Path

import pytest
from webapp import CHROMIUM, FLAGS


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's Chromium is required for the browser test: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        b.close()
