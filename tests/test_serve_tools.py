"""The endpoints tools and the playground use, against a live server: /tokenize, /detokenize,
/tokenizer_info, /props, /v1/inspect, /metrics, CORS on and off, the API key and the page itself."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import httpx
import pytest
import torch

from multiscale_transformer.evaluation.bpb import score_documents
from multiscale_transformer.evaluation.inspect import inspect_bytes, recording_cross_attention, scale_shares
from multiscale_transformer.model.config import ModelConfig
from multiscale_transformer.model.model import MultiScaleTransformer
from multiscale_transformer.serving.app import create_app
from multiscale_transformer.training.data import Document
from tests.conftest import make_model
from tests.live import assert_openai_error, live_server

SNIPPET = "def área(r):\n    return 3.14159 * r * r  # π r²\n" * 6  # non-ASCII, longer than the context


@pytest.fixture(scope="module")
def model() -> MultiScaleTransformer:
    return make_model("tiny", seed=3, max_seq_len=64, fim=True)


@pytest.fixture(scope="module")
def http(model: MultiScaleTransformer) -> Iterator[httpx.Client]:
    torch.set_num_threads(2)
    app = create_app(model, name="axl-tools", metrics=True, max_inspect_bytes=4096)
    with live_server(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        yield client


def test_tokenize_detokenize_round_trip(http: httpx.Client) -> None:
    text = "x = 'é'<|endoftext|>y"
    ids = http.post("/tokenize", json={"prompt": text, "add_special_tokens": False}).json()["tokens"]
    assert ids == [*b"x = '\xc3\xa9'", 257, *b"y"]  # special-token text is its id, as in HF tokenizers
    with_start = http.post("/tokenize", json={"prompt": "ab"}).json()
    assert with_start["tokens"] == [257, 97, 98] and with_start["count"] == 3 and with_start["max_model_len"] == 64
    assert http.post("/tokenize", json={"content": "ab", "add_special": False}).json()["tokens"] == [97, 98]
    back = http.post("/detokenize", json={"tokens": ids}).json()
    assert back["prompt"] == back["content"] == text


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/tokenize", {}),
        ("/tokenize", {"prompt": "a", "content": "b"}),
        ("/tokenize", {"prompt": 5}),
        ("/detokenize", {"tokens": [258]}),
        ("/detokenize", {"tokens": "abc"}),
        ("/v1/inspect", {"text": ""}),
        ("/v1/inspect", {"text": "x" * 5000}),
        ("/v1/inspect", {"text": "x", "top_logprobs": 21}),
        ("/v1/inspect", {"text": "x", "stride": 65}),
    ],
)
def test_bad_requests_are_openai_shaped_400s(http: httpx.Client, path: str, body: dict) -> None:
    assert_openai_error(http.post(path, json=body), 400)
    assert http.get("/health").status_code == 200


def test_tokenizer_info_is_what_lm_eval_reads(http: httpx.Client) -> None:
    info = http.get("/tokenizer_info").json()
    assert info["eos_token"] == "<|endoftext|>" and info["eos_token_id"] == 257
    assert info["bos_token_id"] == 256 and info["model_max_length"] == 64 and info["vocab_size"] == 258
    assert info["fim_token_ids"] == {"prefix": 0xF8, "suffix": 0xF9, "middle": 0xFA}
    # lm-eval finds the EOS id by tokenizing the eos_token text without special tokens
    assert http.post("/tokenize", json={"prompt": info["eos_token"], "add_special_tokens": False}).json()["tokens"] == [
        257
    ]


def test_props_and_models_report_the_model(http: httpx.Client, model: MultiScaleTransformer) -> None:
    props = http.get("/props").json()
    assert props["n_ctx"] == 64 and props["parameters"] == model.num_parameters() and props["fim"] is True
    assert props["infill_max_tokens"] == 16  # a quarter of the context
    assert props["scales"] == [1, 2, 4] and props["config"]["d_model"] == model.config.d_model
    assert props["generation_defaults"]["temperature"] == 0.8 and props["generation_defaults"]["top_k"] == 40
    assert props["default_generation_settings"]["params"]["repeat_penalty"] == 1.1
    card = http.get("/v1/models").json()["data"][0]
    assert card["context_length"] == card["max_model_len"] == 64


def test_inspect_scores_like_axl_eval(http: httpx.Client, model: MultiScaleTransformer) -> None:
    data = SNIPPET.encode()
    result = http.post("/v1/inspect", json={"text": SNIPPET, "top_logprobs": 3}).json()
    assert result["bytes"] == len(data) == len(result["tokens"]) and result["scales"] == [1, 2, 4]
    assert [t["id"] for t in result["tokens"]] == list(data)
    for t in result["tokens"]:
        assert len(t["top_logprobs"]) == 3 and len(t["gates"]) == len(t["shares"]) == 3
        assert math.isclose(sum(t["gates"]), 1.0, abs_tol=1e-3) and math.isclose(sum(t["shares"]), 1.0, abs_tol=1e-3)
        assert t["top_logprobs"][0]["logprob"] >= t["logprob"] - 1e-3  # the best alternative is at least as likely
    # the same protocol as `axl eval` (sliding window, EOS before the text): the same bits per byte
    expected = score_documents(model, 64, [Document("snippet", data)], stride=32).bits_per_byte
    assert result["bits_per_byte"] == pytest.approx(expected, rel=1e-4)
    assert result["gzip_bits_per_byte"] > 0
    # the gates are the fusion's: a second scale carries weight somewhere
    assert max(t["gates"][1] for t in result["tokens"]) > 0.01


def test_scale_shares_show_cross_attention_where_the_gate_shows_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bundled layout (cross blocks into the bytes) with its trained gate's saturation (all weight on
    the bytes): the fusion gate says 1x 100%, the shares see what the 2x and 4x scales wrote through
    cross-attention."""
    model = make_model("tiny", cross_pairs=[[1, 0], [2, 0]], coarse_input="fine", n_layers_per_scale=2)
    monkeypatch.setattr(model, "gates", lambda ups, *_: torch.tensor([1.0, 0.0, 0.0]).expand(*ups[0].shape[:-1], 3))
    report = inspect_bytes(model, b"def f(x):\n    return x * 2\n", top=0)
    for b in report.bytes:
        assert b.gates == [1.0, 0.0, 0.0] and sum(b.shares) == pytest.approx(1.0, abs=1e-5)
        assert b.shares[1] > 0.01 and b.shares[2] > 0.01  # what the cross blocks brought
    trace = model.forward_with_scales(torch.tensor([[257, *b"abc"]]))
    with recording_cross_attention(model) as cross:
        again = model.forward_with_scales(torch.tensor([[257, *b"abc"]]))
    torch.testing.assert_close(again.logits, trace.logits)  # recording changes nothing
    assert sorted(cross) == [(1, 0), (2, 0)] and not any(b._forward_hooks for b in model.cross[0])  # removed
    shares = scale_shares(model, trace, {})  # without the cross-attention: only the (zero) gate's part
    assert torch.equal(shares[..., 0], torch.ones_like(shares[..., 0]))


def test_inspect_gates_are_the_models_fusion(model: MultiScaleTransformer) -> None:
    ids = torch.tensor([[257, *b"def f(x): return x"]])
    logits, gates = model.forward_with_gates(ids)
    torch.testing.assert_close(logits, model(ids))
    assert gates.shape == (1, ids.shape[1], 3)
    flat = MultiScaleTransformer(ModelConfig.from_name("tiny").flat()).eval()
    report = inspect_bytes(flat, b"abc", top=0)
    assert [b.gates for b in report.bytes] == [[1.0]] * 3 and report.bytes[0].top == []
    assert [b.shares for b in report.bytes] == [[1.0]] * 3


def test_metrics_count_requests_bytes_and_queue(http: httpx.Client) -> None:
    http.post("/v1/completions", json={"prompt": "def f", "max_tokens": 7, "seed": 1, "stop": []})
    http.get("/no-such-page")
    text = http.get("/metrics").text
    assert 'axl_requests_total{method="POST",route="/v1/completions",status="200"}' in text
    assert 'route="unmatched",status="404"' in text
    assert "axl_request_duration_seconds_bucket" in text and "axl_queue_depth 0.0" in text
    generated = next(line for line in text.splitlines() if line.startswith("axl_generated_bytes_total"))
    assert float(generated.split()[-1]) >= 1


def test_metrics_stay_the_same_size_whatever_methods_callers_make_up(model: MultiScaleTransformer) -> None:
    with live_server(create_app(model, name="keyed", api_key="sesame", metrics=True)) as base:
        headers = {"Authorization": "Bearer sesame"}

        def series_after_made_up_methods(count: int, key: str) -> list[str]:
            """The names and labels of every series /metrics holds after `count` requests with made-up methods."""
            for i in range(count):
                with httpx.Client() as client:  # a fresh connection: the server may close one after a 405
                    client.request(f"X{i}{'Y' * 2000}", f"{base}/v1/completions", headers={"Authorization": key})
            text = httpx.get(f"{base}/metrics", headers=headers).text
            return [line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")]

        series_after_made_up_methods(2, "")
        before = series_after_made_up_methods(2, "Bearer sesame")  # every series this test makes exists now
        assert series_after_made_up_methods(30, "") == before  # without the key
        assert series_after_made_up_methods(30, "Bearer sesame") == before  # with it
        assert any('method="other"' in s for s in before) and not any("XY" in s for s in before)


def test_metrics_are_off_by_default(model: MultiScaleTransformer) -> None:
    with live_server(create_app(model, name="plain")) as base:
        assert_openai_error(httpx.get(f"{base}/metrics"), 404)


def test_api_key_guards_everything_but_health_and_the_page(model: MultiScaleTransformer) -> None:
    app = create_app(model, name="keyed", api_key="sesame", metrics=True)
    with live_server(app) as base:
        assert httpx.get(f"{base}/health").status_code == 200
        page = httpx.get(f"{base}/")
        assert page.status_code == 200 and "AXL playground" in page.text
        for method, path, body in [
            ("GET", "/props", None),
            ("GET", "/tokenizer_info", None),
            ("POST", "/tokenize", {"prompt": "a"}),
            ("POST", "/detokenize", {"tokens": [97]}),
            ("POST", "/v1/inspect", {"text": "a"}),
            ("GET", "/metrics", None),
        ]:
            assert_openai_error(httpx.request(method, f"{base}{path}", json=body), 401, code="invalid_api_key")
            allowed = httpx.request(method, f"{base}{path}", json=body, headers={"Authorization": "Bearer sesame"})
            assert allowed.status_code == 200, path


def test_cors_is_off_by_default_and_on_for_listed_origins(model: MultiScaleTransformer) -> None:
    origin = "http://localhost:3000"
    preflight = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    with live_server(create_app(model, name="closed")) as base:
        refused = httpx.post(f"{base}/tokenize", json={"prompt": "a"}, headers={"Origin": origin})
        assert_openai_error(refused, 403)
        assert "access-control-allow-origin" not in refused.headers
        assert httpx.options(f"{base}/tokenize", headers=preflight).status_code == 403
    with live_server(create_app(model, name="open", cors_origins=(origin,))) as base:
        ok = httpx.post(f"{base}/tokenize", json={"prompt": "a"}, headers={"Origin": origin})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == origin
        answered = httpx.options(f"{base}/tokenize", headers=preflight)
        assert answered.status_code == 200 and answered.headers["access-control-allow-origin"] == origin
        other = httpx.post(f"{base}/tokenize", json={"prompt": "a"}, headers={"Origin": "http://evil.example"})
        assert_openai_error(other, 403)


def test_the_page_may_only_talk_to_its_server(http: httpx.Client) -> None:
    page = http.get("/")
    csp = page.headers["content-security-policy"]
    assert "connect-src 'self'" in csp and "default-src 'none'" in csp
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "unsafe-inline" not in csp
    assert "http://" not in page.text and "https://" not in page.text  # nothing fetched from elsewhere
    assert "<script>" not in page.text and "<style>" not in page.text and " style=" not in page.text
    for path, kind in [("/static/playground.js", "text/javascript"), ("/static/playground.css", "text/css"),
                       ("/favicon.svg", "image/svg+xml"), ("/favicon.ico", "image/svg+xml")]:  # fmt: skip
        asset = http.get(path, headers={"Authorization": ""})
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind), path
    assert http.get("/static/playground.js?name=../../__init__.py").content == http.get("/static/playground.js").content
    assert http.get("/static/other.js").status_code == 404


def test_lm_eval_prompt_ids_may_start_with_eos(http: httpx.Client) -> None:
    """lm-evaluation-harness's loglikelihood request: EOS as context, echoed, one more byte sampled."""
    ids = [257, *b"import os\nprint(os.getcwd())\n"]
    body = {"prompt": [ids], "max_tokens": 1, "logprobs": 1, "echo": True, "temperature": 0, "seed": 1234}
    choice = http.post("/v1/completions", json=body).json()["choices"][0]
    logprobs = choice["logprobs"]
    assert len(logprobs["token_logprobs"]) == len(ids) + 1 and logprobs["token_logprobs"][0] is None
    assert logprobs["tokens"][0] == "<|endoftext|>" and choice["text"].startswith("import os")


def test_defaults_come_from_the_served_models_generation_config(tmp_path, model: MultiScaleTransformer) -> None:
    import json

    model.save_pretrained(tmp_path / "m")
    config = tmp_path / "m" / "generation_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "temperature": 0.3, "top_k": 5}))
    with live_server(create_app(tmp_path / "m", name="own")) as base:
        defaults = httpx.get(f"{base}/props").json()["generation_defaults"]
        assert defaults["temperature"] == 0.3 and defaults["top_k"] == 5 and defaults["top_p"] == 0.9
        body = {"prompt": "def f(x):", "max_tokens": 24, "seed": 11}
        omitted = httpx.post(f"{base}/v1/completions", json=body, timeout=60).json()["choices"][0]["text"]
        explicit = {**body, "temperature": 0.3, "top_k": 5}
        given = httpx.post(f"{base}/v1/completions", json=explicit, timeout=60).json()["choices"][0]["text"]
        assert omitted == given  # the file's values are what an omitted field means
    config.write_text(json.dumps({"top_p": 2}))
    with live_server(create_app(tmp_path / "m", name="bad"), wait_ready=False) as base:
        for _ in range(100):
            health = httpx.get(f"{base}/health").json()
            if health["status"] != "loading":
                break
            time.sleep(0.05)
        assert "top_p must be a number in (0, 1]" in health["error"]["message"]
