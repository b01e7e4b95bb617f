"""SIGTERM (docker stop) and Ctrl-C close the server and `attnviz serve` / `python app.py` exit 0."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from conftest import PROJECT_ROOT
from webapp import free_port, wait_until_serving

from attnviz.app.shutdown import serve_until_stopped


class _Server:
    closed = False

    def close(self) -> None:
        self.closed = True


def test_a_signal_during_start_still_closes_the_server_and_returns_0():
    """The signal lands while ``start`` runs (the port can answer before launch returns): not lost, no traceback."""
    server = _Server()

    def start() -> _Server:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.3)
        return server

    before = signal.getsignal(signal.SIGTERM)
    assert serve_until_stopped(start) == 0 and server.closed
    assert signal.getsignal(signal.SIGTERM) is before   # the caller's handlers are back


def test_sigint_after_start_closes_the_server():
    server = _Server()
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    assert serve_until_stopped(lambda: server) == 0 and server.closed


def test_app_py_exits_0_on_sigterm():
    port = free_port()
    env = dict(os.environ, GRADIO_SERVER_PORT=str(port), GRADIO_SERVER_NAME="127.0.0.1",
               PYTHONPATH=os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/", timeout=180)
        proc.send_signal(signal.SIGTERM)
        err = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "SIGTERM received, closing the server" in err and "Traceback" not in err, err[-2000:]


def test_exit_now_runs_the_exit_handlers_and_flushes_before_ending(tmp_path):
    """The fast exit after a stop skips only module teardown: atexit handlers (Gradio's cache sweep) still run,
    buffered output still arrives, and the status is the server's."""
    marker = tmp_path / "swept"
    script = ("import atexit, sys\n"
              "from pathlib import Path\n"
              "from attnviz.app.shutdown import exit_now\n"
              f"atexit.register(Path({str(marker)!r}).write_text, 'yes')\n"
              "sys.stdout.write('buffered line')\n"
              "exit_now(3)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "buffered line" and marker.read_text() == "yes"
