"""Regenerate the README's playground screenshots with the bundled model, in Debian's Chromium.

    python docs/images/playground.py        # writes docs/images/playground-{complete,inspect}.png

Needs the [test] extra (Playwright) and a chromium binary (Debian: apt-get install chromium).
"""

from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

sys.path.insert(0, str(Path(__file__).parents[2]))
from multiscale_transformer.pretrained import bundled_model_dir
from multiscale_transformer.serving.app import create_app
from tests.browser import FLAGS, chromium_binary
from tests.live import live_server

OUT = Path(__file__).parent
PROMPT = "def fibonacci(n):\n"
CODE = '''import os


def read_lines(path):
    """Return the lines of a file, without their newlines."""
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\\n") for line in f]


for name in os.listdir("."):
    if name.endswith(".py"):
        print(name, len(read_lines(name)))
'''


def main() -> None:
    chromium = chromium_binary()
    if chromium is None:
        raise SystemExit("no chromium binary: apt-get install chromium")
    with live_server(create_app(bundled_model_dir(), name="axl-mini")) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1280, "height": 820})
        page.goto(f"{base}/")
        page.wait_for_function("() => document.getElementById('model-info').textContent.includes('parameters')")
        page.fill("#editor", PROMPT)
        page.fill("#seed", "1")
        page.fill("#temperature", "0.5")
        page.fill("#max_tokens", "160")
        page.click("#run")
        page.wait_for_function("() => document.getElementById('output').dataset.done === 'true'", timeout=120_000)
        page.screenshot(path=str(OUT / "playground-complete.png"))
        page.click("#mode-inspect")
        page.fill("#editor", CODE)
        page.click("#run")
        page.wait_for_selector("#bits-per-byte")
        page.hover("#inspect-view .byte >> nth=130")
        page.screenshot(path=str(OUT / "playground-inspect.png"))
        browser.close()
    print(f"wrote {OUT}/playground-complete.png and playground-inspect.png")


if __name__ == "__main__":
    main()
