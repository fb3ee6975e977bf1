"""POST /v1/chat/completions: messages rendered through the chat template, then completed."""

from __future__ import annotations

import codecs
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from multiscale_transformer.serving.chat import ChatTemplate
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
from multiscale_transformer.serving.engine import ByteLogprob, Chunk, Failed, Finished, Spec
from multiscale_transformer.serving.errors import APIError, error_body
from multiscale_transformer.serving.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChoiceLogprobs,
    Delta,
    TokenLogprob,
    TopLogprob,
    Usage,
    openapi_body,
)
from multiscale_transformer.serving.submission import ClientGone, Submission
from multiscale_transformer.serving.tokens import token_bytes, token_text
from multiscale_transformer.text import text_bytes

router = APIRouter()


def chat_logprobs(records: list[ByteLogprob]) -> ChoiceLogprobs:
    return ChoiceLogprobs(
        content=[
            TokenLogprob(
                token=token_text(r.id),
                logprob=r.logprob,
                bytes=token_bytes(r.id),
                top_logprobs=[TopLogprob(token=token_text(t), logprob=lp, bytes=token_bytes(t)) for t, lp in r.top],
            )
            for r in records
        ]
    )


@router.post("/v1/chat/completions", response_model=None, openapi_extra=openapi_body(ChatCompletionRequest))
async def chat_completions(request: Request) -> Response:
    req = await read_body(request, ChatCompletionRequest)
    engine = engine_of(request)  # 503 while loading, before anything needs the context length
    settings = settings_of(request)
    template = settings.chat_template or ChatTemplate()
    n = req.n or 1
    check_capacity(n, settings)
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    sampling = sampling_of(req, settings, max_tokens, template.stop)
    prompt = truncate(list(text_bytes(template.render(req.messages))), request)
    top = (req.top_logprobs or 0) if req.logprobs else None
    specs = [
        Spec(
            prompt=prompt,
            options=sampling.options,
            seed=(sampling.seed + j) % (1 << 64),
            logprobs=top,
        )
        for j in range(n)
    ]
    submission = Submission(engine, specs, request)
    meta = {"id": new_id("chatcmpl"), "created": now(), "model": settings.name}
    if req.stream:
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        return StreamingResponse(
            _stream(submission, n, len(prompt), top, meta, include_usage), media_type="text/event-stream"
        )
    outs = [bytearray() for _ in range(n)]
    records: list[list[ByteLogprob]] = [[] for _ in range(n)]
    finish: list[str | None] = [None] * n
    completion_tokens = 0
    try:
        async for event in submission.events():
            if isinstance(event, Chunk):
                outs[event.index] += event.data
                records[event.index].extend(event.logprobs)
            elif isinstance(event, Finished):
                finish[event.index] = event.finish_reason
                completion_tokens += event.completion_tokens
            elif isinstance(event, Failed):
                raise APIError(event.status, event.message)
    except ClientGone:
        return Response(status_code=499)
    finally:
        submission.cancel()
    result = ChatCompletion(
        **meta,  # type: ignore[arg-type]
        choices=[
            ChatChoice(
                index=i,
                message=AssistantMessage(content=bytes(outs[i]).decode("utf-8", "replace")),
                logprobs=chat_logprobs(records[i]) if top is not None else None,
                finish_reason=finish[i],  # type: ignore[arg-type]
            )
            for i in range(n)
        ],
        usage=Usage(
            prompt_tokens=len(prompt), completion_tokens=completion_tokens, total_tokens=len(prompt) + completion_tokens
        ),
    )
    return JSONResponse(result.model_dump())


async def _stream(
    submission: Submission, n: int, prompt_tokens: int, top: int | None, meta: dict[str, object], include_usage: bool
) -> AsyncIterator[str]:
    def chunk(index: int, delta: Delta, logprobs: ChoiceLogprobs | None = None, finish: str | None = None) -> str:
        choice = ChatChunkChoice(index=index, delta=delta, logprobs=logprobs, finish_reason=finish)  # type: ignore[arg-type]
        return sse(ChatCompletionChunk(**meta, choices=[choice]))  # type: ignore[arg-type]

    decoders = [codecs.getincrementaldecoder("utf-8")("replace") for _ in range(n)]
    completion_tokens = 0
    try:
        for i in range(n):
            yield chunk(i, Delta(role="assistant", content=""))
        async for event in submission.events():
            i = event.index
            if isinstance(event, Chunk):
                logprobs = chat_logprobs(list(event.logprobs)) if top is not None else None
                yield chunk(i, Delta(content=decoders[i].decode(event.data)), logprobs)
            elif isinstance(event, Finished):
                completion_tokens += event.completion_tokens
                tail = decoders[i].decode(b"", final=True)
                if tail:
                    yield chunk(i, Delta(content=tail))
                yield chunk(i, Delta(), finish=event.finish_reason)
            elif isinstance(event, Failed):
                yield sse(error_body(event.status, event.message))
                yield SSE_DONE  # the stream still ends as OpenAI streams end
                return
        if include_usage:
            usage = Usage(
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            )
            yield sse(ChatCompletionChunk(**meta, choices=[], usage=usage))  # type: ignore[arg-type]
        yield SSE_DONE
    except ClientGone:
        return
    finally:
        submission.cancel()
