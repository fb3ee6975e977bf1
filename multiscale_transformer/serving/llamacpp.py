"""llama.cpp's native endpoints: POST /completion and POST /infill, in llama.cpp's request and reply shapes.

Continue's `llama.cpp` provider and other llama.cpp clients post `{"prompt", "n_predict", "stop",
"stream"}` and read `content` (streamed as SSE `data:` objects, the last one with `"stop": true`;
no `[DONE]`). `/infill` takes `input_prefix`, `input_suffix` and `input_extra` (chunks of other
files, read before the infilling as files of their own, the most recent kept within their share of
the context: generation/fim.py); its `prompt` is the start of the middle. A `/completion` prompt
with FIM marker text is an infilling too. Sampling fields use llama.cpp's names (`repeat_penalty`;
seed -1 = random). `n_predict: 0` (an editor's warm-up) prefills the prompt into a row's cache and
answers at once with no content. The closing object's `prompt` is the prompt as the model read it
(special ids as their text), as llama.cpp reports it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field

from multiscale_transformer.generation import fim
from multiscale_transformer.generation.fim import Infill
from multiscale_transformer.generation.row import CompletionOptions
from multiscale_transformer.serving.common import engine_of, read_body, repository_of, settings_of
from multiscale_transformer.serving.engine import Chunk, Finished
from multiscale_transformer.serving.errors import APIError
from multiscale_transformer.serving.pipeline import Outcome, serve
from multiscale_transformer.serving.protocol import (
    CommonSampling,
    RepetitionPenalty,
    RequestModel,
    SamplingFields,
    StopList,
    TokenId,
    openapi_body,
)
from multiscale_transformer.serving.request import (
    GenerationRequest,
    Prompt,
    Sampling,
    infill_prompt,
    plain_prompt,
    sampling_of,
)
from multiscale_transformer.serving.sse import Payload, StreamWriter
from multiscale_transformer.serving.tokenization import prompt_text
from multiscale_transformer.text import text_bytes

if TYPE_CHECKING:
    from multiscale_transformer.model.config import ModelConfig
    from multiscale_transformer.serving.repository import Repository

router = APIRouter()


class LlamaSampling(CommonSampling):
    """The sampling fields of llama.cpp's native requests (unknown fields, e.g. cache_prompt, ignored)."""

    n_predict: Annotated[int, Field(ge=-1)] | None = None  # -1 or absent: the server's default
    repeat_penalty: RepetitionPenalty | None = None
    stop: StopList | None = None
    # Editor fields (llama.vim, llama.vscode): a line after the first indented less than n_indent ends
    # the completion; past t_max_predict_ms the completion ends at the next newline. t_max_prompt_ms
    # is accepted and, as in llama.cpp's server, not acted on. response_fields (non-streamed replies):
    # only these fields, "a/b" naming b inside a, each under its path as the key.
    n_indent: Annotated[int, Field(ge=0)] | None = None
    t_max_predict_ms: Annotated[int, Field(ge=0)] | None = None
    t_max_prompt_ms: int | None = None
    response_fields: Annotated[list[str], Field(max_length=64)] | None = None
    # llama.vscode asks for several completions at once (1..4, as llama.cpp allows), not streamed:
    # the reply is then a list, completion i sampled with seed + i.
    n_cmpl: Annotated[int, Field(ge=1, le=4)] = 1
    # llama.cpp's sampler chain: names (["top_k", "top_p", "infill"] from llama.vscode and llama.vim)
    # or one letter each ("kpi"). See `chain`.
    samplers: Annotated[list[Annotated[str, Field(max_length=32)]], Field(max_length=32)] | str | None = None

    def sampling(self, request: Request) -> Sampling:
        # The fields were checked as this model's (the same bounded types as OpenAI's): translated
        # to OpenAI's names without a second validation.
        fields = SamplingFields.model_construct(
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            repetition_penalty=self.repeat_penalty,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            stop=self.stop,
            seed=None if self.seed in (None, -1) else self.seed,
        )
        max_tokens = None if self.n_predict in (None, -1) else self.n_predict
        sampling = sampling_of(fields, settings_of(request), max_tokens)
        options = dataclasses.replace(
            chain(sampling.options, self.samplers, self.temperature),
            min_indent=self.n_indent or 0,
            max_predict_s=self.t_max_predict_ms / 1000 if self.t_max_predict_ms else None,
        )
        return dataclasses.replace(sampling, options=options)


# llama.cpp's samplers that this server has, by name and by letter (common/sampling.cpp); the others
# (dry, typ_p, min_p, xtc, top_n_sigma, ...) are skipped, as llama.cpp skips names it does not know.
SAMPLER_NAMES = {"top_k": "k", "top_p": "p", "temperature": "t", "temp": "t", "penalties": "e", "infill": "i"}


def chain(options: CompletionOptions, samplers: list[str] | str | None, temperature: float | None) -> CompletionOptions:
    """The sampling that a request's `samplers` asks for. As in llama.cpp, only the listed samplers act
    and the byte is then drawn from what they leave: top-k, top-p, the penalties (repeat, frequency,
    presence) and temperature apply only when listed (unlisted, temperature is 1), and "infill" adds
    llama.cpp's infill sampler (sampling.infill_filter). The order is this server's (penalties,
    temperature, top-k, top-p, infill), not the list's. A request's temperature of 0 stays greedy.
    Without `samplers`, every field acts as sent."""
    if samplers is None:
        return options
    letters = set(samplers) if isinstance(samplers, str) else {SAMPLER_NAMES.get(n, "") for n in samplers}
    p = options.params
    greedy = temperature is not None and temperature <= 0
    params = dataclasses.replace(
        p,
        temperature=p.temperature if "t" in letters or greedy else 1.0,
        top_k=p.top_k if "k" in letters else None,
        top_p=p.top_p if "p" in letters else None,
        repetition_penalty=p.repetition_penalty if "e" in letters else 1.0,
        infill="i" in letters,
    )
    if "e" in letters:
        return dataclasses.replace(options, params=params)
    return dataclasses.replace(options, params=params, frequency_penalty=0.0, presence_penalty=0.0)


class LlamaCompletionRequest(LlamaSampling):
    prompt: str | Annotated[list[TokenId], Field(min_length=1)]


class ExtraFile(RequestModel):
    filename: str = ""
    text: str = ""


class InfillRequest(LlamaSampling):
    input_prefix: str = ""
    input_suffix: str = ""
    input_extra: Annotated[list[ExtraFile], Field(max_length=64)] | None = None
    prompt: str = ""  # the start of the middle


@router.post("/completion", response_model=None, openapi_extra=openapi_body(LlamaCompletionRequest))
async def completion(request: Request) -> Response:
    req = await read_body(request, LlamaCompletionRequest)
    config = engine_of(request).model.config  # 503 while loading
    sampling = req.sampling(request)
    prompt = _completion_prompt(req.prompt, sampling, config, repository_of(request))
    return await _serve(request, req, prompt, sampling)


def _completion_prompt(
    prompt: str | list[int], sampling: Sampling, config: ModelConfig, repository: Repository | None
) -> Prompt:
    """Byte ids as given; text as an infilling when it is a client's FIM template, else as given."""
    if isinstance(prompt, list):
        return plain_prompt(prompt, sampling.options, config)
    infill = fim.parse_markers(prompt)
    if infill is not None:
        return infill_prompt(infill, sampling.options, config, "prompt", repository)
    return plain_prompt(text_bytes(prompt), sampling.options, config)


@router.post("/infill", response_model=None, openapi_extra=openapi_body(InfillRequest))
async def infill(request: Request) -> Response:
    req = await read_body(request, InfillRequest)
    config = engine_of(request).model.config
    extra = tuple(fim.extra_chunk(f.filename, f.text) for f in req.input_extra or [] if f.text)
    wanted = Infill(text_bytes(req.input_prefix), text_bytes(req.input_suffix), text_bytes(req.prompt), extra)
    sampling = req.sampling(request)
    prompt = infill_prompt(wanted, sampling.options, config, "input_suffix", repository_of(request))
    return await _serve(request, req, prompt, sampling)


async def _serve(request: Request, req: LlamaSampling, prompt: Prompt, sampling: Sampling) -> Response:
    """Serve n_cmpl completions of `prompt`: a reply object (a list of them when n_cmpl > 1), or a stream."""
    n = req.n_cmpl
    if n > 1 and req.stream:
        raise APIError(400, "n_cmpl above 1 is served without streaming", param="n_cmpl")
    warm = prompt.options.max_tokens == 0  # llama.vim's and llama.vscode's warm-up: fill a row's cache
    job = GenerationRequest([prompt], sampling.seed, n, stream=bool(req.stream), warm=warm)
    summary = _Summary(settings_of(request).name, prompt, sampling.seed)

    def reply(outcomes: list[Outcome]) -> Response:
        replies = []
        for i, o in enumerate(outcomes):
            reply = summary.final(o.text.decode("utf-8", "replace"), o.end, i, o.first_event)
            replies.append(reply if req.response_fields is None else only_fields(reply, req.response_fields))
        return JSONResponse(replies if n > 1 else replies[0])

    return await serve(request, job, reply, lambda: _Stream(summary))


def only_fields(reply: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """llama.cpp's response_fields: {"timings/prompt_n": ...} for each path that exists in the reply."""
    out: dict[str, Any] = {}
    for path in paths:
        value: Any = reply
        for key in path.split("/"):
            if not isinstance(value, dict) or key not in value:
                break
            value = value[key]
        else:
            out[path] = value
    return out


class _Summary:
    """llama.cpp's closing fields: what stopped generation, counts, settings and timings."""

    def __init__(self, model: str, prompt: Prompt, seed: int) -> None:
        self.model, self.prompt, self.seed = model, prompt, seed
        self.started = time.perf_counter()

    def final(self, content: str, done: Finished, index: int = 0, first_event: float | None = None) -> dict[str, Any]:
        """The closing object; first_event: when the completion's first event came (the prompt read)."""
        o, p = self.prompt.options, self.prompt.options.params  # as planned: an infilling's limit and stops
        # llama.cpp ends a completion by its indentation or time limit with stop_type "limit".
        stop_type = {"eos": "eos", "word": "word"}.get(done.stopped_by or "", "limit")
        now = time.perf_counter()
        read = (first_event or now) - self.started  # queueing and prefill, until the first byte
        generating = now - (first_event or now)
        n_gen, n_prompt = done.completion_tokens, len(self.prompt.ids)
        return {
            "index": index,
            "content": content,
            "stop": True,
            "model": self.model,
            "tokens_predicted": done.completion_tokens,
            "tokens_evaluated": n_prompt,
            "truncated": self.prompt.truncated,
            "stop_type": stop_type,
            "stopped_eos": stop_type == "eos",
            "stopped_word": stop_type == "word",
            "stopped_limit": stop_type == "limit",
            "stopping_word": (done.stop_word or b"").decode("utf-8", "replace"),
            "prompt": prompt_text(list(done.prompt)),  # what the model read, special ids as text
            "generation_settings": {
                "n_predict": o.max_tokens,
                "temperature": p.temperature,
                "top_k": p.top_k,
                "top_p": p.top_p,
                "repeat_penalty": p.repetition_penalty,
                "frequency_penalty": o.frequency_penalty,
                "presence_penalty": o.presence_penalty,
                "seed": self.seed,
                "stop": [s.decode("utf-8", "replace") for s in o.stop],
                "n_indent": o.min_indent,
                "t_max_predict_ms": round(o.max_predict_s * 1000) if o.max_predict_s is not None else -1,
            },
            "tokens_cached": done.prompt_cached,  # prompt bytes a recent request had left in the row's cache
            "timings": {
                "prompt_n": n_prompt,
                "prompt_ms": read * 1000,
                "prompt_per_token_ms": read * 1000 / max(1, n_prompt),
                "prompt_per_second": n_prompt / read if read > 0 else 0.0,
                "predicted_n": n_gen,
                "predicted_ms": generating * 1000,
                "predicted_per_token_ms": generating * 1000 / max(1, n_gen),
                "predicted_per_second": n_gen / generating if generating > 0 else 0.0,
            },
        }


class _Stream(StreamWriter):
    """llama.cpp's stream: {"content", "stop": false} objects, then the closing object; no [DONE]."""

    done = False

    def __init__(self, summary: _Summary) -> None:
        self.summary = summary
        self.first: float | None = None  # when the first byte came: the prompt had been read

    def text(self, event: Chunk, text: str) -> Iterable[Payload]:
        return self._content(text)

    def finish(self, event: Finished, text: str) -> Iterable[Payload]:
        return [*self._content(text), self.summary.final("", event, 0, self.first)]

    def _content(self, text: str) -> list[Payload]:
        self.first = self.first or time.perf_counter()
        return [{"index": 0, "content": text, "stop": False}] if text else []
