"""The one SSE publisher: every streaming endpoint's events, written by its `StreamWriter`.

What a stream does is decided here once, for every wire shape:
- text is decoded per completion as the bytes arrive, so a character split across chunks arrives
  whole (an undecodable byte becomes U+FFFD, as in the non-streamed replies);
- a piece that carries neither text nor logprobs (the first bytes of a character) is not sent;
- a completion that fails once the stream has begun (the status line is sent by then) ends the
  stream with an OpenAI-shaped error event, then the protocol's last event if it has one;
- a client that leaves ends the stream quietly; the jobs are cancelled however it ends.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import AsyncIterator, Iterable

from pydantic import BaseModel

from multiscale_transformer.serving.engine import Chunk, Failed, Finished, PromptLogprobs
from multiscale_transformer.serving.errors import error_body
from multiscale_transformer.serving.protocol import Reply, Usage
from multiscale_transformer.serving.request import GenerationRequest
from multiscale_transformer.serving.submission import ClientGone, Submission

Payload = BaseModel | dict[str, object]
SSE_DONE = "data: [DONE]\n\n"


def sse(payload: Payload) -> str:
    data = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload)
    return f"data: {data}\n\n"


class StreamWriter:
    """One wire shape's stream: the payloads to send at each point of it (none by default)."""

    # OpenAI's streams end with `data: [DONE]`, after an error event too; llama.cpp's end with the
    # object that says `"stop": true`, and have no such line.
    done = True

    def opening(self) -> Iterable[Payload]:
        """Before any event: e.g. the assistant role, or an echoed prompt that needs no logprobs."""
        return ()

    def prompt(self, event: PromptLogprobs) -> Iterable[Payload]:
        return ()

    def text(self, event: Chunk, text: str) -> Iterable[Payload]:
        """A completion's new bytes: `text` is what of them decodes now, event.logprobs their records."""
        return ()

    def finish(self, event: Finished, text: str) -> Iterable[Payload]:
        """A completion's end: `text` is what its decoder still held (a cut character as U+FFFD)."""
        return ()

    def closing(self, completion_tokens: int) -> Iterable[Payload]:
        """After every completion ended: e.g. the usage; completion_tokens counts them all."""
        return ()


class OpenAIStream(StreamWriter):
    """OpenAI's streams: each chunk repeats the reply's id, time and model; the usage comes last when
    the request's stream_options ask for it."""

    reply: type[Reply]  # the chunk's model: Completion or ChatCompletionChunk

    def __init__(self, job: GenerationRequest, header: dict[str, object], include_usage: bool) -> None:
        self.job, self.header, self.include_usage = job, header, include_usage

    def chunk(self, choice: BaseModel) -> Reply:
        return self.reply(**self.header, choices=[choice])

    def closing(self, completion_tokens: int) -> Iterable[Payload]:
        if self.include_usage:
            yield self.reply(**self.header, choices=[], usage=Usage.of(self.job.prompt_tokens, completion_tokens))


async def publish(submission: Submission, writer: StreamWriter, count: int) -> AsyncIterator[str]:
    """The SSE events of `count` completions in flight, written by `writer`."""
    decoders = [codecs.getincrementaldecoder("utf-8")("replace") for _ in range(count)]
    completion_tokens = 0
    try:
        for payload in writer.opening():
            yield sse(payload)
        async for event in submission.events():
            payloads: Iterable[Payload] = ()
            if isinstance(event, Failed):
                yield sse(error_body(event.status, event.message))
                break
            if isinstance(event, PromptLogprobs):
                payloads = writer.prompt(event)
            elif isinstance(event, Chunk):
                text = decoders[event.index].decode(event.data)
                if text or event.logprobs:
                    payloads = writer.text(event, text)
            elif isinstance(event, Finished):
                completion_tokens += event.completion_tokens
                payloads = writer.finish(event, decoders[event.index].decode(b"", final=True))
            for payload in payloads:
                yield sse(payload)
        else:
            for payload in writer.closing(completion_tokens):
                yield sse(payload)
        if writer.done:
            yield SSE_DONE
    except ClientGone:
        return
    finally:
        submission.cancel()
