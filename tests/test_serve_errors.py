"""Bad input against a live `axl serve`: OpenAI-shaped 4xx errors, never a 500, and the server keeps serving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from multiscale_transformer.serving.app import create_app

from .conftest import make_model
from .live import assert_openai_error, live_server

KEY = "k-errors"
LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model("tiny").save_pretrained(tmp_path_factory.mktemp("serve-errors") / "tiny")


@pytest.fixture(scope="module")
def http(model_dir: Path) -> Iterator[httpx.Client]:
    app = create_app(model_dir, api_key=KEY, max_batch=2, max_tokens_limit=64, max_body_bytes=LIMIT)
    with live_server(app) as url, httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}) as client:
        yield client


def assert_alive(http: httpx.Client) -> None:
    assert http.get("/health").status_code == 200
    ok = http.post("/v1/completions", json={"prompt": "ok", "max_tokens": 2})
    assert ok.status_code == 200 and len(ok.json()["choices"]) == 1


BAD_COMPLETIONS: list[tuple[object, str | None]] = [
    ({"prompt": 5}, "prompt"),
    ({"prompt": "x", "max_tokens": "5"}, "max_tokens"),
    ({"prompt": "x", "max_tokens": -1}, "max_tokens"),
    ({"prompt": "x", "max_tokens": 10**30}, "max_tokens"),
    ({"prompt": "x", "max_tokens": 65}, "max_tokens"),  # above --max-tokens-limit
    ({"prompt": "x", "temperature": "hot"}, "temperature"),
    ({"prompt": "x", "temperature": -0.5}, "temperature"),
    ({"prompt": "x", "top_p": 0}, "top_p"),
    ({"prompt": "x", "top_k": -3}, "top_k"),
    ({"prompt": "x", "n": 0}, "n"),
    ({"prompt": "x", "n": 1000}, "n"),
    ({"prompt": "x", "stream": "yes"}, "stream"),
    ({"prompt": "x", "logprobs": 50}, "logprobs"),
    ({"prompt": "x", "seed": 1.5}, "seed"),
    ({"prompt": "x", "stop": ["a"] * 40}, "stop"),
    ({"prompt": "x", "stop": 7}, "stop"),
    ({"prompt": "x", "logit_bias": {"abc": 1}}, "logit_bias"),
    ({"prompt": "x", "presence_penalty": 9}, "presence_penalty"),
    ({"prompt": [300, 1]}, None),
    ({"prompt": ""}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": ["ok", ""]}, "prompt"),
    ({"prompt": "x", "suffix": "y"}, "suffix"),
    ({"prompt": "x", "best_of": 3}, "best_of"),
    ({}, "prompt"),
    ([1, 2], None),
    ("just a string", None),
]


@pytest.mark.parametrize(("body", "param"), BAD_COMPLETIONS)
def test_bad_completion_requests_are_400(http: httpx.Client, body: object, param: str | None) -> None:
    assert_openai_error(http.post("/v1/completions", content=json.dumps(body)), 400, param)


@pytest.mark.parametrize(
    "body",
    [
        {"messages": []},
        {"messages": [{"role": "robot", "content": "hi"}]},
        {"messages": [{"role": "user", "content": 5}]},
        {"messages": "hello"},
        {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 100},
        {"messages": [{"role": "user", "content": "hi"}], "top_logprobs": 99, "logprobs": True},
    ],
)
def test_bad_chat_requests_are_400(http: httpx.Client, body: object) -> None:
    assert_openai_error(http.post("/v1/chat/completions", content=json.dumps(body)), 400)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"prompt": ',
        b"not json at all",
        b'{"prompt": "\xff\xfe"}',
        b"\xff\xfe\x00",
        b"",
        b'{"prompt": "x", "temperature": NaN}',
    ],
)
def test_malformed_bodies_are_400(http: httpx.Client, raw: bytes) -> None:
    assert_openai_error(http.post("/v1/completions", content=raw), 400)
    assert_openai_error(http.post("/v1/chat/completions", content=raw), 400)


def test_huge_bodies_are_413_with_or_without_a_length(http: httpx.Client) -> None:
    huge = json.dumps({"prompt": "x" * (2 * LIMIT)}).encode()
    assert_openai_error(http.post("/v1/completions", content=huge), 413)

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
        for i in range(0, len(huge), 8192):
            yield huge[i : i + 8192]

    assert_openai_error(http.post("/v1/completions", content=chunked()), 413)
    assert_alive(http)


def test_long_prompts_keep_their_last_bytes(http: httpx.Client) -> None:
    prompt = "a" * 5000 + "tail"
    out = http.post("/v1/completions", json={"prompt": prompt, "max_tokens": 1, "echo": True}).json()
    assert out["usage"]["prompt_tokens"] == 128  # the tiny preset's context
    assert out["choices"][0]["text"].startswith("a" * 124 + "tail")


def test_unknown_fields_and_nulls_are_accepted(http: httpx.Client) -> None:
    body = {"prompt": "x", "max_tokens": 2, "frobnicate": {"a": [1]}, "temperature": None, "stop": None, "user": "u"}
    assert http.post("/v1/completions", json=body).status_code == 200


def test_auth_not_found_and_method_errors(http: httpx.Client) -> None:
    body = {"prompt": "x", "max_tokens": 1}
    assert_openai_error(http.post("/v1/completions", json=body, headers={"Authorization": ""}), 401)
    assert_openai_error(http.post("/v1/completions", json=body, headers={"Authorization": f"Basic {KEY}"}), 401)
    assert_openai_error(http.post("/v1/completions", json=body, headers={"Authorization": "Bearer k-error"}), 401)
    assert_openai_error(http.get("/v1/nothing-here"), 404)
    assert_openai_error(http.get("/v1/models/other-model"), 404, "model")
    assert_openai_error(http.get("/v1/completions"), 405)
    assert http.get("/health", headers={"Authorization": ""}).status_code == 200  # health needs no key


def test_the_server_survived_everything(http: httpx.Client) -> None:
    assert_alive(http)


def test_health_is_503_until_a_model_is_ready(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with live_server(create_app(broken), wait_ready=False) as url:
        health = httpx.get(f"{url}/health")
        assert health.status_code == 503 and health.json()["status"] in {"loading", "error"}
        assert_openai_error(httpx.post(f"{url}/v1/completions", json={"prompt": "x"}), 503)
