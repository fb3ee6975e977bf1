"""Editors' infillings at a long context, on a live server: other files' chunks (`input_extra`) in the
prompt the model reads, llama.vim's and llama.vscode's warm-up requests (`n_predict: 0`) filling a
row's cache for the next request, and every endpoint that reports the context.

The model is the tiny preset with a 1,024-byte context, marked FIM-trained and left untrained: what
is checked is which bytes the model reads, and that the reply is what those bytes give.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from multiscale_transformer.generation import fim
from multiscale_transformer.generation.fim import Infill, extra_chunk
from multiscale_transformer.generation.generate import TextStream
from multiscale_transformer.generation.sampling import SamplingParams
from multiscale_transformer.model.config import GENERATION_DEFAULTS
from multiscale_transformer.model.model import MultiScaleTransformer
from multiscale_transformer.serving.app import create_app
from multiscale_transformer.serving.tokenization import prompt_text

from .conftest import make_model
from .live import module_server

CONTEXT = 1024
CHUNK = {"filename": "defs.py", "text": "MAGIC_NAME = 42\n"}
PREFIX = "from defs import *\n\nx = MAGIC"
SUFFIX = "\nprint(x)\n"
D = GENERATION_DEFAULTS  # what the server applies to fields a request leaves out
GREEDY = SamplingParams(0.0, D["top_k"], D["top_p"], D["repetition_penalty"])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("long") / "model"
    make_model("tiny", max_seq_len=CONTEXT, fim=True).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def model(model_dir: Path) -> MultiScaleTransformer:
    return MultiScaleTransformer.from_pretrained(model_dir).eval()


@pytest.fixture(scope="module")
def base(model_dir: Path) -> Iterator[str]:
    yield from module_server(create_app(model_dir, name="axl-long", max_batch=2))


@pytest.fixture(scope="module")
def http(base: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=60) as client:
        yield client


def greedy(model: MultiScaleTransformer, infill: Infill, n_predict: int) -> tuple[list[int], str]:
    """The prompt the server must build for `infill` and the greedy infilling the model writes after it."""
    plan = fim.plan(model.config, infill, n_predict)
    out = b"".join(TextStream(model, plan.ids, plan.max_tokens, GREEDY, list(plan.stop), 0))
    return plan.ids, out.decode("utf-8", "replace")


def test_an_input_extra_chunk_is_in_the_prompt_the_model_reads(
    http: httpx.Client, model: MultiScaleTransformer
) -> None:
    body = {"input_prefix": PREFIX, "input_suffix": SUFFIX, "n_predict": 8, "temperature": 0.0}
    with_chunk = http.post("/infill", json={**body, "input_extra": [CHUNK]}).json()
    without = http.post("/infill", json=body).json()
    # The chunk is read as a file of its own before the infilling; without it, nothing of it is read.
    assert "<|endoftext|># defs.py\nMAGIC_NAME = 42\n<|endoftext|><fim_prefix><fim_suffix>" in with_chunk["prompt"]
    assert "MAGIC_NAME = 42" not in without["prompt"]
    assert not with_chunk["truncated"] and not without["truncated"]
    # `prompt` is the engine's record of what the model read: the prompt fim lays out, and the reply is
    # what the model writes after exactly those bytes.
    chunks = (extra_chunk(CHUNK["filename"], CHUNK["text"]),)
    for reply, extra in ((with_chunk, chunks), (without, ())):
        ids, content = greedy(model, Infill(PREFIX.encode(), SUFFIX.encode(), b"", extra), 8)
        assert reply["prompt"] == prompt_text(ids) and reply["tokens_evaluated"] == len(ids)
        assert reply["content"] == content


def test_the_most_recent_chunks_are_kept_within_their_share(http: httpx.Client) -> None:
    chunks = [{"filename": f"m{i}.py", "text": f"def f{i}():\n" + f"    return {i}\n" * 8} for i in range(12)]
    reply = http.post("/infill", json={"input_prefix": PREFIX, "input_suffix": SUFFIX, "input_extra": chunks,
                                       "n_predict": 4, "temperature": 0.0}).json()  # fmt: skip
    read = reply["prompt"]
    assert reply["truncated"] and "# m11.py\ndef f11():" in read and "def f0():" not in read
    assert read.index("# m10.py") < read.index("# m11.py") < read.index("<fim_prefix>")  # in the editor's order
    before = read[: read.index("<fim_prefix>")]  # the file-start EOS, then each chunk kept and its EOS
    packed = len(before.replace("<|endoftext|>", "").encode()) + before.count("<|endoftext|>") - 1
    assert fim.max_extra_bytes(CONTEXT) - 40 < packed <= fim.max_extra_bytes(CONTEXT)  # its share, well used
    assert PREFIX in read and SUFFIX in read  # the infilling itself is whole


def test_a_warm_up_fills_a_row_that_the_next_request_reuses(http: httpx.Client, model: MultiScaleTransformer) -> None:
    """llama.vim sends its ring of chunks ahead with n_predict 0 (llama.vscode too): the server prefills
    them into a row, writes nothing and answers at once; the completion that follows reads them from the
    row's cache (tokens_cached) and answers exactly what a fresh request gets."""
    extra = [{"filename": f"w{i}.py", "text": f"def helper_{i}(x):\n    return x * {i}\n"} for i in range(4)]
    warm = {"id_slot": 0, "input_prefix": "", "input_suffix": "", "input_extra": extra, "prompt": "", "n_predict": 0,
            "temperature": 0.0, "samplers": [], "stream": False, "cache_prompt": True, "t_max_prompt_ms": 1,
            "t_max_predict_ms": 1}  # fmt: skip
    warmed = http.post("/infill", json=warm).json()
    assert warmed["content"] == "" and warmed["stop"] is True and warmed["stop_type"] == "limit"
    assert warmed["tokens_predicted"] == warmed["timings"]["predicted_n"] == 0
    assert "def helper_3(x)" in warmed["prompt"]  # it was read: prefilled, not skipped
    assert http.post("/infill", json={**warm, "response_fields": [""]}).json() == {}  # llama.vim's own shape

    body = {"input_prefix": PREFIX, "input_suffix": SUFFIX, "input_extra": extra, "prompt": "", "n_predict": 8,
            "temperature": 0.0, "cache_prompt": True, "n_indent": 0}  # fmt: skip
    reply = http.post("/infill", json=body).json()
    chunks = tuple(extra_chunk(f["filename"], f["text"]) for f in extra)
    ids, content = greedy(model, Infill(PREFIX.encode(), SUFFIX.encode(), b"", chunks), 8)
    shared = ids.index(fim.FIM_SUFFIX_ID) + 1  # EOS, the chunks, <PRE> <SUF>: what the warm-up's prompt shares
    assert reply["tokens_cached"] >= shared > 100
    assert reply["content"] == content and reply["prompt"] == prompt_text(ids)
    # Chunks that no request sent before are not in any row: only the file-start EOS and "# " are found.
    cold = [{"filename": f"c{i}.py", "text": f"CONSTANT_{i} = {i}\n"} for i in range(4)]
    assert http.post("/infill", json={**body, "input_extra": cold}).json()["tokens_cached"] < 10


def test_every_endpoint_reports_the_context(http: httpx.Client, model: MultiScaleTransformer) -> None:
    props = http.get("/props").json()
    assert props["n_ctx"] == props["default_generation_settings"]["n_ctx"] == props["context_length"] == CONTEXT
    assert props["infill_max_tokens"] == CONTEXT // 4 and props["infill_extra_max_bytes"] == CONTEXT // 2
    card = http.get("/v1/models").json()["data"][0]
    assert card["context_length"] == card["max_model_len"] == card["meta"]["n_ctx_train"] == CONTEXT
    assert card["meta"]["n_params"] == model.num_parameters() and card["meta"]["n_vocab"] == 258
    assert http.get("/tokenizer_info").json()["model_max_length"] == CONTEXT
    assert http.post("/tokenize", json={"prompt": "x"}).json()["max_model_len"] == CONTEXT
