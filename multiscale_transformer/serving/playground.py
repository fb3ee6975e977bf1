"""GET /: the playground, a page with its script, style and icon shipped in the package (static/).

It needs nothing but this server: no CDN, no build step. Its Content-Security-Policy allows scripts
and styles from this origin's files only (no inline code, so an injected `<script>` or `onclick`
cannot run) and connections to this origin only, so the browser itself enforces that the page
talks to no one else. The page and its files are open (they hold no data); with `--api-key` the
page asks for the key and sends it on every call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import cache
from importlib.resources import files

from fastapi import FastAPI
from fastapi.responses import Response

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
# URL path -> (file in static/, media type). A fixed table: no path from a request reaches the disk.
ASSETS = {
    "/": ("playground.html", "text/html; charset=utf-8"),
    "/static/playground.js": ("playground.js", "text/javascript; charset=utf-8"),
    "/static/playground.css": ("playground.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
    "/favicon.ico": ("favicon.svg", "image/svg+xml"),  # what browsers ask for by default
}


@cache
def asset(name: str) -> bytes:
    return files("multiscale_transformer.serving").joinpath(f"static/{name}").read_bytes()


def add_playground(app: FastAPI) -> None:
    """The page and its files, each with the policy above; no-cache, so a new version shows at once."""
    for path, (name, media_type) in ASSETS.items():
        app.add_api_route(path, _server(name, media_type), methods=["GET"], include_in_schema=False)


def _server(name: str, media_type: str) -> Callable[[], Awaitable[Response]]:
    """An endpoint without parameters (nothing in a request can choose the file) for one asset."""
    headers = {"Content-Security-Policy": CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}

    async def serve() -> Response:
        return Response(asset(name), media_type=media_type, headers=headers)

    return serve
