"""The event-loop side of a request: submit its jobs to the engine and await their events.

The engine's scheduler thread sends each event through a callback; `Submission` moves them onto the
event loop and notices a client that has gone, so that its rows are freed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.requests import Request

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
from multiscale_transformer.serving.errors import APIError
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
