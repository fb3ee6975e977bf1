"""Fill-in-the-middle requests: the shapes editors send all become one `Infill` (generation/fim.py).

`/v1/completions` reads `suffix` or FIM marker text in its prompt; this module serves Mistral's
`/v1/fim/completions` (Continue's `mistral` provider); serving/llamacpp.py serves llama.cpp's
`/infill` and `/completion`. An empty or absent suffix is a plain completion of the prompt (there
is no middle to fill), which every model can serve; a real infilling with a model that was not
trained for it is a 400 naming the cause.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import Field

from multiscale_transformer.errors import UserError
from multiscale_transformer.generation import fim
from multiscale_transformer.generation.fim import Infill
from multiscale_transformer.serving.common import (
    SSE_DONE,
    Sampling,
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
from multiscale_transformer.serving.engine import Spec
from multiscale_transformer.serving.errors import APIError
from multiscale_transformer.serving.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    Delta,
    SamplingFields,
    Usage,
    openapi_body,
)
from multiscale_transformer.serving.submission import ClientGone, Submission, collect, guarded, text_deltas
from multiscale_transformer.text import text_bytes

router = APIRouter()


def plan_infill(request: Request, infill: Infill, sampling: Sampling, param: str) -> tuple[list[int], Sampling]:
    """The prompt ids of an infilling and its sampling: max_tokens cut to the context, and the stops with
    which editor servers end an infilling (generation/fim.py `editor_stops`)."""
    config = request.app.state.model_config
    try:
        ids, max_tokens = fim.plan(config, infill, sampling.options.max_tokens)
    except UserError as exc:
        code = "fim_unsupported" if not config.fim else "invalid_fim_prompt"
        raise APIError(400, str(exc), param=param, code=code) from None
    options = sampling.options
    stop = (*options.stop, *(s for s in fim.editor_stops(infill) if s not in options.stop))
    return ids, dataclasses.replace(sampling, options=dataclasses.replace(options, max_tokens=max_tokens, stop=stop))


def prompt_ids(
    request: Request, infill: Infill | None, text: str, sampling: Sampling, param: str
) -> tuple[list[int], Sampling]:
    """The ids one completion starts from: an infilling's layout, or the plain prompt (cut to the context)."""
    if infill is not None:
        return plan_infill(request, infill, sampling, param)
    ids = truncate(list(text_bytes(text)), request)
    if not ids:
        raise APIError(400, "the prompt is empty: give at least one byte", param="prompt", code="empty_prompt")
    return ids, sampling


def specs_for(ids: list[int], sampling: Sampling, n: int) -> list[Spec]:
    return [Spec(prompt=ids, options=sampling.options, seed=(sampling.seed + j) % (1 << 64)) for j in range(n)]


class FimRequest(SamplingFields):
    """Mistral's FIM request (`random_seed` is its name for the seed; `min_tokens` is accepted)."""

    prompt: str
    suffix: str | None = None
    min_tokens: Annotated[int, Field(ge=0)] | None = None
    random_seed: int | None = None


@router.post("/v1/fim/completions", response_model=None, openapi_extra=openapi_body(FimRequest))
async def fim_completions(request: Request) -> Response:
    req = await read_body(request, FimRequest)
    engine = engine_of(request)
    settings = settings_of(request)
    if req.seed is None and req.random_seed is not None:
        req = req.model_copy(update={"seed": req.random_seed})
    n = req.n or 1
    check_capacity(n, settings)
    infill = Infill(text_bytes(req.prompt), text_bytes(req.suffix)) if req.suffix else None
    ids, sampling = prompt_ids(request, infill, req.prompt, sampling_of(req, settings, req.max_tokens, []), "suffix")
    submission = Submission(engine, specs_for(ids, sampling, n), request)
    meta = {"id": new_id("fim"), "created": now(), "model": settings.name}
    if req.stream:
        return StreamingResponse(
            guarded(submission, _stream(submission, n, meta), SSE_DONE), media_type="text/event-stream"
        )
    try:
        outcomes = await collect(submission, n)
    except ClientGone:
        return Response(status_code=499)
    completion_tokens = sum(o.finished.completion_tokens for o in outcomes if o.finished)
    result = ChatCompletion(
        **meta,  # type: ignore[arg-type]
        choices=[
            ChatChoice(
                index=i,
                message=AssistantMessage(content=o.text.decode("utf-8", "replace")),
                finish_reason=o.finished.finish_reason if o.finished else None,  # type: ignore[arg-type]
            )
            for i, o in enumerate(outcomes)
        ],
        usage=Usage(
            prompt_tokens=len(ids), completion_tokens=completion_tokens, total_tokens=len(ids) + completion_tokens
        ),
    )
    return JSONResponse(result.model_dump())


async def _stream(submission: Submission, n: int, meta: dict[str, object]) -> AsyncIterator[str]:
    """Chat-completion chunks, as Mistral streams FIM: clients read choices[0].delta.content."""

    def chunk(index: int, delta: Delta, finish: str | None = None) -> str:
        choice = ChatChunkChoice(index=index, delta=delta, finish_reason=finish)  # type: ignore[arg-type]
        return sse(ChatCompletionChunk(**meta, choices=[choice]))  # type: ignore[arg-type]

    for i in range(n):
        yield chunk(i, Delta(role="assistant", content=""))
    async for index, text, finished in text_deltas(submission, n):
        if text:
            yield chunk(index, Delta(content=text))
        if finished is not None:
            yield chunk(index, Delta(), finished.finish_reason)
    yield SSE_DONE
