"""Helpers for tests (and benchmarks) that start the web page: a free port, an in-process server, and how to
launch Debian's Chromium offline."""
from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from typing import Iterator

# ATTNVIZ_CHROMIUM: another Chromium binary (then nothing is searched or installed)
CHROMIUM = os.environ.get("ATTNVIZ_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ENABLE_HINT = "sudo apt-get install -y chromium, then run the tests again"
# Chromium on a machine with no network: without the background-networking flags it keeps dialling out
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync"]


class BrowserMissing(Exception):
    """Chromium is absent and this machine does not let the tests install it; the message says why."""


def ensure_chromium(say=print) -> str:
    """Debian's Chromium, installed through apt first when it is missing and this is root on Debian/Ubuntu.

    The README's test command is all a fresh machine needs; ``ATTNVIZ_NO_APT=1`` forbids the install.
    Raises BrowserMissing (no root, no apt, another OS, the install failed) with the reason.
    """
    named = os.environ.get("ATTNVIZ_CHROMIUM")
    if named:
        if os.access(named, os.X_OK):
            return named
        raise BrowserMissing(f"ATTNVIZ_CHROMIUM={named} is not an executable file")
    found = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if found:
        return found
    if os.environ.get("ATTNVIZ_NO_APT") == "1":
        raise BrowserMissing("Chromium is not installed and ATTNVIZ_NO_APT=1 forbids installing it")
    if not shutil.which("apt-get"):
        raise BrowserMissing("Chromium is not installed and this system has no apt-get to install it with")
    if os.geteuid() != 0:
        raise BrowserMissing("Chromium is not installed and installing it through apt needs root")
    say("Chromium is missing: installing it through apt-get (once, about a minute)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    steps = (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"])
    for step in steps:
        result = subprocess.run(step, env=env, capture_output=True, text=True, timeout=1200)
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise BrowserMissing(f"`{' '.join(step)}` failed: {tail[0]}")
    found = shutil.which("chromium")
    if not found:
        raise BrowserMissing("apt-get installed the chromium package but no chromium command appeared")
    return found


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(url: str, timeout: float = 60.0) -> float:
    """Seconds until ``url`` answers HTTP 200; raises TimeoutError otherwise."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return time.perf_counter() - start
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@contextlib.contextmanager
def running_app(models: list[str] | None = None, heartbeat_s: float | None = None) -> Iterator[str]:
    """Start the page in this process (no thread lock) with ``models`` selected (None: the defaults) and yield its
    URL. ``heartbeat_s``: Gradio's heartbeat interval while it runs (a closed tab is noticed within about that
    long; Gradio's default is 15 s), the environment as it was afterwards."""
    from attnviz.app.web import page as ui

    old = os.environ.get("GRADIO_HEARTBEAT_INTERVAL")
    if heartbeat_s is not None:
        os.environ["GRADIO_HEARTBEAT_INTERVAL"] = str(heartbeat_s)
    try:
        port = free_port()
        app = ui.launch(host="127.0.0.1", port=port, models=models, prevent_thread_lock=True)
        url = f"http://127.0.0.1:{port}/"
        try:
            wait_until_serving(url)
            yield url
        finally:
            app.close()
    finally:
        if old is None:
            os.environ.pop("GRADIO_HEARTBEAT_INTERVAL", None)
        else:
            os.environ["GRADIO_HEARTBEAT_INTERVAL"] = old


class _OneFile(http.server.BaseHTTPRequestHandler):
    """Answers every GET with one payload (a stand-in for a weights publisher in download tests)."""

    payload = b""

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args):
        return


def serve_one_file(payload: bytes) -> http.server.HTTPServer:
    """A loopback server handing out ``payload``; call ``.shutdown()`` when done."""
    handler = type("OneFile", (_OneFile,), {"payload": payload})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
