"""Concurrency on a live `axl serve`: simultaneous clients get their own answers, a full queue says 429,
and a client that goes away frees its row at once."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from multiscale_transformer.generation.generate import TextStream
from multiscale_transformer.generation.sampling import SamplingParams
from multiscale_transformer.model.model import MultiScaleTransformer
from multiscale_transformer.serving.app import create_app

from .conftest import make_model
from .live import assert_openai_error, live_server

LONG = 50_000  # bytes: a generation that would run far longer than any test waits
NO_EOS = {"logit_bias": {"257": -100}}  # a random model samples EOS every few hundred bytes


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model("tiny").save_pretrained(tmp_path_factory.mktemp("serve-conc") / "tiny")


@pytest.fixture(scope="module")
def busy_url(model_dir: Path) -> Iterator[str]:
    """Fewer rows than clients, so that requests also wait in the queue and join running batches."""
    with live_server(create_app(model_dir, max_batch=4, max_queue=12)) as url:
        yield url


@pytest.fixture(scope="module")
def small_url(model_dir: Path) -> Iterator[str]:
    with live_server(create_app(model_dir, max_batch=1, max_queue=1, max_tokens_limit=LONG)) as url:
        yield url


def test_sixteen_simultaneous_clients_get_their_own_answers(busy_url: str, model_dir: Path) -> None:
    client = openai.OpenAI(base_url=f"{busy_url}/v1", api_key="none", max_retries=0, timeout=120)

    def ask(i: int) -> str:
        kwargs = {"temperature": 0} if i % 3 == 0 else {"seed": 100 + i}
        prompt = f"def f{i}(x):"
        if i % 2:
            chunks = client.completions.create(model="m", prompt=prompt, max_tokens=16, stream=True, **kwargs)
            return "".join(c.choices[0].text for c in chunks if c.choices)
        return client.completions.create(model="m", prompt=prompt, max_tokens=16, **kwargs).choices[0].text

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(16)))
    model = MultiScaleTransformer.from_pretrained(model_dir).eval()
    for i, answer in enumerate(answers):
        params = SamplingParams(temperature=0 if i % 3 == 0 else 0.8)
        alone = TextStream(model, list(f"def f{i}(x):".encode()), 16, params, seed=None if i % 3 == 0 else 100 + i)
        assert answer == b"".join(alone).decode("utf-8", "replace"), f"client {i}"
    seeded = [a for i, a in enumerate(answers) if i % 3]
    assert len(set(seeded)) == len(seeded)


def wait_idle(url: str, timeout_s: float = 5.0) -> float:
    """Seconds until the server has no active or queued completion."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        stats = httpx.get(f"{url}/health").json()
        if stats["active"] == 0 and stats["queued"] == 0:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"the server still works for gone clients after {timeout_s} s: {stats}")


def test_a_streaming_client_that_disconnects_frees_its_row(small_url: str) -> None:
    body = {"prompt": "while True:", "max_tokens": LONG, "stream": True, **NO_EOS}
    with httpx.stream("POST", f"{small_url}/v1/completions", json=body) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        assert httpx.get(f"{small_url}/health").json()["active"] == 1
    wait_idle(small_url)


def test_a_waiting_client_that_disconnects_frees_its_row(small_url: str) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{small_url}/v1/completions", json={"prompt": "x", "max_tokens": LONG, **NO_EOS}, timeout=0.5)
    wait_idle(small_url)


def test_a_full_queue_answers_429(small_url: str) -> None:
    body = {"prompt": "for i in", "max_tokens": LONG, "stream": True, **NO_EOS}
    with httpx.stream("POST", f"{small_url}/v1/completions", json=body) as running:
        lines = running.iter_lines()  # kept: dropping the iterator would close the connection
        assert next(lines).startswith("data: ")
        with httpx.stream(
            "POST", f"{small_url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "x"}], **body}
        ) as queued:
            assert queued.status_code == 200  # accepted; its first chunk comes when a row frees
            refused = httpx.post(f"{small_url}/v1/completions", json={"prompt": "x", "max_tokens": 1})
            assert_openai_error(refused, 429)
            client = openai.OpenAI(base_url=f"{small_url}/v1", api_key="none", max_retries=0)
            with pytest.raises(openai.RateLimitError):
                client.completions.create(model="m", prompt="x", max_tokens=1)
    wait_idle(small_url)
    assert httpx.post(f"{small_url}/v1/completions", json={"prompt": "x", "max_tokens": 1}).status_code == 200
