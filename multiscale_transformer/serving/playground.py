"""GET /: the playground, one self-contained page (static/playground.html) shipped in the package.

It needs nothing but this server: no CDN, no build step. Its Content-Security-Policy lets it
connect to this origin only, so the browser itself enforces that the page talks to no one else.
The page is open (it holds no data); with `--api-key` it asks for the key and sends it on every call.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fastapi.responses import HTMLResponse

CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@cache
def page() -> str:
    return files("multiscale_transformer.serving").joinpath("static/playground.html").read_text(encoding="utf-8")


async def playground() -> HTMLResponse:
    return HTMLResponse(page(), headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"})
