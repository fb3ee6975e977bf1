"""Local-origin protection: which Host and Origin a request may carry, checked before any work.

A server on 127.0.0.1 is reachable from every web page its user opens. Without CORS a page cannot
read the answer, but a "simple" cross-origin POST (`Content-Type: text/plain`) is still sent and
would be executed, and DNS rebinding points a hostile name at 127.0.0.1 so that the page becomes
same-origin. Hence two checks, in this order, before routing:

- Host: the request must name this server: a loopback name, the address it was bound to, or a
  name given with `--allowed-host` (`*` accepts any, as a server bound to all interfaces does).
- Origin: a request that carries one must come from this server itself (the Origin's host:port is
  the Host header) or from an origin given with `--cors-origin`; `Origin: null` is refused.

Both answer with OpenAI-shaped errors (400 / 403). Allowed cross-origin requests get CORS headers
from Starlette's CORSMiddleware, which runs inside this one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Receive, Scope, Send

from multiscale_transformer.serving.errors import error_response
from multiscale_transformer.serving.middleware import HTTPMiddleware

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")


def host_name(authority: str) -> str | None:
    """The host part of a Host header or an origin's authority, lower-case, without port or brackets."""
    try:
        return urlsplit(f"//{authority}").hostname
    except ValueError:
        return None


def _is_loopback(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class OriginPolicy:
    """allowed_hosts: host names accepted in the Host header (None: any); cors_origins: exact origins."""

    allowed_hosts: frozenset[str] | None
    cors_origins: frozenset[str]

    @classmethod
    def for_bind(cls, host: str, allowed_hosts: Iterable[str] = (), cors_origins: Iterable[str] = ()) -> OriginPolicy:
        """Loopback names and the bound address; any host when bound to all interfaces or given `*`."""
        extra = [h.strip().lower() for h in allowed_hosts if h.strip()]
        if "*" in extra or host in WILDCARD_BINDS:
            hosts = None
        else:
            bound = host_name(host if ":" not in host else f"[{host}]") or host.lower()
            hosts = frozenset([*LOOPBACK_NAMES, bound, *extra])
        return cls(hosts, frozenset(o.strip().rstrip("/").lower() for o in cors_origins if o.strip()))

    def host_ok(self, host_header: str) -> bool:
        name = host_name(host_header)
        if name is None:
            return False
        if self.allowed_hosts is None:
            return True
        return name in self.allowed_hosts or (_is_loopback(name) and any(map(_is_loopback, self.allowed_hosts)))

    def origin_ok(self, origin: str, host_header: str) -> bool:
        origin = origin.strip().rstrip("/").lower()
        if origin in self.cors_origins or "*" in self.cors_origins:
            return True
        parts = urlsplit(origin) if origin != "null" else None
        return parts is not None and parts.scheme in ("http", "https") and parts.netloc == host_header.lower()


class OriginGuard(HTTPMiddleware):
    """ASGI middleware that refuses requests with a foreign Host or Origin before anything else runs."""

    def __init__(self, app: ASGIApp, policy: OriginPolicy) -> None:
        super().__init__(app)
        self.policy = policy

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if not self.policy.host_ok(host):
            message = (
                f"the Host header {host!r} does not name this server; to serve it under that name, "
                "start axl serve with --allowed-host NAME"
            )
            await error_response(400, message, code="host_not_allowed")(scope, receive, send)
            return
        origin = headers.get("origin")
        if origin is not None and not self.policy.origin_ok(origin, host):
            message = (
                f"cross-origin request from {origin!r} refused; to allow that page, "
                "start axl serve with --cors-origin ORIGIN"
            )
            await error_response(403, message, code="origin_not_allowed")(scope, receive, send)
            return
        await self.app(scope, receive, send)
