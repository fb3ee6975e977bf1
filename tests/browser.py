"""Headless Chromium for the page tests and the README screenshots: Debian's binary, through Playwright."""

from __future__ import annotations

import os
import shutil

# As the machine's notes prescribe: without the background-networking flags Chromium tries to
# reach Google's hosts at every start, which this closed network refuses.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


INSTALL_HINT = "apt-get install -y chromium (or AXL_CHROMIUM=/path/to/chromium; -m 'not browser' leaves them out)"


def chromium_binary() -> str | None:
    """$AXL_CHROMIUM, else `chromium` (Debian's package) or `chromium-browser` on the PATH."""
    return os.environ.get("AXL_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
