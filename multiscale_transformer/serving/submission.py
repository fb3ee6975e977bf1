"""The event-loop side of a request: submit its jobs to the engine and await their events."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.requests import Request

from multiscale_transformer.serving.common import sse
from multiscale_transformer.serving.engine import (
    Chunk,
    Engine,
    EngineDead,
    Event,
    Failed,
    Finished,
    ServerBusy,
    ShuttingDown,
    Spec,
)
from multiscale_transformer.serving.errors import APIError, error_body
from multiscale_transformer.serving.metrics import count_generated

POLL_S = 0.1  # how often a waiting request checks whether its client has gone


class ClientGone(Exception):
    """The client disconnected; its jobs have been cancelled."""


class Submission:
    def __init__(self, engine: Engine, specs: list[Spec], request: Request) -> None:
        loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        self.request = request

        def sink(event: Event) -> None:  # called from the scheduler thread
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is listening
                loop.call_soon_threadsafe(self.queue.put_nowait, event)

        try:
            self.jobs = engine.submit(specs, sink)
        except ServerBusy as exc:
            raise APIError(429, f"{exc}; retry later", code="server_busy") from None
        except EngineDead as exc:
            raise APIError(503, str(exc), code="engine_dead") from None
        except ShuttingDown as exc:
            raise APIError(503, str(exc), code="shutting_down") from None
        self.remaining = len(specs)

    def cancel(self) -> None:
        """Free the rows of unfinished jobs; the scheduler drops them before its next step."""
        if self.remaining:
            Engine.cancel(self.jobs)

    async def events(self) -> AsyncIterator[Event]:
        """Events until every job has finished; raises ClientGone (after cancelling) on disconnect."""
        loop = asyncio.get_running_loop()
        next_check = loop.time() + POLL_S
        while self.remaining:
            # Checked on a clock, not only when idle: a busy job sends events faster than POLL_S.
            if loop.time() >= next_check:
                next_check = loop.time() + POLL_S
                if await self.request.is_disconnected():
                    self.cancel()
                    raise ClientGone
            try:
                event = await asyncio.wait_for(self.queue.get(), POLL_S)
            except asyncio.TimeoutError:
                continue
            if isinstance(event, Finished | Failed):
                self.remaining -= 1
            elif isinstance(event, Chunk):
                count_generated(self.request, len(event.data))
            yield event


@dataclass
class Outcome:
    """One completion's whole text and how it ended: what the non-streaming endpoints report."""

    text: bytearray = field(default_factory=bytearray)
    finished: Finished | None = None
    first_event: float | None = None  # time.perf_counter() when its first event came: the prompt was read


class StreamFailed(Exception):
    """A completion failed mid-stream; the message goes to the client as an error event."""

    def __init__(self, failed: Failed) -> None:
        super().__init__(failed.message)
        self.status = failed.status


async def collect(submission: Submission, n: int) -> list[Outcome]:
    """Every completion's text and end (500 when one failed); the jobs are cancelled on the way out."""
    outcomes = [Outcome() for _ in range(n)]
    try:
        async for event in submission.events():
            if outcomes[event.index].first_event is None:
                outcomes[event.index].first_event = time.perf_counter()
            if isinstance(event, Chunk):
                outcomes[event.index].text += event.data
            elif isinstance(event, Finished):
                outcomes[event.index].finished = event
            elif isinstance(event, Failed):
                raise APIError(event.status, event.message)
    finally:
        submission.cancel()
    return outcomes


async def text_deltas(submission: Submission, n: int) -> AsyncIterator[tuple[int, str, Finished | None]]:
    """(completion index, newly final text, the Finished event once it ends), as the bytes arrive.

    Text is decoded incrementally, so a character split across chunks arrives whole; raises
    StreamFailed when a completion fails and ClientGone when the client disconnects.
    """
    decoders = [codecs.getincrementaldecoder("utf-8")("replace") for _ in range(n)]
    async for event in submission.events():
        if isinstance(event, Chunk):
            yield event.index, decoders[event.index].decode(event.data), None
        elif isinstance(event, Finished):
            yield event.index, decoders[event.index].decode(b"", final=True), event
        elif isinstance(event, Failed):
            raise StreamFailed(event)


async def guarded(submission: Submission, events: AsyncIterator[str], done: str | None = None) -> AsyncIterator[str]:
    """A streaming body's SSE events, ending in an error event (then `done`, the protocol's last event,
    if it has one) when a completion fails, and quietly when the client leaves; the jobs are
    cancelled however it ends."""
    try:
        async for event in events:
            yield event
    except StreamFailed as exc:
        yield sse(error_body(exc.status, str(exc)))
        if done is not None:
            yield done
    except ClientGone:
        return
    finally:
        submission.cancel()
