"""No network: the app starts and serves with every outbound connection refused, and never tries one.

The app runs in a subprocess whose sockets refuse (and log) anything but loopback; the test then
drives it through gradio_client, including a request for an ImageNet model that is not downloaded.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from webapp import free_port, wait_until_serving

GUARD = Path(__file__).resolve().parents[1] / "netguard"
SCENE = sorted(p for p in (PROJECT_ROOT / "attnviz" / "assets" / "examples").glob("*.png")
               if not p.name.endswith("_mask.png"))[0]


def test_guard_really_blocks(tmp_path):
    log = tmp_path / "net.log"
    env = {**os.environ, "PYTHONPATH": str(GUARD), "ATTNVIZ_NETLOG": str(log)}
    code = "import urllib.request\ntry:\n urllib.request.urlopen('http://example.com', timeout=3)\nexcept OSError as e:\n print('blocked')"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert "blocked" in out.stdout and "example.com" in log.read_text()


def test_app_starts_and_serves_with_no_network_and_never_downloads(tmp_path):
    log = tmp_path / "net.log"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("GRADIO_ANALYTICS_ENABLED", "HF_HUB_OFFLINE")}
    env.update({"PYTHONPATH": str(GUARD), "ATTNVIZ_NETLOG": str(log), "GRADIO_SERVER_PORT": str(port),
                "GRADIO_SERVER_NAME": "127.0.0.1", "ATTNVIZ_WEIGHTS_DIR": str(tmp_path / "no-weights"),
                "HOME": str(tmp_path)})  # nothing cached, no config: analytics must be off by the app itself
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/", timeout=120)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        _, table, report = client.predict(handle_file(str(SCENE)), "baseline,triplet", api_name="/compare")
        assert [m["model"] for m in report["models"]] == ["baseline", "triplet"]
        with pytest.raises(AppError, match=r"tv-resnet50 is not downloaded — run `attnviz weights download tv-resnet50`"):
            client.predict(handle_file(str(SCENE)), "tv-resnet50", api_name="/compare")
        page = __import__("urllib.request").request.urlopen(f"http://127.0.0.1:{port}/config").read().decode()
        # listed apart with its command, not offered as a choice that would fail at Compare
        assert "| ResNet-50 (torchvision) | `attnviz weights download tv-resnet50` |" in page
        assert "(tv-resnet50)" not in page
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    attempts = log.read_text() if log.exists() else ""
    assert attempts == "", f"outbound network attempts: {attempts}\n--- app output ---\n{output[-2000:]}"
