"""`axl serve` with the real clients: the official openai package and langchain-openai, on a live server.

The server's outputs are compared with the CLI's generation path (TextStream) on the same weights
and seed, so a server that mixed requests, dropped bytes or sampled differently would fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import torch

from multiscale_transformer.generation.generate import TextStream, with_file_start
from multiscale_transformer.generation.sampling import SamplingParams
from multiscale_transformer.model.model import MultiScaleTransformer
from multiscale_transformer.serving.app import create_app
from multiscale_transformer.serving.tokens import SPECIAL, token_bytes

from .conftest import make_model
from .live import module_server

KEY = "test-key-123"
NAME = "axl-tiny"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model("tiny").save_pretrained(tmp_path_factory.mktemp("serve") / "tiny")


@pytest.fixture(scope="module")
def model(model_dir: Path) -> MultiScaleTransformer:
    return MultiScaleTransformer.from_pretrained(model_dir).eval()


@pytest.fixture(scope="module")
def base_url(model_dir: Path) -> Iterator[str]:
    yield from module_server(create_app(model_dir, name=NAME, api_key=KEY, max_batch=4, max_tokens_limit=512))


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=KEY, max_retries=0, timeout=60)


def reference(
    model: MultiScaleTransformer,
    prompt: str,
    max_tokens: int,
    seed: int | None = None,
    temperature: float = 0.8,
    stop: tuple[str, ...] = (),
) -> tuple[str, str | None]:
    """What `axl generate` produces: the text and the finish reason."""
    stream = TextStream(
        model, list(prompt.encode()), max_tokens, SamplingParams(temperature), [s.encode() for s in stop], seed
    )
    return b"".join(stream).decode("utf-8", "replace"), stream.finish_reason


def test_completion_equals_the_cli_path_for_a_seed(client: openai.OpenAI, model: MultiScaleTransformer) -> None:
    out = client.completions.create(model=NAME, prompt="def f(x):", max_tokens=24, seed=7)
    text, reason = reference(model, "def f(x):", 24, seed=7)
    assert out.choices[0].text == text
    assert out.choices[0].finish_reason == reason
    assert out.usage is not None and out.usage.prompt_tokens == 9
    assert out.usage.completion_tokens == 24 or reason == "stop"
    again = client.completions.create(model=NAME, prompt="def f(x):", max_tokens=24, seed=7)
    other = client.completions.create(model=NAME, prompt="def f(x):", max_tokens=24, seed=8)
    assert again.choices[0].text == text
    assert other.choices[0].text != text


def test_greedy_completion(client: openai.OpenAI, model: MultiScaleTransformer) -> None:
    out = client.completions.create(model=NAME, prompt="import os\n", max_tokens=20, temperature=0)
    assert out.choices[0].text == reference(model, "import os\n", 20, temperature=0)[0]


def test_streaming_equals_the_whole_answer(client: openai.OpenAI, model: MultiScaleTransformer) -> None:
    chunks = list(
        client.completions.create(
            model=NAME, prompt="class A:", max_tokens=16, seed=3, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == reference(model, "class A:", 16, seed=3)[0]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 8


def _ascii_pair(text: str) -> str:
    """A two-character printable stop sequence that occurs in text after its first few bytes."""
    for i in range(3, len(text) - 1):
        pair = text[i : i + 2]
        if pair.isascii() and pair.isprintable():
            return pair
    raise AssertionError(f"no printable pair in {text!r}")


def test_stop_sequences_are_honoured_and_never_sent(client: openai.OpenAI, model: MultiScaleTransformer) -> None:
    free, _ = reference(model, "x = ", 64, temperature=0)
    stop = _ascii_pair(free)
    expected = free[: free.index(stop)]
    out = client.completions.create(model=NAME, prompt="x = ", max_tokens=64, temperature=0, stop=[stop, "\x00zz"])
    assert out.choices[0].text == expected
    assert out.choices[0].finish_reason == "stop"
    pieces = [
        c.choices[0].text
        for c in client.completions.create(
            model=NAME, prompt="x = ", max_tokens=64, temperature=0, stop=stop, stream=True
        )
    ]
    assert "".join(pieces) == expected
    assert all(stop not in p for p in pieces)


def test_n_choices_are_the_seeds_in_turn(client: openai.OpenAI, model: MultiScaleTransformer) -> None:
    out = client.completions.create(model=NAME, prompt="def g():", max_tokens=12, seed=11, n=3)
    assert [c.index for c in out.choices] == [0, 1, 2]
    for j, choice in enumerate(out.choices):
        assert choice.text == reference(model, "def g():", 12, seed=11 + j)[0]


def test_echo_and_logprobs_are_the_models(client: openai.OpenAI, model: MultiScaleTransformer) -> None:
    prompt = "def add(a, b):"
    out = client.completions.create(model=NAME, prompt=prompt, max_tokens=0, echo=True, logprobs=3)
    choice = out.choices[0]
    assert choice.text == prompt
    lp = choice.logprobs
    assert lp is not None and lp.tokens == list(prompt) and lp.text_offset == list(range(len(prompt)))
    ids = torch.tensor([[257, *prompt.encode()]])  # the prompt as generation reads it: a file's start
    with torch.no_grad():
        expected = torch.log_softmax(model(ids)[0], dim=-1)
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    for t in range(1, len(prompt)):  # row t of the model's output predicts prompt byte t (ids[t + 1])
        assert lp.token_logprobs[t] == pytest.approx(float(expected[t, ids[0, t + 1]]), abs=1e-4)
        top = lp.top_logprobs[t]
        assert len(top) == 3 and max(top.values()) == pytest.approx(float(expected[t].max()), abs=1e-4)
    gen = client.completions.create(model=NAME, prompt=prompt, max_tokens=5, echo=True, logprobs=0, seed=1)
    assert gen.choices[0].text.startswith(prompt)
    assert len(gen.choices[0].logprobs.token_logprobs) == len(prompt) + 5
    sampled = gen.choices[0].logprobs.token_logprobs[len(prompt) :]
    generated = [token_id(t) for t in gen.choices[0].logprobs.tokens[len(prompt) :]]
    after = expected_logprobs(model, prompt, generated)
    assert sampled == pytest.approx([float(after[i, b]) for i, b in enumerate(generated)], abs=1e-4)


def test_chat_uses_the_template(client: openai.OpenAI, model: MultiScaleTransformer) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    out = client.chat.completions.create(model=NAME, messages=messages, max_tokens=20, seed=5)
    prompt = "Be brief.\n\nUser: hi\nAssistant: "
    text, reason = reference(model, prompt, 20, seed=5, stop=("\nUser:",))
    assert out.choices[0].message.content == text
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].finish_reason == reason
    assert out.usage.prompt_tokens == len(prompt)
    deltas = list(client.chat.completions.create(model=NAME, messages=messages, max_tokens=20, seed=5, stream=True))
    assert deltas[0].choices[0].delta.role == "assistant"
    assert "".join(d.choices[0].delta.content or "" for d in deltas) == text
    assert deltas[-1].choices[0].finish_reason == reason


def token_id(text: str) -> int:
    """The id of a logprobs token: an ASCII character, "bytes:\\xNN" or a special token's text."""
    special = {t: i for i, t in SPECIAL.items()}
    return special[text] if text in special else ord(text) if len(text) == 1 else int(text[-2:], 16)


def expected_logprobs(model: MultiScaleTransformer, prompt: str, generated: list[int]) -> torch.Tensor:
    """The model's log-probabilities (len(generated), V) for each generated byte, read as the server reads
    a prompt (after EOS, as the start of a text)."""
    context = with_file_start(list(prompt.encode()), model.config.max_seq_len)
    with torch.no_grad():
        logits = model(torch.tensor([[*context, *generated]]))[0, len(context) - 1 : -1]
    return torch.log_softmax(logits.float(), dim=-1)


def test_chat_logprobs_are_the_models(client: openai.OpenAI, model: MultiScaleTransformer) -> None:
    out = client.chat.completions.create(
        model=NAME,
        messages=[{"role": "user", "content": "x"}],
        max_tokens=6,
        logprobs=True,
        top_logprobs=2,
        temperature=0,
    )
    content = out.choices[0].logprobs.content
    assert len(content) == 6 or out.choices[0].finish_reason == "stop"
    generated = [c.bytes[0] for c in content]
    assert all(len(c.bytes) == 1 for c in content)
    expected = expected_logprobs(model, "User: x\nAssistant: ", generated)
    for i, c in enumerate(content):
        assert c.logprob == pytest.approx(float(expected[i, generated[i]]), abs=1e-4)
        values, ids = torch.topk(expected[i], 2)
        assert [t.bytes for t in c.top_logprobs] == [token_bytes(int(t)) for t in ids]
        assert [t.logprob for t in c.top_logprobs] == pytest.approx(values.tolist(), abs=1e-4)


def test_models(client: openai.OpenAI) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == [NAME]
    assert models[0].context_length == 128  # type: ignore[attr-defined]
    assert client.models.retrieve(NAME).id == NAME
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def test_errors_surface_as_client_exceptions(client: openai.OpenAI, base_url: str) -> None:
    wrong = openai.OpenAI(base_url=f"{base_url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.completions.create(model=NAME, prompt="x", max_tokens=1)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model=NAME, prompt="x", max_tokens=100_000)
    with pytest.raises(openai.BadRequestError, match="suffix"):
        client.completions.create(model=NAME, prompt="x", suffix="y", max_tokens=1)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        client.completions.create(model=NAME, prompt="x", temperature=5, max_tokens=1)
    with pytest.raises(openai.BadRequestError, match="empty"):
        client.completions.create(model=NAME, prompt="", max_tokens=1)


def test_langchain_clients(base_url: str, model: MultiScaleTransformer) -> None:
    from langchain_openai import ChatOpenAI, OpenAI

    common = {"base_url": f"{base_url}/v1", "api_key": KEY, "model": NAME, "temperature": 0, "max_retries": 0}
    llm = OpenAI(max_tokens=12, **common)
    assert llm.invoke("def f(") == reference(model, "def f(", 12, temperature=0)[0]
    chat = ChatOpenAI(max_tokens=12, **common)
    expected = reference(model, "User: hello\nAssistant: ", 12, temperature=0, stop=("\nUser:",))[0]
    assert chat.invoke([("human", "hello")]).content == expected
    assert "".join(str(c.content) for c in chat.stream([("human", "hello")])) == expected


def test_streaming_n_with_echo_and_logprobs(client: openai.OpenAI, model: MultiScaleTransformer) -> None:
    chunks = list(
        client.completions.create(
            model=NAME, prompt="ab", max_tokens=6, seed=21, n=2, echo=True, logprobs=1, stream=True
        )
    )
    for j in range(2):
        mine = [c.choices[0] for c in chunks if c.choices and c.choices[0].index == j]
        assert "".join(c.text for c in mine) == "ab" + reference(model, "ab", 6, seed=21 + j)[0]
        token_logprobs = [lp for c in mine if c.logprobs for lp in c.logprobs.token_logprobs]
        assert token_logprobs[0] is None and len(token_logprobs) == 2 + 6
        assert [c.finish_reason for c in mine if c.finish_reason] == ["length"]
    chat = client.chat.completions.create(
        model=NAME, messages=[{"role": "user", "content": "q"}], n=2, max_tokens=4, seed=3
    )
    assert [c.index for c in chat.choices] == [0, 1]


def test_logit_bias_and_penalties_change_the_choice(client: openai.OpenAI) -> None:
    forced = client.completions.create(model=NAME, prompt="x", max_tokens=5, temperature=0, logit_bias={"65": 100})
    assert forced.choices[0].text == "AAAAA"
    # A bias of 30 beats a frequency penalty of 2 per repeat for about 15 repeats, then loses.
    mixed = client.completions.create(
        model=NAME, prompt="x", max_tokens=60, temperature=0, logit_bias={"65": 30}, frequency_penalty=2
    )
    assert mixed.choices[0].text.startswith("A") and "A" * 30 not in mixed.choices[0].text


def test_axl_generate_has_every_sampling_option_and_equals_the_server(client: openai.OpenAI, model_dir: Path) -> None:
    """Frequency/presence penalties and logit_bias through `axl generate` give the server's bytes."""
    import subprocess
    import sys

    extra = {"frequency_penalty": 1.5, "presence_penalty": -0.5, "logit_bias": {"32": 8, "257": -100}}
    out = client.completions.create(model=NAME, prompt="def f(x):", max_tokens=40, seed=11, extra_body=extra)
    cli = subprocess.run(
        [
            sys.executable, "-m", "multiscale_transformer", "generate", "--model", str(model_dir),
            "--max-new-tokens", "40", "--seed", "11", "--no-echo",
            "--frequency-penalty", "1.5", "--presence-penalty", "-0.5",
            "--logit-bias", "32=8", "--logit-bias", "257=-100", "def f(x):",
        ],
        capture_output=True, timeout=300,
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    # Bytes, not text mode: universal newlines would turn a generated "\r" into "\n".
    assert cli.stdout.decode("utf-8").removesuffix("\n") == out.choices[0].text
    plain = client.completions.create(model=NAME, prompt="def f(x):", max_tokens=40, seed=11)
    assert plain.choices[0].text != out.choices[0].text  # the options did change the sampling
    assert out.choices[0].text.count(" ") > plain.choices[0].text.count(" ")  # the +8 bias on spaces shows
