"""schemathesis against a live `axl serve`: requests generated from its own OpenAPI schema, valid and
invalid, for every endpoint; no 5xx, every error OpenAI-shaped, and the server still serves afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from multiscale_transformer.serving.app import create_app

from .conftest import make_model
from .live import live_server

# Bounded: at most 80 requests per endpoint and mode; a small max_tokens limit keeps each one short.
EXAMPLES = 80


@pytest.fixture(scope="module")
def live_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    model_dir = make_model("tiny").save_pretrained(tmp_path_factory.mktemp("fuzz") / "tiny")
    app = create_app(model_dir, docs=True, max_batch=4, max_tokens_limit=16, default_max_tokens=8)
    with live_server(app) as url:
        yield url


@pytest.fixture(scope="module")
def api_schema(live_url: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{live_url}/openapi.json")


def check_response(case: schemathesis.Case, live_url: str) -> None:
    response = case.call(base_url=live_url, timeout=60)
    assert response.status_code < 500, (case.as_curl_command(), response.text[:500])
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"], response.text[:500]


# schemathesis's pytest plugin (`from_fixture`) does not run under pytest 9, and a module-level
# schema would need the server at collection time: so one test walks the operations itself.
def test_generated_requests_get_no_server_error(api_schema: schemathesis.BaseSchema, live_url: str) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {op.path for op in operations} >= {
        "/v1/completions",
        "/v1/chat/completions",
        "/v1/fim/completions",
        "/infill",
        "/completion",
        "/v1/models",
        "/health",
    }
    for operation in operations:
        for mode in GenerationMode:

            @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                check_response(case, live_url)

            try:
                run()
            except Unsatisfiable:  # a GET whose inputs are free strings has no invalid request to generate
                assert mode is GenerationMode.NEGATIVE and operation.method.upper() == "GET"


def test_the_server_still_serves_after_fuzzing(live_url: str) -> None:
    assert httpx.get(f"{live_url}/health").json()["status"] == "ok"
    ok = httpx.post(f"{live_url}/v1/completions", json={"prompt": "def f():", "max_tokens": 4}, timeout=30)
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] >= 1


def test_the_schema_describes_every_generation_body(api_schema: schemathesis.BaseSchema) -> None:
    raw = api_schema.raw_schema
    for path in ("/v1/completions", "/v1/chat/completions"):
        body = raw["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body["type"] == "object" and body["properties"]
