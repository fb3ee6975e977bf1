"""POST /v1/completions: text completion, with echo and per-byte logprobs (prompt included)."""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from multiscale_transformer.generation import fim
from multiscale_transformer.generation.fim import Infill
from multiscale_transformer.model.vocab import EOS_ID, ByteTokenizer
from multiscale_transformer.serving.common import (
    SSE_DONE,
    check_capacity,
    engine_of,
    new_id,
    now,
    read_body,
    sampling_of,
    settings_of,
    sse,
    truncate,
)
from multiscale_transformer.serving.engine import ByteLogprob, Chunk, Failed, Finished, PromptLogprobs, Spec
from multiscale_transformer.serving.errors import APIError, error_body
from multiscale_transformer.serving.infill import plan_infill
from multiscale_transformer.serving.protocol import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    Usage,
    openapi_body,
)
from multiscale_transformer.serving.submission import ClientGone, Submission
from multiscale_transformer.serving.tokens import token_text
from multiscale_transformer.text import text_bytes

router = APIRouter()
TOKENIZER = ByteTokenizer()  # text of ids: BOS/EOS given as prompt context are not text


def prompts_of(req: CompletionRequest) -> list[list[int]]:
    """The prompt(s) as byte lists: a string, strings, byte ids, or lists of byte ids."""
    p = req.prompt
    if isinstance(p, str):
        items: list[list[int]] = [list(text_bytes(p))]
    elif p and all(isinstance(x, int) for x in p):
        items = [list(p)]  # type: ignore[arg-type]
    else:
        items = [list(text_bytes(x)) if isinstance(x, str) else list(x) for x in p]  # type: ignore[union-attr]
    if not items or not all(items):
        raise APIError(400, "the prompt is empty: give at least one byte", param="prompt", code="empty_prompt")
    return items


def infills_of(req: CompletionRequest, count: int) -> list[Infill | None]:
    """Per prompt, the infilling it asks for: `suffix` (with one string prompt) or FIM marker text."""
    if req.suffix:  # an empty suffix leaves nothing to fill: a plain completion
        if not isinstance(req.prompt, str):
            raise APIError(400, "suffix needs the prompt as one string", param="suffix", code="unsupported")
        return [Infill(text_bytes(req.prompt), text_bytes(req.suffix))]
    if isinstance(req.prompt, str):
        return [fim.parse_markers(req.prompt)]
    if all(isinstance(t, str) for t in req.prompt):
        return [fim.parse_markers(t) for t in req.prompt]  # type: ignore[arg-type]
    return [None] * count  # byte ids: no marker text


@dataclass
class ChoiceState:
    """What one choice has produced so far."""

    prompt: list[int]
    echo: bool
    out: bytearray = field(default_factory=bytearray)
    records: list[ByteLogprob | None] = field(default_factory=list)
    prompt_records: list[ByteLogprob | None] | None = None
    finish_reason: str | None = None
    completion_tokens: int = 0
    eos: ByteLogprob | None = None  # the sampled EOS's logprob, listed after the text's bytes
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    offset: int = 0


def logprobs_of(ids: list[int], records: list[ByteLogprob | None], top: int, start: int) -> CompletionLogprobs:
    """OpenAI's completion logprobs for bytes `ids`; text_offset counts bytes from `start`."""
    return CompletionLogprobs(
        tokens=[token_text(i) for i in ids],
        token_logprobs=[r.logprob if r else None for r in records],
        top_logprobs=[({token_text(t): lp for t, lp in r.top} if r else None) for r in records] if top else None,
        text_offset=list(range(start, start + len(ids))),
    )


@router.post("/v1/completions", response_model=None, openapi_extra=openapi_body(CompletionRequest))
async def completions(request: Request) -> Response:
    req = await read_body(request, CompletionRequest)
    engine = engine_of(request)  # 503 while loading, before anything needs the context length
    settings = settings_of(request)
    n = req.n or 1
    if req.best_of not in (None, n):
        raise APIError(400, "best_of is not supported (only best_of == n)", "best_of", "unsupported")
    raw = prompts_of(req)
    infills = infills_of(req, len(raw))
    echo = bool(req.echo)
    if echo and any(infills):
        raise APIError(400, "echo cannot be combined with fill-in-the-middle", param="echo", code="unsupported")
    check_capacity(len(raw) * n, settings)
    sampling = sampling_of(req, settings, req.max_tokens, [])
    planned = [
        plan_infill(request, infill, sampling, "suffix" if req.suffix else "prompt")
        if infill is not None
        else (truncate(p, request), sampling)
        for p, infill in zip(raw, infills, strict=True)
    ]
    prompts = [ids for ids, _ in planned]
    specs = [
        Spec(
            prompt=prompt,
            options=own.options,
            seed=(sampling.seed + j) % (1 << 64),
            logprobs=req.logprobs,
            prompt_logprobs=echo and req.logprobs is not None,
        )
        for prompt, own in planned
        for j in range(n)
    ]
    choices = [ChoiceState(spec.prompt, echo) for spec in specs]
    submission = Submission(engine, specs, request)
    meta = {"id": new_id("cmpl"), "created": now(), "model": settings.name}
    usage_of = _usage(prompts, choices)
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(
            _stream(submission, choices, req.logprobs, meta, include_usage, usage_of), media_type="text/event-stream"
        )
    try:
        async for event in submission.events():
            _apply(event, choices[event.index])
    except ClientGone:
        return Response(status_code=499)
    finally:
        submission.cancel()
    result = Completion(
        **meta,
        choices=[_final_choice(i, c, req.logprobs) for i, c in enumerate(choices)],
        usage=usage_of(),
    )
    return JSONResponse(result.model_dump())


def _usage(prompts: list[list[int]], choices: list[ChoiceState]) -> Callable[[], Usage]:
    """Usage counts bytes: each prompt once (however many choices), every byte sampled for a choice."""

    def usage() -> Usage:
        prompt_tokens = sum(map(len, prompts))
        completion_tokens = sum(c.completion_tokens for c in choices)
        return Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        )

    return usage


def _apply(event: object, choice: ChoiceState) -> None:
    if isinstance(event, Chunk):
        choice.out += event.data
        choice.records.extend(event.logprobs)
    elif isinstance(event, PromptLogprobs):
        choice.prompt_records = event.logprobs
    elif isinstance(event, Finished):
        choice.finish_reason = event.finish_reason
        choice.completion_tokens = event.completion_tokens
        choice.eos = event.eos
    elif isinstance(event, Failed):
        raise APIError(event.status, event.message)


def _final_choice(index: int, c: ChoiceState, top: int | None) -> CompletionChoice:
    ids = (c.prompt if c.echo else []) + list(c.out)
    text = TOKENIZER.decode(ids)
    logprobs = None
    if top is not None:
        records = (c.prompt_records or []) + c.records if c.echo else c.records
        if c.eos is not None:
            logprobs = logprobs_of([*ids, EOS_ID], [*records, c.eos], top, 0)
        else:
            logprobs = logprobs_of(ids, records, top, 0)
    return CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=c.finish_reason)  # type: ignore[arg-type]


async def _stream(
    submission: Submission,
    choices: list[ChoiceState],
    top: int | None,
    meta: dict[str, object],
    include_usage: bool,
    usage_of: Callable[[], Usage],
) -> AsyncIterator[str]:
    def chunk(index: int, text: str, logprobs: CompletionLogprobs | None, finish: str | None) -> str:
        choice = CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=finish)  # type: ignore[arg-type]
        return sse(Completion(**meta, choices=[choice]))  # type: ignore[arg-type]

    try:
        if top is None:  # the echoed prompt needs no logprobs: send it at once
            for i, c in enumerate(choices):
                if c.echo:
                    yield chunk(i, TOKENIZER.decode(c.prompt), None, None)
                    c.offset = len(c.prompt)
        async for event in submission.events():
            c = choices[event.index]
            if isinstance(event, PromptLogprobs):
                yield chunk(
                    event.index,
                    TOKENIZER.decode(c.prompt),
                    logprobs_of(c.prompt, event.logprobs, top or 0, 0),
                    None,
                )
                c.offset = len(c.prompt)
            elif isinstance(event, Chunk):
                text = c.decoder.decode(event.data)
                lp = logprobs_of(list(event.data), list(event.logprobs), top, c.offset) if top is not None else None
                c.offset += len(event.data)
                yield chunk(event.index, text, lp, None)
            elif isinstance(event, Finished):
                c.completion_tokens = event.completion_tokens
                lp = logprobs_of([EOS_ID], [event.eos], top or 0, c.offset) if event.eos is not None else None
                yield chunk(event.index, c.decoder.decode(b"", final=True), lp, event.finish_reason)
            elif isinstance(event, Failed):
                yield sse(error_body(event.status, event.message))
                yield SSE_DONE  # the stream still ends as OpenAI streams end
                return
        if include_usage:
            yield sse(Completion(**meta, choices=[], usage=usage_of()))  # type: ignore[arg-type]
        yield SSE_DONE
    except ClientGone:
        return
    finally:
        submission.cancel()
