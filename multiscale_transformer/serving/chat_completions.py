"""POST /v1/chat/completions: messages rendered through the chat template, then completed.

Its reply and stream shapes (`chat_reply`, `ChatStream`) serve Mistral's FIM endpoint too.
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from multiscale_transformer.serving.chat import ChatTemplate
from multiscale_transformer.serving.common import engine_of, read_body, reply_header, settings_of
from multiscale_transformer.serving.engine import ByteLogprob, Chunk, Finished
from multiscale_transformer.serving.pipeline import Outcome, serve
from multiscale_transformer.serving.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChoiceLogprobs,
    Delta,
    Reply,
    TokenLogprob,
    TopLogprob,
    Usage,
    openapi_body,
)
from multiscale_transformer.serving.request import GenerationRequest, plain_prompt, sampling_of
from multiscale_transformer.serving.sse import OpenAIStream
from multiscale_transformer.serving.tokens import token_bytes, token_text
from multiscale_transformer.text import text_bytes

router = APIRouter()


@router.post("/v1/chat/completions", response_model=None, openapi_extra=openapi_body(ChatCompletionRequest))
async def chat_completions(request: Request) -> Response:
    req = await read_body(request, ChatCompletionRequest)
    config = engine_of(request).model.config  # 503 while loading, before anything needs the context length
    settings = settings_of(request)
    template = settings.chat_template or ChatTemplate()
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    sampling = sampling_of(req, settings, max_tokens, template.stop)
    prompt = plain_prompt(text_bytes(template.render(req.messages)), sampling.options, config)
    top = (req.top_logprobs or 0) if req.logprobs else None
    job = GenerationRequest([prompt], sampling.seed, req.n or 1, logprobs=top, stream=bool(req.stream))
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return await answer(request, job, "chatcmpl", include_usage)


async def answer(request: Request, job: GenerationRequest, id_prefix: str, include_usage: bool) -> Response:
    """Serve `job` in the chat-completion shapes: a ChatCompletion, or a stream of chunks."""
    header = reply_header(request, id_prefix)
    return await serve(
        request,
        job,
        lambda outcomes: JSONResponse(chat_reply(job, outcomes, header).model_dump()),
        lambda: ChatStream(job, header, include_usage),
    )


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


def chat_reply(job: GenerationRequest, outcomes: list[Outcome], header: dict[str, object]) -> ChatCompletion:
    choices = [
        ChatChoice(
            index=i,
            message=AssistantMessage(content=o.text.decode("utf-8", "replace")),
            logprobs=chat_logprobs(o.logprobs) if job.logprobs is not None else None,
            finish_reason=o.end.finish_reason,  # type: ignore[arg-type]
        )
        for i, o in enumerate(outcomes)
    ]
    completion_tokens = sum(o.end.completion_tokens for o in outcomes)
    return ChatCompletion(**header, choices=choices, usage=Usage.of(job.prompt_tokens, completion_tokens))  # type: ignore[arg-type]


class ChatStream(OpenAIStream):
    """Chat-completion chunks: the assistant's role first, then content deltas, then each finish."""

    reply = ChatCompletionChunk

    def delta(
        self, index: int, delta: Delta, logprobs: ChoiceLogprobs | None = None, finish: str | None = None
    ) -> Reply:
        return self.chunk(ChatChunkChoice(index=index, delta=delta, logprobs=logprobs, finish_reason=finish))  # type: ignore[arg-type]

    def opening(self) -> Iterable[Reply]:
        return [self.delta(i, Delta(role="assistant", content="")) for i in range(self.job.count)]

    def text(self, event: Chunk, text: str) -> Iterable[Reply]:
        logprobs = chat_logprobs(list(event.logprobs)) if self.job.logprobs is not None else None
        yield self.delta(event.index, Delta(content=text), logprobs)

    def finish(self, event: Finished, text: str) -> Iterable[Reply]:
        if text:
            yield self.delta(event.index, Delta(content=text))
        yield self.delta(event.index, Delta(), finish=event.finish_reason)
