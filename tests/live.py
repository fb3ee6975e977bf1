"""A real uvicorn server in a background thread on a free 127.0.0.1 port, for the tests."""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI

from multiscale_transformer.serving.http import make_server


@contextmanager
def live_server(app: FastAPI, ready_timeout_s: float = 60.0, wait_ready: bool = True) -> Iterator[str]:
    """Serve `app` until the block ends; yields the base URL once /health answers (200 if wait_ready)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = make_server(app, app.state.settings)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="axl-uvicorn", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, ready_timeout_s, thread, wait_ready)
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def _wait_ready(base: str, timeout_s: float, thread: threading.Thread, need_200: bool) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError("the server thread exited during startup")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except urllib.error.HTTPError:
            if not need_200:
                return  # it answers, if only with 503
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass  # not listening yet
        time.sleep(0.05)
    raise TimeoutError(f"the server at {base} was not ready within {timeout_s} s")
