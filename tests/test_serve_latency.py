"""Requests on one kept-alive connection are answered as fast as the first (TCP_NODELAY on accepted sockets).

Without it, Nagle's algorithm holds the last segment of each response until the client's delayed ACK:
about 40 ms on every request after the first, on the connection an editor keeps open.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from multiscale_transformer.serving.app import create_app
from multiscale_transformer.serving.http import bind_socket

from .conftest import make_model
from .live import live_server

DELAYED_ACK_S = 0.040  # Linux's minimum delayed ACK: what a held segment waits for


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with live_server(create_app(make_model("tiny"), max_batch=2)) as base:
        yield base


def test_the_listening_socket_is_tcp_so_accepted_connections_get_nodelay() -> None:
    sock = bind_socket("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("GET", "/health", None), ("POST", "/tokenize", {"prompt": "ab"}), ("POST", "/completion", {"prompt": "a"})],
)
def test_requests_after_the_first_on_a_kept_alive_connection_are_not_delayed(
    url: str, method: str, path: str, body: dict | None
) -> None:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    seconds = []
    try:
        for _ in range(6):
            start = time.perf_counter()
            payload = None if body is None else json.dumps({**body, "n_predict": 1})
            connection.request(method, path, body=payload, headers={"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            assert response.status == 200
            seconds.append(time.perf_counter() - start)
    finally:
        connection.close()
    # The fastest of requests 2-6: any load on the machine only adds, a held segment adds 40 ms to each.
    assert min(seconds[1:]) < DELAYED_ACK_S / 2, seconds
