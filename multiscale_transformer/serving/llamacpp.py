"""llama.cpp's native endpoints: POST /completion and POST /infill, in llama.cpp's request and reply shapes.

Continue's `llama.cpp` provider and other llama.cpp clients post `{"prompt", "n_predict", "stop",
"stream"}` and read `content` (streamed as SSE `data:` objects, the last one with `"stop": true`;
no `[DONE]`). `/infill` takes `input_prefix`, `input_suffix` and `input_extra` (more files, put
before the prefix as earlier context: they are the first thing cut when the context is short);
its `prompt` is the start of the middle. A `/completion` prompt with FIM marker text is an
infilling too. Sampling fields use llama.cpp's names (`repeat_penalty`; seed -1 = random).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from multiscale_transformer.generation import fim
from multiscale_transformer.generation.fim import Infill
from multiscale_transformer.serving.common import (
    Sampling,
    engine_of,
    read_body,
    sampling_of,
    settings_of,
    sse,
    truncate,
)
from multiscale_transformer.serving.engine import Finished
from multiscale_transformer.serving.errors import APIError, validation_error
from multiscale_transformer.serving.infill import plan_infill, prompt_ids, specs_for
from multiscale_transformer.serving.protocol import MAX_STOPS, SamplingFields, TokenId, openapi_body
from multiscale_transformer.serving.submission import ClientGone, Submission, collect, guarded, text_deltas
from multiscale_transformer.text import text_bytes

router = APIRouter()


class LlamaSampling(BaseModel):
    """The sampling fields of llama.cpp's native requests (unknown fields, e.g. cache_prompt, ignored)."""

    model_config = ConfigDict(extra="ignore", strict=True)

    n_predict: Annotated[int, Field(ge=-1)] | None = None  # -1 or absent: the server's default
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_k: Annotated[int, Field(ge=0)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    repeat_penalty: Annotated[float, Field(gt=0, le=10)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    stop: Annotated[list[str], Field(max_length=MAX_STOPS)] | None = None
    seed: int | None = None
    stream: bool | None = None
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

    def sampling(self, request: Request) -> Sampling:
        try:
            fields = self._fields()
        except ValidationError as exc:  # e.g. a stop sequence over the size limit: 400, as on /v1
            raise validation_error(exc) from None
        max_tokens = None if self.n_predict in (None, -1) else self.n_predict
        sampling = sampling_of(fields, settings_of(request), max_tokens, [])
        options = dataclasses.replace(
            sampling.options,
            min_indent=self.n_indent or 0,
            max_predict_s=self.t_max_predict_ms / 1000 if self.t_max_predict_ms else None,
        )
        return dataclasses.replace(sampling, options=options)

    def _fields(self) -> SamplingFields:
        return SamplingFields(
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            repetition_penalty=self.repeat_penalty,
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            stop=self.stop,
            seed=None if self.seed in (None, -1) else self.seed,
        )


class LlamaCompletionRequest(LlamaSampling):
    prompt: str | Annotated[list[TokenId], Field(min_length=1)]


class ExtraFile(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

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
    engine_of(request)  # 503 while loading
    sampling = req.sampling(request)
    if isinstance(req.prompt, list):
        ids = truncate(list(req.prompt), request)
        return await _run(request, req, ids, sampling, len(ids) < len(req.prompt))
    infill = fim.parse_markers(req.prompt)
    ids, sampling = prompt_ids(request, infill, req.prompt, sampling, "prompt")
    cut = fim.truncated(infill, ids) if infill is not None else len(ids) < len(text_bytes(req.prompt))
    return await _run(request, req, ids, sampling, cut)


@router.post("/infill", response_model=None, openapi_extra=openapi_body(InfillRequest))
async def infill(request: Request) -> Response:
    req = await read_body(request, InfillRequest)
    engine_of(request)
    extra = "".join(f"# Path: {f.filename}\n{f.text}\n" if f.filename else f"{f.text}\n" for f in req.input_extra or [])
    wanted = Infill(text_bytes(extra + req.input_prefix), text_bytes(req.input_suffix), text_bytes(req.prompt))
    ids, sampling = plan_infill(request, wanted, req.sampling(request), "input_suffix")
    return await _run(request, req, ids, sampling, fim.truncated(wanted, ids))


async def _run(request: Request, req: LlamaSampling, ids: list[int], sampling: Sampling, cut: bool) -> Response:
    """Serve the completions of `ids`; `cut`: the request's text did not all fit the context."""
    settings = settings_of(request)
    n = req.n_cmpl
    if n > 1 and req.stream:
        raise APIError(400, "n_cmpl above 1 is served without streaming", param="n_cmpl")
    submission = Submission(engine_of(request), specs_for(ids, sampling, n), request)
    summary = _Summary(settings.name, len(ids), sampling, cut)
    if req.stream:
        return StreamingResponse(guarded(submission, _stream(submission, summary)), media_type="text/event-stream")
    try:
        outcomes = await collect(submission, n)
    except ClientGone:
        return Response(status_code=499)
    replies = []
    for i, outcome in enumerate(outcomes):
        assert outcome.finished is not None
        reply = summary.final(outcome.text.decode("utf-8", "replace"), outcome.finished, i, outcome.first_event)
        replies.append(reply if req.response_fields is None else only_fields(reply, req.response_fields))
    return JSONResponse(replies if n > 1 else replies[0])


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

    def __init__(self, model: str, n_prompt: int, sampling: Sampling, truncated: bool) -> None:
        self.model, self.n_prompt, self.sampling, self.truncated = model, n_prompt, sampling, truncated
        self.started = time.perf_counter()

    def final(self, content: str, done: Finished, index: int = 0, first_event: float | None = None) -> dict[str, Any]:
        """The closing object; first_event: when the completion's first event came (the prompt read)."""
        o, p = self.sampling.options, self.sampling.options.params
        # llama.cpp ends a completion by its indentation or time limit with stop_type "limit".
        stop_type = {"eos": "eos", "word": "word"}.get(done.stopped_by or "", "limit")
        now = time.perf_counter()
        read = (first_event or now) - self.started  # queueing and prefill, until the first byte
        generating = now - (first_event or now)
        n_gen = done.completion_tokens
        return {
            "index": index,
            "content": content,
            "stop": True,
            "model": self.model,
            "tokens_predicted": done.completion_tokens,
            "tokens_evaluated": self.n_prompt,
            "truncated": self.truncated,
            "stop_type": stop_type,
            "stopped_eos": stop_type == "eos",
            "stopped_word": stop_type == "word",
            "stopped_limit": stop_type == "limit",
            "stopping_word": (done.stop_word or b"").decode("utf-8", "replace"),
            "generation_settings": {
                "n_predict": o.max_tokens,
                "temperature": p.temperature,
                "top_k": p.top_k,
                "top_p": p.top_p,
                "repeat_penalty": p.repetition_penalty,
                "frequency_penalty": o.frequency_penalty,
                "presence_penalty": o.presence_penalty,
                "seed": self.sampling.seed,
                "stop": [s.decode("utf-8", "replace") for s in o.stop],
                "n_indent": o.min_indent,
                "t_max_predict_ms": round(o.max_predict_s * 1000) if o.max_predict_s is not None else -1,
            },
            "tokens_cached": 0,  # no prompt is reused between requests yet
            "timings": {
                "prompt_n": self.n_prompt,
                "prompt_ms": read * 1000,
                "prompt_per_token_ms": read * 1000 / max(1, self.n_prompt),
                "prompt_per_second": self.n_prompt / read if read > 0 else 0.0,
                "predicted_n": n_gen,
                "predicted_ms": generating * 1000,
                "predicted_per_token_ms": generating * 1000 / max(1, n_gen),
                "predicted_per_second": n_gen / generating if generating > 0 else 0.0,
            },
        }


async def _stream(submission: Submission, summary: _Summary) -> AsyncIterator[str]:
    first: float | None = None
    async for _, text, finished in text_deltas(submission, 1):
        first = first or time.perf_counter()
        if text:
            yield sse({"index": 0, "content": text, "stop": False})
        if finished is not None:
            yield sse(summary.final("", finished, 0, first))
