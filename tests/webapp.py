"""Helpers for tests (and benchmarks) that start the web page: a free port, an in-process server, and how to
launch Debian's Chromium offline."""
from __future__ import annotations

import contextlib
import http.server
import shutil
import socket
import threading
import time
import urllib.request
from typing import Iterator

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium on a machine with no network: without the background-networking flags it keeps dialling out
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-quic",
         "--no-first-run", "--disable-component-update", "--disable-sync"]


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
def running_app() -> Iterator[str]:
    """Start the page in this process (no thread lock) and yield its URL."""
    from attnviz.app.web import page as ui

    port = free_port()
    app = ui.launch(host="127.0.0.1", port=port, prevent_thread_lock=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_serving(url)
        yield url
    finally:
        app.close()


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
