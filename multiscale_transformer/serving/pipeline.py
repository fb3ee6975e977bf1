"""Running a `GenerationRequest`: admission, submission to the engine, then its results collected or streamed.

Every generating endpoint ends in `serve`, handing it the request and its two ways back to the wire:
`reply` for the collected outcomes, `writer` for a stream (serving/sse.py publishes it).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.responses import Response, StreamingResponse

from multiscale_transformer.serving.common import engine_of, settings_of
from multiscale_transformer.serving.engine import ByteLogprob, Chunk, Failed, Finished, PromptLogprobs
from multiscale_transformer.serving.errors import APIError
from multiscale_transformer.serving.request import GenerationRequest
from multiscale_transformer.serving.sse import StreamWriter, publish
from multiscale_transformer.serving.submission import ClientGone, Submission

CLIENT_CLOSED = 499  # nginx's status for a request whose client left before the answer


@dataclass
class Outcome:
    """One completion, whole: what the non-streamed replies report."""

    text: bytearray = field(default_factory=bytearray)
    logprobs: list[ByteLogprob] = field(default_factory=list)  # one per byte of text, when asked for
    prompt_logprobs: list[ByteLogprob | None] | None = None  # when echo and logprobs were asked for
    finished: Finished | None = None
    first_event: float | None = None  # time.perf_counter() when its first event came: the prompt was read

    @property
    def end(self) -> Finished:
        assert self.finished is not None, "collect returns only once every completion has finished"
        return self.finished


def admit(request: Request, job: GenerationRequest) -> Submission:
    """Submit the request's completions: 400 when it asks for more than the server ever holds at once,
    429 while the queue is full, 503 when the engine cannot take any."""
    settings = settings_of(request)
    most = settings.max_batch + settings.max_queue
    if job.count > most:
        raise APIError(
            400, f"the request asks for {job.count} completions; this server takes at most {most} at once", "n"
        )
    return Submission(engine_of(request), job.specs(), request)


async def collect(submission: Submission, count: int) -> list[Outcome]:
    """Every completion's outcome (the first failure as its APIError); the jobs are cancelled on the way out."""
    outcomes = [Outcome() for _ in range(count)]
    try:
        async for event in submission.events():
            outcome = outcomes[event.index]
            if outcome.first_event is None:
                outcome.first_event = time.perf_counter()
            if isinstance(event, Chunk):
                outcome.text += event.data
                outcome.logprobs.extend(event.logprobs)
            elif isinstance(event, PromptLogprobs):
                outcome.prompt_logprobs = event.logprobs
            elif isinstance(event, Finished):
                outcome.finished = event
            elif isinstance(event, Failed):
                raise APIError(event.status, event.message)
    finally:
        submission.cancel()
    return outcomes


async def serve(
    request: Request,
    job: GenerationRequest,
    reply: Callable[[list[Outcome]], Response],
    writer: Callable[[], StreamWriter],
) -> Response:
    """Run `job`: streamed through `writer()` when it asks to be, else the collected outcomes as `reply`."""
    submission = admit(request, job)
    if job.stream:
        return StreamingResponse(publish(submission, writer(), job.count), media_type="text/event-stream")
    try:
        outcomes = await collect(submission, job.count)
    except ClientGone:
        return Response(status_code=CLIENT_CLOSED)  # nobody is there to read an answer
    return reply(outcomes)
