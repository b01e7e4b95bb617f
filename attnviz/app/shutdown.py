"""``attnviz serve`` ends cleanly on SIGTERM as on Ctrl-C: the server is closed and the command returns 0.

``docker stop`` / ``podman stop`` send SIGTERM to the container's PID 1, and the kernel drops any signal for
which PID 1 has installed no handler: the server kept serving, the runtime waited its grace period (10 s) and
then killed it (exit 137). Gradio's own main loop only reacts to KeyboardInterrupt, and only while it sleeps
in that loop; a signal that lands a moment earlier (the port answers before ``launch`` returns) escaped as an
interrupt. So the server is started without Gradio's loop and this module waits for the signal itself.
"""
from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
from typing import Callable, NoReturn, Protocol

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
POLL_S = 0.2   # how often the wait wakes to notice a signal: the latency of a stop
WARM_UP_JOIN_S = 60.0   # the longest a stop waits for the page's warm-up thread (it loads the default models)


class Closeable(Protocol):
    def close(self) -> None: ...


def serve_until_stopped(start: Callable[[], Closeable]) -> int:
    """Run ``start()`` (which must return at once, the server running in threads), wait for SIGTERM or SIGINT,
    close the server; 0. A ``start`` that returns no server has nothing to wait for: 0 at once. Off the main thread (an embedding program) no handler can be installed: the caller's
    signals are left alone and this returns when ``start`` does."""
    if threading.current_thread() is not threading.main_thread():
        start()
        return 0
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, frame: object) -> None:
        received.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}
    try:
        server = start()
        if server is None:        # the launcher ran its own loop to the end (or started nothing): no wait
            return 0
        while not stop.wait(POLL_S):
            pass
        print(f"attnviz: {signal.Signals(received[0]).name} received, closing the server", file=sys.stderr)
        server.close()
        warm_up = getattr(server, "warm_up", None)   # a start-up thread still loading torch code: let it finish,
        if warm_up is not None:                      # an interpreter exit in the middle of it aborts (SIGABRT)
            warm_up.join(WARM_UP_JOIN_S)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0


def exit_now(code: int) -> NoReturn:
    """End a stopped server's process without the interpreter's teardown of torch and Gradio (~1.5 s of the
    1.8 s a SIGTERM took to exit: ``docker stop`` allows 3 s in the tests). The exit handlers still run (Gradio's
    cache sweep, temporary folders), and stdio is flushed; only module teardown and final GC are skipped."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):   # a closed pipe has nothing left to lose
            pass
    os._exit(code)
