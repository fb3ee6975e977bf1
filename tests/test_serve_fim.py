"""Fill-in-the-middle through the server, in the request shapes editors send, on live servers.

A small model trained with --fim-rate serves Continue.dev's exact autocomplete request (StarCoder
markers in the prompt), Mistral's /v1/fim/completions, llama.cpp's /infill and /completion; each
answer must be the Python API's infilling of the same prefix and suffix (same seed). A model not
trained for FIM refuses infilling with a 400 that names the cause, and keeps serving.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from multiscale_transformer.generation import fim
from multiscale_transformer.generation.fim import Infill, infill_prompt, parse_markers
from multiscale_transformer.generation.generate import TextStream
from multiscale_transformer.generation.sampling import SamplingParams
from multiscale_transformer.model.config import GENERATION_DEFAULTS, ModelConfig
from multiscale_transformer.model.model import MultiScaleTransformer
from multiscale_transformer.model.vocab import EOS_ID, FIM_MIDDLE_ID, FIM_PREFIX_ID, FIM_SUFFIX_ID
from multiscale_transformer.serving.app import create_app
from multiscale_transformer.training.trainer import Trainer, TrainSettings

from .conftest import make_model
from .live import assert_openai_error, live_server, module_server
from .test_data import small_corpus

PREFIX = "# Path: util.py\ndef add(a, b):\n    "
SUFFIX = "\n\nprint(add(1, 2))\n"
CONTINUE_STOPS = ["<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<file_sep>", "<|endoftext|>", "</fim_middle>",
                  "</code>", "/src/", "#- coding: utf-8", "```"]  # fmt: skip
# Continue.dev's tab-autocomplete request to an OpenAI-compatible provider (StarCoder template).
CONTINUE_REQUEST = {
    "model": "axl-mini",
    "max_tokens": 4096,
    "temperature": 0.01,
    "stream": True,
    "stop": CONTINUE_STOPS,
    "prompt": f"<fim_prefix>{PREFIX}<fim_suffix>{SUFFIX}<fim_middle>",
}


@pytest.fixture(scope="module")
def fim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fim")
    settings = TrainSettings(
        out=root / "model", config=ModelConfig.from_name("tiny"), data=[small_corpus(root, n=20)],
        cache_dir=root / "cache", fim_rate=0.5, max_steps=12, batch_size=4, eval_every=12, eval_windows=2,
        threads=2, quiet=True, device="cpu",
    )  # fmt: skip
    Trainer(settings, log=lambda _: None).run()
    return root / "model"


@pytest.fixture(scope="module")
def model(fim_dir: Path) -> MultiScaleTransformer:
    return MultiScaleTransformer.from_pretrained(fim_dir).eval()


@pytest.fixture(scope="module")
def base(fim_dir: Path) -> Iterator[str]:
    yield from module_server(create_app(fim_dir, name="axl-fim", max_batch=4))


@pytest.fixture(scope="module")
def http(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=60) as client:
        yield client


def params(temperature: float) -> SamplingParams:
    d = GENERATION_DEFAULTS
    return SamplingParams(temperature, d["top_k"], d["top_p"], d["repetition_penalty"])


def expected(model: MultiScaleTransformer, prefix: str, suffix: str, n: int, t: float, seed: int, stop=()) -> str:
    return fim.infill(model, prefix, suffix, n, params(t), [s.encode() for s in stop], seed)


def sse(response: httpx.Response) -> list[dict]:
    events = [line.removeprefix("data: ") for line in response.text.splitlines() if line.startswith("data: ")]
    return [json.loads(e) for e in events if e != "[DONE]"]


def test_the_model_is_marked_fim_trained(model: MultiScaleTransformer) -> None:
    assert model.config.fim


def test_continue_autocomplete_request_streaming_and_not(http: httpx.Client, model: MultiScaleTransformer) -> None:
    streamed = http.post("/v1/completions", json=CONTINUE_REQUEST)
    assert streamed.status_code == 200 and streamed.headers["content-type"].startswith("text/event-stream")
    assert streamed.text.rstrip().endswith("data: [DONE]")
    events = sse(streamed)
    assert [e["choices"][0]["finish_reason"] for e in events if e["choices"][0]["finish_reason"]] in (
        ["stop"],
        ["length"],
    )
    text = "".join(e["choices"][0]["text"] for e in events)
    assert not any(s in text for s in CONTINUE_STOPS)
    # The same request with a seed: exactly the Python API's infilling, streamed or not.
    seeded = {**CONTINUE_REQUEST, "seed": 11}
    want = expected(model, PREFIX, SUFFIX, 4096, 0.01, 11, CONTINUE_STOPS)
    assert want
    whole = http.post("/v1/completions", json={**seeded, "stream": False})
    assert whole.status_code == 200, whole.text
    assert whole.json()["choices"][0]["text"] == want
    assert "".join(e["choices"][0]["text"] for e in sse(http.post("/v1/completions", json=seeded))) == want
    # `suffix` on /v1/completions is the same infilling.
    body = {
        "prompt": PREFIX,
        "suffix": SUFFIX,
        "max_tokens": 4096,
        "temperature": 0.01,
        "seed": 11,
        "stop": CONTINUE_STOPS,
    }
    assert http.post("/v1/completions", json=body).json()["choices"][0]["text"] == want


def test_mistral_fim_completions(http: httpx.Client, model: MultiScaleTransformer) -> None:
    body = {"model": "codestral-latest", "prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 40, "temperature": 0.7,
            "random_seed": 3, "stop": ["\n\n"]}  # fmt: skip
    want = expected(model, PREFIX, SUFFIX, 40, 0.7, 3, ["\n\n"])
    assert want  # a comparison of two empty strings would prove nothing
    out = http.post("/v1/fim/completions", json=body)
    assert out.status_code == 200, out.text
    reply = out.json()
    assert reply["object"] == "chat.completion" and reply["choices"][0]["message"]["content"] == want
    assert "\n\n" not in want and reply["usage"]["completion_tokens"] >= len(want.encode())
    events = sse(http.post("/v1/fim/completions", json={**body, "stream": True}))
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events) == want
    assert events[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_llamacpp_infill(http: httpx.Client, model: MultiScaleTransformer) -> None:
    body = {"input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": 24, "temperature": 0.7, "seed": 5,
            "stop": ["\n\n"]}  # fmt: skip
    out = http.post("/infill", json=body)
    assert out.status_code == 200, out.text
    reply = out.json()
    assert reply["content"] and reply["stop"] is True
    assert reply["content"] == expected(model, PREFIX, SUFFIX, 24, 0.7, 5, ["\n\n"])
    assert reply["stop_type"] in ("eos", "word", "limit") and reply["tokens_evaluated"] > len(PREFIX)
    events = sse(http.post("/infill", json={**body, "stream": True}))
    assert "".join(e["content"] for e in events) == reply["content"]
    assert [e["stop"] for e in events][-1] is True and not any(e["stop"] for e in events[:-1])
    # Other files get no share of a context this short (fim.max_extra_bytes): the same infilling, cut.
    with_extra = http.post("/infill", json={**body, "input_extra": [{"filename": "a.py", "text": "X = 1"}]}).json()
    assert with_extra["content"] == reply["content"] and with_extra["truncated"] and not reply["truncated"]


def test_llama_vim_and_vscode_fields(http: httpx.Client, model: MultiScaleTransformer) -> None:
    """n_indent, t_max_predict_ms, response_fields, and truncated / tokens_evaluated true to what was read."""
    body = {"input_prefix": PREFIX, "input_suffix": SUFFIX, "prompt": "", "n_predict": 48, "temperature": 0.9,
            "seed": 2, "samplers": ["top_k", "top_p", "infill"], "cache_prompt": True,
            "t_max_prompt_ms": 500}  # fmt: skip
    free = http.post("/infill", json=body).json()["content"]
    indented = http.post("/infill", json={**body, "n_indent": 4}).json()
    # The same bytes, cut before the first line (after the cursor's) whose text is indented less than 4.
    assert free.startswith(indented["content"])
    if indented["content"] != free:
        rest = free[len(indented["content"]) :]
        line = rest[1:].split("\n")[0]
        assert rest.startswith("\n") and line.strip() and len(line) - len(line.lstrip(" \t")) < 4
        assert indented["stop_type"] == "limit"
    lines = indented["content"].split("\n")[1:]
    assert all(not line.strip() or len(line) - len(line.lstrip(" \t")) >= 4 for line in lines)
    timed = http.post("/infill", json={**body, "t_max_predict_ms": 1}).json()
    assert "\n" not in timed["content"]  # the first newline comes after 1 ms of generating: the end
    assert timed["generation_settings"]["t_max_predict_ms"] == 1

    big = {**body, "input_extra": [{"filename": "big.py", "text": "x = 1\n" * 4000}], "input_prefix": "y" * 2200}
    fields = ["content", "truncated", "tokens_evaluated", "timings/prompt_n", "generation_settings/n_indent", "no/such"]
    reply = http.post("/infill", json={**big, "n_indent": 4, "response_fields": fields}).json()
    assert set(reply) == set(fields) - {"no/such"}  # flat keys named by their paths, as llama.cpp writes them
    assert reply["truncated"] is True and reply["generation_settings/n_indent"] == 4
    assert reply["tokens_evaluated"] == reply["timings/prompt_n"] <= model.config.max_seq_len
    assert http.post("/infill", json=body).json()["truncated"] is False
    many = http.post("/completion", json={"prompt": [97] * 100_000, "n_predict": 1}).json()
    assert (many["tokens_evaluated"], many["truncated"]) == (model.config.max_seq_len, True)


def test_samplers_choose_the_chain_as_llama_cpp_does(http: httpx.Client, model: MultiScaleTransformer) -> None:
    """llama.vscode and llama.vim send `"samplers": ["top_k", "top_p", "infill"]`: only those act (no
    temperature: 1; no penalties), then a byte is drawn; names or letters alike; each reply is the Python
    API's infilling under that chain (same seed). Without "infill" in the list, it is off."""
    body = {"input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": 48, "temperature": 0.5, "top_k": 40,
            "top_p": 0.99, "repeat_penalty": 1.3, "seed": 3, "samplers": ["top_k", "top_p", "infill"]}  # fmt: skip
    chain = SamplingParams(1.0, 40, 0.99, 1.0, infill=True)
    reply = http.post("/infill", json=body).json()
    assert reply["content"] == fim.infill(model, PREFIX, SUFFIX, 48, chain, None, 3)
    settings = reply["generation_settings"]
    assert (settings["temperature"], settings["repeat_penalty"]) == (1.0, 1.0)
    assert http.post("/infill", json={**body, "samplers": "kpi"}).json()["content"] == reply["content"]
    listed = http.post("/infill", json={**body, "samplers": ["temperature", "top_k", "min_p", "no-such"]}).json()
    assert listed["content"] == fim.infill(model, PREFIX, SUFFIX, 48, SamplingParams(0.5, 40, None, 1.0), None, 3)
    greedy = http.post("/infill", json={**body, "temperature": 0}).json()  # 0 stays greedy
    assert greedy["content"] == fim.infill(model, PREFIX, SUFFIX, 48, SamplingParams(0.0, 40, 0.99, 1.0, infill=True))


def llama_cpp_outcome(model: MultiScaleTransformer, prompt: str, body: dict) -> tuple[str, str, str]:
    """What llama.cpp's /completion must answer (content, stop_type, stopping_word), derived from the same
    generation without stop words: the stops change where the text ends, never which bytes are sampled."""
    raw = TextStream(model, list(prompt.encode()), body["n_predict"], params(body["temperature"]), None, body["seed"])
    text = b"".join(raw)
    (word,) = body["stop"] or [""]
    if word and word.encode() in text:
        return text[: text.index(word.encode())].decode("utf-8", "replace"), "word", word
    return text.decode("utf-8", "replace"), "eos" if raw.finish_reason == "stop" else "limit", ""


def test_llamacpp_completion(http: httpx.Client, model: MultiScaleTransformer) -> None:
    prompt = "def area(r):\n    return"
    body = {"prompt": prompt, "n_predict": 32, "temperature": 0.7, "seed": 9, "stop": ["\n"], "cache_prompt": True}
    unstopped = b"".join(TextStream(model, list(prompt.encode()), 32, params(0.7), None, 9))
    # A stop word the generation is known to reach: two ASCII bytes from its middle.
    word = next(unstopped[i : i + 2] for i in range(2, len(unstopped) - 1) if unstopped[i : i + 2].isascii()).decode()
    seen = set()
    for case in (body, {**body, "stop": [word]}, {**body, "n_predict": 3, "stop": []}):
        reply = http.post("/completion", json=case).json()
        content, stop_type, stopping_word = llama_cpp_outcome(model, prompt, case)
        assert (reply["content"], reply["stop_type"], reply["stopping_word"]) == (content, stop_type, stopping_word)
        assert reply[f"stopped_{stop_type}"] is True and reply["tokens_predicted"] <= case["n_predict"]
        seen.add(stop_type)
    assert {"word", "limit"} <= seen  # the cases reach both ends that a seed can force
    events = sse(http.post("/completion", json={**body, "stream": True}))
    assert "".join(e["content"] for e in events) == llama_cpp_outcome(model, prompt, body)[0]
    assert events[-1]["stop"] is True
    marked = {**body, "prompt": f"<fim_prefix>{PREFIX}<fim_suffix>{SUFFIX}<fim_middle>", "stop": ["\n\n"]}
    assert http.post("/completion", json=marked).json()["content"] == expected(
        model, PREFIX, SUFFIX, 32, 0.7, 9, ["\n\n"]
    )


def test_a_model_not_trained_for_fim_refuses_with_the_cause(tmp_path: Path) -> None:
    plain = make_model("tiny").save_pretrained(tmp_path / "plain")
    with live_server(create_app(plain, max_batch=2)) as url, httpx.Client(base_url=url, timeout=60) as http:
        requests = [
            ("/v1/completions", {**CONTINUE_REQUEST, "stream": False}),
            ("/v1/completions", {"prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 8}),
            ("/v1/fim/completions", {"prompt": PREFIX, "suffix": SUFFIX}),
            ("/infill", {"input_prefix": PREFIX, "input_suffix": SUFFIX}),
        ]
        for path, body in requests:
            error = assert_openai_error(http.post(path, json=body), 400, code="fim_unsupported")
            assert "not trained for fill-in-the-middle" in str(error["message"]), path
        # Without a suffix there is nothing to fill: a plain completion, which any model serves.
        assert http.post("/v1/fim/completions", json={"prompt": "x = ", "max_tokens": 4}).status_code == 200
        assert http.post("/completion", json={"prompt": "x = ", "n_predict": 4}).status_code == 200
        assert http.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("prompt", "prefix", "suffix", "start"),
    [
        ("<fim_prefix>a = <fim_suffix>\nb<fim_middle>", "a = ", "\nb", ""),  # Continue's StarCoder template
        ("<|fim_prefix|>a = <|fim_suffix|>\nb<|fim_middle|>1", "a = ", "\nb", "1"),  # Qwen2.5-Coder, CodeGemma
        ("<PRE> a =  <SUF>\nb <MID>", "a = ", "\nb", ""),  # Code Llama's template spaces are not text
        # A prefix may mention marker text: the last middle marker, and the last suffix marker before it.
        ("<fim_prefix>s = '<fim_suffix><fim_middle>'\n<fim_suffix>\nb<fim_middle>", "s = '<fim_suffix><fim_middle>'\n",
         "\nb", ""),
    ],
)  # fmt: skip
def test_fim_templates(prompt: str, prefix: str, suffix: str, start: str) -> None:
    assert parse_markers(prompt) == Infill(prefix.encode(), suffix.encode(), start.encode())


@pytest.mark.parametrize(
    "prompt",
    [
        "def f(): <not a marker>",
        "<html><body><PRE>x = 1</PRE></body></html>",  # HTML: a plain prompt, not Code Llama's template
        "<PRE>a<MID>",  # prefix marker first, but not all three
        "<fim_prefix>a<fim_middle>b<fim_suffix>",  # out of order
        "<fim_suffix>\nb<fim_prefix>a = <fim_middle>",  # SPM: no client sends it as text
        "repo/x.py\n<fim_prefix>a<fim_suffix>b<fim_middle>",  # text before the prefix marker
        Path(fim.__file__).read_text(encoding="utf-8"),  # source code that talks about the markers
    ],
)
def test_anything_else_is_plain_text(prompt: str) -> None:
    assert parse_markers(prompt) is None


def test_marker_text_in_a_plain_prompt_is_served_as_plain_text(http: httpx.Client) -> None:
    for prompt in ("<html><PRE>x = 1", "<fim_prefix>a<fim_middle>", Path(fim.__file__).read_text(encoding="utf-8")):
        ids = list(prompt.encode())[-model_context(http) :]
        for path, body in [("/v1/completions", {"prompt": prompt, "max_tokens": 2}), ("/completion",
                           {"prompt": prompt, "n_predict": 2})]:  # fmt: skip
            out = http.post(path, json=body)
            assert out.status_code == 200, (path, out.text)
            reply = out.json()
            read = reply["usage"]["prompt_tokens"] if path == "/v1/completions" else reply["tokens_evaluated"]
            assert read == len(ids), (path, prompt[:30])  # every byte read as text: no infilling layout


def model_context(http: httpx.Client) -> int:
    return http.get("/v1/models").json()["data"][0]["context_length"]


def test_long_sides_are_cut_to_fit_on_character_boundaries() -> None:
    prefix, suffix = ("é" * 300).encode(), ("ü" * 300).encode()
    ids = infill_prompt(Infill(prefix, suffix), window=128, room=32)
    assert len(ids) <= 128 - 32
    assert ids[:3] == [EOS_ID, FIM_PREFIX_ID, FIM_SUFFIX_ID]  # SPM: suffix first, prefix next to the middle
    cut = ids.index(FIM_MIDDLE_ID)
    kept_suffix, kept_prefix = bytes(ids[3:cut]), bytes(ids[cut + 1 :])
    assert prefix.endswith(kept_prefix) and suffix.startswith(kept_suffix)  # left and right ends kept
    assert kept_prefix.decode() and kept_suffix.decode()  # whole characters only
    assert len(kept_suffix) >= (128 - 32 - 4) // 4 - 1
    short = infill_prompt(Infill(b"ab", b"cd"), window=128, room=32)
    assert short == [EOS_ID, FIM_PREFIX_ID, FIM_SUFFIX_ID, *b"cd", FIM_MIDDLE_ID, *b"ab"]


def test_axl_generate_suffix_is_the_same_infilling(fim_dir: Path, model: MultiScaleTransformer) -> None:
    import subprocess
    import sys

    argv = [sys.executable, "-m", "multiscale_transformer", "generate", "--model", str(fim_dir), "--no-echo",
            "--max-new-tokens", "30", "--temperature", "0.7", "--seed", "4", "--suffix", SUFFIX, PREFIX]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr
    want = expected(model, PREFIX, SUFFIX, 30, 0.7, 4)
    assert want and done.stdout.decode("utf-8").removesuffix("\n") == want


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/completion", {"prompt": "x", "stop": ["a" * 300]}),  # checked after reading: was a 500
        ("/infill", {"input_prefix": "a", "input_suffix": "b", "stop": ["a" * 300]}),
        ("/completion", {"prompt": "x", "n_predict": -5}),
        ("/completion", {"prompt": ""}),
        ("/v1/fim/completions", {"prompt": "a", "suffix": "b", "max_tokens": 100000}),
        ("/v1/completions", {"prompt": [1, 2], "suffix": "b"}),
        ("/v1/completions", {"prompt": "a", "suffix": "b", "echo": True}),
    ],
)
def test_bad_editor_requests_are_400(http: httpx.Client, path: str, body: dict) -> None:
    assert_openai_error(http.post(path, json=body), 400)
    assert http.get("/health").status_code == 200


# ---- each editor plugin's real request, replayed, and the fields it reads ----
#
# - Continue `openai` provider: StarCoder-templated prompt, no suffix, streamed `/v1/completions`;
#   reads `choices[0].text` and `finish_reason`.
# - Continue `llama.cpp` provider: `/completion` with `prompt`, `stream: true` and its sampling names
#   (`min_p` and `mirostat` are ignored); reads each SSE event's `content`.
# - Continue `mistral` provider: `/v1/fim/completions`; reads `choices[0].delta.content`.
# - llama.vscode: `/infill` warm-up (`n_predict: 0`, the ring of `input_extra` chunks) then the
#   completion (`n_indent`, `t_max_*`, `samplers`, `n_cmpl: 3`); reads `content` of an object or a list.
# - llama.vim: `/infill` warm-up with `response_fields: [""]`, then its completion body; reads
#   `content`, `tokens_cached` and the flat `timings/...` keys.

EXTRA = [  # what llama.vim/llama.vscode keep in their ring of chunks from recently seen files
    {"filename": "util/geometry.py", "text": "import math\n\n\ndef area(r):\n    return math.pi * r * r\n"},
    {"filename": "util/io.py", "text": "def read(path):\n    with open(path) as f:\n        return f.read()\n"},
]


def test_continue_openai_provider(http: httpx.Client) -> None:
    events = sse(http.post("/v1/completions", json=CONTINUE_REQUEST))
    text = "".join(e["choices"][0]["text"] for e in events)
    finishes = [e["choices"][0]["finish_reason"] for e in events if e["choices"][0]["finish_reason"]]
    assert finishes in (["stop"], ["length"])
    assert not any(marker in text for marker in ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"))


def test_continue_llama_cpp_provider(http: httpx.Client, model: MultiScaleTransformer) -> None:
    body = {
        "prompt": f"<fim_prefix>{PREFIX}<fim_suffix>{SUFFIX}<fim_middle>",
        "stream": True,
        "n_predict": 64,
        "stop": ["<fim_prefix>", "<fim_suffix>", "<fim_middle>", "<|endoftext|>", "\n\n"],
        "temperature": 0.01,
        "top_p": 0.95,
        "top_k": 40,
        "min_p": 0.05,
        "mirostat": None,
    }
    response = http.post("/completion", json=body)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = sse(response)
    assert events[-1]["stop"] is True and all(e["stop"] is False for e in events[:-1])
    content = "".join(e["content"] for e in events)
    assert "\n\n" not in content and events[-1]["tokens_predicted"] <= 64


def test_continue_mistral_provider(http: httpx.Client) -> None:
    body = {"model": "codestral-latest", "prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 64, "temperature": 0.01,
            "stop": ["\n\n"], "stream": True}  # fmt: skip
    events = sse(http.post("/v1/fim/completions", json=body))
    assert events[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert "\n\n" not in "".join(e["choices"][0]["delta"].get("content") or "" for e in events)


def test_llama_vscode(http: httpx.Client, model: MultiScaleTransformer) -> None:
    warm = {"id_slot": 0, "input_prefix": PREFIX, "input_suffix": SUFFIX, "input_extra": EXTRA, "prompt": "",
            "n_predict": 0, "samplers": [], "cache_prompt": True, "t_max_prompt_ms": 500,
            "t_max_predict_ms": 1}  # fmt: skip
    warmed = http.post("/infill", json=warm)
    assert warmed.status_code == 200 and warmed.json()["content"] == "" and warmed.json()["tokens_predicted"] == 0
    body = {"id_slot": 0, "input_prefix": PREFIX, "input_suffix": SUFFIX, "input_extra": EXTRA, "prompt": "",
            "n_predict": 128, "n_cmpl": 3, "top_k": 40, "top_p": 0.99, "stream": False,
            "samplers": ["top_k", "top_p", "infill"], "cache_prompt": True, "n_indent": 4, "t_max_prompt_ms": 500,
            "t_max_predict_ms": 2500, "model": ""}  # fmt: skip
    replies = http.post("/infill", json=body).json()
    assert isinstance(replies, list) and [r["index"] for r in replies] == [0, 1, 2]  # llama.vscode reads either shape
    assert all(isinstance(r["content"], str) and r["stop"] is True for r in replies)
    seeded = http.post("/infill", json={**body, "seed": 7}).json()
    one = http.post("/infill", json={**body, "seed": 7, "n_cmpl": 1}).json()
    assert one["content"] == seeded[0]["content"]  # completion i is seeded seed + i; the first is the single one


def test_llama_vim(http: httpx.Client) -> None:
    warm = {"id_slot": 0, "input_prefix": "", "input_suffix": "", "input_extra": EXTRA, "prompt": "", "n_predict": 0,
            "temperature": 0.0, "samplers": [], "stream": False, "cache_prompt": True, "t_max_prompt_ms": 1,
            "t_max_predict_ms": 1, "response_fields": [""]}  # fmt: skip
    warmed = http.post("/infill", json=warm)
    assert warmed.status_code == 200 and warmed.json() == {}
    fields = ["content", "timings/prompt_n", "timings/prompt_ms", "timings/prompt_per_token_ms",
              "timings/prompt_per_second", "timings/predicted_n", "timings/predicted_ms",
              "timings/predicted_per_token_ms", "timings/predicted_per_second", "truncated",
              "tokens_cached"]  # fmt: skip
    body = {"id_slot": 0, "input_prefix": PREFIX, "input_suffix": SUFFIX, "input_extra": EXTRA, "prompt": "",
            "n_predict": 128, "stop": [], "n_indent": 4, "top_k": 40, "top_p": 0.90,
            "samplers": ["top_k", "top_p", "infill"], "stream": False, "cache_prompt": True, "t_max_prompt_ms": 500,
            "t_max_predict_ms": 250, "response_fields": fields}  # fmt: skip
    reply = http.post("/infill", json=body).json()
    assert set(reply) == set(fields), json.dumps(reply)
    assert isinstance(reply["content"], str)
    assert 0 <= reply["tokens_cached"] < reply["timings/prompt_n"]  # earlier infills left the sentinels and more
    assert reply["truncated"] is True  # the two chunks and the prefix do not fit the test model's 128 bytes
    assert reply["timings/prompt_n"] > len(PREFIX) and reply["timings/prompt_ms"] > 0
    assert reply["timings/predicted_n"] >= 1 and reply["timings/predicted_per_second"] > 0
    lines = reply["content"].split("\n")[1:]  # n_indent 4: no line after the first is indented less
    assert all(not line.strip() or len(line) - len(line.lstrip()) >= 4 for line in lines)


def test_a_prompt_that_extends_a_recent_one_reuses_its_cache(http: httpx.Client, model: MultiScaleTransformer) -> None:
    """An editor sends the file again, a little longer, on every keystroke: the server prefills only
    the new bytes (llama.cpp's cache_prompt, reported as tokens_cached) and answers exactly what a
    fresh request for that prompt gets."""
    first = "import os\n\ndef area(r):\n    return"
    body = {"n_predict": 6, "temperature": 0.0, "cache_prompt": True}
    http.post("/completion", json={**body, "prompt": first})
    for prompt in (first + " 3.14 *", first + " 3.14 * r", "x = 1\n"):
        reply = http.post("/completion", json={**body, "prompt": prompt}).json()
        expected_text = b"".join(TextStream(model, list(prompt.encode()), 6, params(0.0))).decode("utf-8", "replace")
        assert reply["content"] == expected_text
        # the prompt as the model reads it starts with the file-start EOS, which every cached row shares
        cached = reply["tokens_cached"]
        assert cached > len(first) if prompt.startswith(first) else cached == 1, cached
