"""A real uvicorn server in a background thread on a free 127.0.0.1 port, for the tests."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import torch
from fastapi import FastAPI

from multiscale_transformer.serving.http import bind_socket, make_server


@contextmanager
def live_server(app: FastAPI, ready_timeout_s: float = 60.0, wait_ready: bool = True) -> Iterator[str]:
    """Serve `app` until the block ends; yields the base URL once /health answers (200 if wait_ready)."""
    sock = bind_socket("127.0.0.1", 0)  # as `axl serve` binds
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


def module_server(app: FastAPI) -> Iterator[str]:
    """The body of a module-scoped server fixture (`yield from module_server(app)`): torch on two
    threads, as the test machines have two cores, and the base URL until the module's tests end."""
    torch.set_num_threads(2)
    with live_server(app) as url:
        yield url


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


# The OpenAI API's error type for each status our server answers with (written here, apart from
# serving/errors.py, so that a wrong table there fails the tests).
OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


def assert_openai_error(
    response: httpx.Response, status: int, param: str | None = None, code: str | None = None
) -> dict[str, object]:
    """The response is `status` with an OpenAI-shaped body: {"error": {message, type, param, code}}."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert error["type"] == OPENAI_TYPES[status], error
    assert error["param"] is None or isinstance(error["param"], str), error
    assert error["code"] is None or isinstance(error["code"], str), error
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error
