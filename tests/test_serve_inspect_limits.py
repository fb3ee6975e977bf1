"""POST /v1/inspect cannot be used to tie up the server: cost and size caps (400), a bounded queue (429),
windows run between decoding steps, and an abandoned inspection stops (issue 29's red-team cases)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from multiscale_transformer.serving import inspection
from multiscale_transformer.serving.app import create_app
from tests.conftest import make_model
from tests.live import assert_openai_error, live_server

LIMIT = 4096  # --max-inspect-bytes of the app below; the model's context is 64


@pytest.fixture(scope="module")
def base() -> Iterator[str]:
    app = create_app(make_model("tiny", max_seq_len=64), name="inspect-limits", max_inspect_bytes=LIMIT)
    with live_server(app) as url:
        yield url


def test_stride_1_on_a_long_text_is_refused_and_on_a_short_one_served(base: str) -> None:
    costly = httpx.post(f"{base}/v1/inspect", json={"text": "x" * LIMIT, "stride": 1}, timeout=60)
    error = assert_openai_error(costly, 400, "stride", "inspection_too_costly")
    assert str(inspection.INSPECT_COST * LIMIT) in str(error["message"])
    short = httpx.post(f"{base}/v1/inspect", json={"text": "def f(x):\n    return x\n", "stride": 1}, timeout=60)
    assert short.status_code == 200 and short.json()["stride"] == 1
    default = httpx.post(f"{base}/v1/inspect", json={"text": "x" * LIMIT, "top_logprobs": 5}, timeout=60)
    assert default.status_code == 200 and len(default.json()["tokens"]) == LIMIT  # the playground's request


def test_alternatives_are_bounded(base: str) -> None:
    big = httpx.post(f"{base}/v1/inspect", json={"text": "x" * LIMIT, "top_logprobs": 20}, timeout=60)
    assert_openai_error(big, 400, "top_logprobs")
    small = httpx.post(f"{base}/v1/inspect", json={"text": "x" * 100, "top_logprobs": 20}, timeout=60)
    assert small.status_code == 200 and len(small.json()["tokens"][0]["top_logprobs"]) == 20


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[threading.Event, list[int]]]:
    """Every inspection window waits for the event before it is computed; the list counts windows."""
    release, computed = threading.Event(), []
    real = inspection.inspect_window

    def waiting_window(*args: object) -> object:
        release.wait(timeout=60)
        computed.append(1)
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(inspection, "inspect_window", waiting_window)
    yield release, computed
    release.set()


def post_in_background(url: str, body: dict, results: list, timeout: float = 60) -> threading.Thread:
    def run() -> None:
        try:
            results.append(httpx.post(url, json=body, timeout=timeout).status_code)
        except httpx.TimeoutException:
            results.append("gave up")

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def wait_until(condition: object, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.02)
    assert condition(), "timed out"  # type: ignore[operator]


def test_waiting_inspections_are_bounded_with_429(base: str, held: tuple[threading.Event, list[int]]) -> None:
    release, _ = held
    results: list = []
    threads = [
        post_in_background(f"{base}/v1/inspect", {"text": "abc"}, results) for _ in range(inspection.INSPECT_QUEUE)
    ]
    time.sleep(0.5)  # all of them read and counted: one holds the lock, the rest wait for it
    refused = httpx.post(f"{base}/v1/inspect", json={"text": "abc"}, timeout=60)
    assert_openai_error(refused, 429)
    assert httpx.get(f"{base}/health").status_code == 200  # (the held window holds the scheduler, not the server)
    release.set()
    for t in threads:
        t.join(timeout=60)
    assert results == [200] * inspection.INSPECT_QUEUE
    ok = httpx.post(f"{base}/v1/completions", json={"prompt": "x", "max_tokens": 3}, timeout=60)
    assert ok.status_code == 200


def test_an_abandoned_inspection_stops_computing(base: str, held: tuple[threading.Event, list[int]]) -> None:
    release, computed = held
    results: list = []
    body = {"text": "y" * LIMIT}  # 128 windows of the 64-byte context
    post_in_background(f"{base}/v1/inspect", body, results, timeout=1.0).join()  # the client gives up after 1 s
    assert results == ["gave up"]
    release.set()
    wait_until(lambda: httpx.post(f"{base}/v1/inspect", json={"text": "z"}, timeout=60).status_code == 200)
    assert len(computed) <= 3  # the window in progress when it left, and this last request's
