"""The HTTP side of `axl serve`: binding the socket, uvicorn's settings, and a header read timeout.

uvicorn times out idle keep-alive connections but not a request whose headers never finish: a
client that opens a connection and sends half a request line holds it open for good (slowloris).
`HeaderTimeoutH11Protocol` closes a connection whose request headers are not complete within
`header_timeout_s` of the connection (or of the previous response); the body has its own limit
in `read_body`. Binding the socket here, before uvicorn starts, turns a bad address or a port in use
into one clear line instead of uvicorn's log and exit code.
"""

from __future__ import annotations

import asyncio
import errno
import signal
import socket
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from multiscale_transformer.errors import UserError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from multiscale_transformer.serving.common import ServerSettings


class HeaderTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request headers take too long to arrive."""

    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()  # the next request on this connection gets the same limit

    def connection_lost(self, exc: Exception | None) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_timeout)

    def _header_timeout(self) -> None:
        # IDLE: h11 is still waiting for the request line and headers (not for a body, not responding).
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or a UserError naming what is wrong with the address."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise UserError(f"--host {host!r} is not an address this machine can listen on ({exc})") from None
    family, kind, proto, _, address = infos[0]
    # proto IPPROTO_TCP (not 0): asyncio sets TCP_NODELAY only on accepted sockets whose proto says
    # TCP, and without it Nagle's algorithm holds a response's last segment until the client's
    # delayed ACK, about 40 ms on every request after the first on a kept-alive connection.
    sock = socket.socket(family, kind, proto or socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is already in use; stop the other server or pass --port") from None
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class GracefulServer(uvicorn.Server):
    """uvicorn's server, shutting down as an API server behind a supervisor should.

    On SIGTERM (or the first Ctrl-C) the engine stops admitting: new completions and the queued ones
    get 503 (a queued stream, whose 200 is already sent, an error event and `[DONE]`), while active
    streams run on. Shortly before `--shutdown-timeout` runs out, the engine ends the streams still
    running the same way, so that every client learns why its stream stopped instead of seeing the
    connection drop; uvicorn then finds no connection left to wait for. After SIGTERM the process
    exits 0 instead of dying of the signal uvicorn would raise again (a second Ctrl-C still forces).
    """

    def __init__(self, config: uvicorn.Config, app: FastAPI, shutdown_timeout_s: float) -> None:
        super().__init__(config)
        self.app = app
        self.shutdown_timeout_s = shutdown_timeout_s

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            self.drain()
        if sig == signal.SIGTERM:
            self.should_exit = True
            return
        super().handle_exit(sig, frame)

    def drain(self) -> None:
        engine = getattr(self.app.state, "engine", None)
        if engine is None or not engine.alive:
            return
        engine.drain()
        # uvicorn cancels what is still running when the timeout ends: end the streams a little before.
        grace = max(0.0, self.shutdown_timeout_s - min(1.0, self.shutdown_timeout_s / 2))
        timer = threading.Timer(grace, engine.end_active)
        timer.daemon = True
        timer.start()


def make_server(app: FastAPI, settings: ServerSettings, log_level: str = "warning", **config: Any) -> uvicorn.Server:
    """A uvicorn server for `app` with the settings' timeouts (run it with `.run(sockets=[bind_socket(...)])`)."""
    protocol = type("AxlH11Protocol", (HeaderTimeoutH11Protocol,), {"header_timeout_s": settings.header_timeout_s})
    return GracefulServer(
        uvicorn.Config(
            app,
            http=protocol,
            log_level=log_level,
            lifespan="on",
            timeout_keep_alive=settings.keep_alive_s,
            timeout_graceful_shutdown=settings.shutdown_timeout_s,
            h11_max_incomplete_event_size=settings.max_header_bytes,
            **config,
        ),
        app,
        settings.shutdown_timeout_s,
    )
