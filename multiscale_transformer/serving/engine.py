"""The generation engine: one scheduler thread that owns the model and a decoder of `max_batch` rows.

Continuous batching: between two decode steps, waiting requests are prefilled into free rows;
each step then advances every active row by one byte together. Each row has its own sampling
parameters, seeded generator, history and stop sequences, so simultaneous requests never mix.
The event loop never runs the model: it submits jobs and receives events through a callback.
Other model work (an inspection's windows) comes as `call`s, run between two decode steps, never
beside one, and while rows decode taking at most a third of the scheduler's time (`_run_one_call`).
A warm-up (llama.cpp's n_predict 0, which llama.vim and llama.vscode send ahead of a completion)
prefills its prompt into a free row and frees the row at once, generating nothing: the row's cache
keeps the prompt for the next request that starts the same way.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TypeVar

import torch

from multiscale_transformer.errors import first_line
from multiscale_transformer.generation.batch import Batch, RowStep, logprobs_of, prompt_logprobs
from multiscale_transformer.generation.decoder import LanguageModel
from multiscale_transformer.generation.generate import new_decoder
from multiscale_transformer.generation.row import CompletionOptions, RowState
from multiscale_transformer.model.vocab import EOS_ID

log = logging.getLogger("axl.serve")
T = TypeVar("T")
SHUTTING_DOWN = "the server is shutting down"
WAKE = object()  # put in the inbox with a call, so that an idle scheduler wakes up to run it

CALL_WAIT = 2.0  # decoding time owed after each call, per second the call took (`_run_one_call`)


class ServerBusy(Exception):
    """The queue is full; the client should retry later (HTTP 429)."""


class EngineDead(Exception):
    """The scheduler thread has stopped for good; the server cannot generate any more (HTTP 503)."""


class ShuttingDown(Exception):
    """The server is shutting down: it takes no new completions (HTTP 503)."""


@dataclass(frozen=True)
class ByteLogprob:
    """The log-probability of one byte and the `top` most likely alternatives (id, logprob)."""

    id: int
    logprob: float
    top: list[tuple[int, float]]


@dataclass(frozen=True)
class Chunk:
    index: int
    data: bytes
    logprobs: list[ByteLogprob]


@dataclass(frozen=True)
class PromptLogprobs:
    index: int
    logprobs: list[ByteLogprob | None]  # None for the first byte, which has no context


@dataclass(frozen=True)
class Finished:
    index: int
    finish_reason: str  # "stop" or "length"
    completion_tokens: int
    # The logprob of the EOS that ended the completion, when logprobs were asked for: it is a sampled
    # token like any other, so logprobs count one per byte of prompt and completion plus this one.
    eos: ByteLogprob | None = None
    stop_word: bytes | None = None  # the stop sequence that ended it (llama.cpp reports which)
    stopped_by: str | None = None  # RowState.stopped_by: eos, word, indent, time, length
    prompt_cached: int = 0  # bytes of the prompt (as the model reads it) found in the row's cache, not prefilled
    prompt: tuple[int, ...] = ()  # the prompt as the model read it (empty when it read none: max_tokens 0)


@dataclass(frozen=True)
class Failed:
    index: int
    message: str
    status: int = 500  # the HTTP status it means: 503 when the server is shutting down


Event = Chunk | PromptLogprobs | Finished | Failed


@dataclass(frozen=True)
class Spec:
    """One completion to produce (a request with n choices gives n specs)."""

    prompt: list[int]
    options: CompletionOptions  # sampling and stopping, as `axl generate` takes them
    seed: int
    logprobs: int | None = None  # None: no logprobs; N: the sampled byte's plus the top N
    prompt_logprobs: bool = False
    # With max_tokens 0: prefill the prompt into a row's cache all the same (llama.cpp's n_predict 0,
    # an editor's warm-up); without, such a spec costs nothing (an echo scoring a prompt reads it apart).
    warm: bool = False


class Job:
    """A spec in flight: its events go to `sink` (called from the scheduler thread)."""

    def __init__(self, spec: Spec, index: int, sink: Callable[[Event], None]) -> None:
        self.spec = spec
        self.index = index
        self.sink = sink
        self.cancelled = False  # set by the event loop; read by the scheduler once per step
        self.state: RowState | None = None  # the decoding state, made at admission by the scheduler
        self.records: list[ByteLogprob] = []  # one per sampled byte, when logprobs were asked for
        self.read: list[int] = []  # the prompt as the model reads it (Batch.read), once admitted


class Engine:
    """on_fatal(message) is called (from the scheduler thread) if that thread ever dies."""

    def __init__(
        self,
        model: LanguageModel,
        max_batch: int = 8,
        max_queue: int = 64,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        self.model = model
        self.on_fatal = on_fatal
        self.failure: str | None = None  # why the scheduler thread died; None while it runs
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.batch = Batch(model, new_decoder(model, max_batch))  # the generation loop `decode` runs too
        self.vocab = model.config.vocab_size
        self.rows: list[Job | None] = [None] * max_batch
        self.inbox: queue.Queue[Job | object | None] = queue.Queue()  # jobs, WAKE, or None to stop
        self.calls: queue.Queue[tuple[Callable[[], object], Future]] = queue.Queue()
        self._lock = threading.Lock()
        self._in_system = 0
        self._stopping = threading.Event()
        self.draining = False  # set by `drain`: no new jobs, the queued ones failed
        self._next_call_at = 0.0  # perf_counter time before which no call runs while rows decode
        self._thread = threading.Thread(target=self._run, name="axl-scheduler", daemon=True)

    # Event-loop side -------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self.inbox.put(None)  # wakes the scheduler if it is idle
        self._thread.join(timeout=10)

    def submit(self, specs: list[Spec], sink: Callable[[Event], None]) -> list[Job]:
        """Queue the specs as jobs with indices 0..len-1, or raise ServerBusy when they do not fit."""
        with self._lock:
            if self.failure is not None:
                raise EngineDead(f"the generation engine has stopped ({self.failure}); restart the server")
            if self.draining:
                raise ShuttingDown(SHUTTING_DOWN)
            if self._in_system + len(specs) > self.max_batch + self.max_queue:
                raise ServerBusy(f"the server is busy ({self._in_system} completions in progress or queued)")
            self._in_system += len(specs)
            # Queued under the lock: a scheduler that dies sets `failure` under it, then drains the
            # inbox, so every job is either drained and failed or refused here.
            jobs = [Job(spec, i, sink) for i, spec in enumerate(specs)]
            for job in jobs:
                self.inbox.put(job)
        return jobs

    def call(self, fn: Callable[[], T]) -> Future[T]:
        """Run fn() in the scheduler thread between two decode steps; its result or exception comes
        through the future. A future cancelled before its turn is skipped."""
        future: Future[T] = Future()
        with self._lock:
            if self.failure is not None:
                raise EngineDead(f"the generation engine has stopped ({self.failure}); restart the server")
            self.calls.put((fn, future))  # type: ignore[arg-type]
        self.inbox.put(WAKE)
        return future

    def drain(self) -> None:
        """The start of a graceful shutdown: refuse new jobs, fail the queued ones (503); active rows go on."""
        with self._lock:
            self.draining = True
        self.call(lambda: self._fail_queued(SHUTTING_DOWN, 503))

    def end_active(self) -> None:
        """The end of the grace period: fail every active row (its stream ends with an error event)."""
        self.call(lambda: self._fail_all(SHUTTING_DOWN, 503))

    @staticmethod
    def cancel(jobs: list[Job]) -> None:
        for job in jobs:
            job.cancelled = True

    @property
    def alive(self) -> bool:
        return self.failure is None and (self._thread.is_alive() or not self._thread.ident)

    def stats(self) -> dict[str, int]:
        active = sum(job is not None for job in self.rows)
        return {"active": active, "queued": max(0, self._in_system - active), "max_batch": self.max_batch}

    # Scheduler thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            with torch.inference_mode():
                while self._admit() and not self._stopping.is_set():
                    self._run_one_call()
                    try:
                        self._step()
                    except Exception as exc:  # the shared decoder step failed: fail its rows, keep serving
                        log.exception("decoder step failed")
                        self._fail_all(f"generation failed: {_reason(exc)}")
            self._fail_all(SHUTTING_DOWN)
            self._fail_queued(SHUTTING_DOWN)
            self._fail_calls(SHUTTING_DOWN)
        except BaseException as exc:  # a bug in the scheduler itself: say so and let the server stop
            with self._lock:
                self.failure = _reason(exc)
            log.critical("the scheduler thread died: %s", self.failure, exc_info=True)
            message = f"the generation engine has stopped ({self.failure})"
            self._fail_all(message)
            self._fail_queued(message)
            self._fail_calls(message)
            if self.on_fatal is not None:
                self.on_fatal(self.failure)

    def _fail_all(self, message: str, status: int = 500) -> None:
        for row, job in enumerate(self.rows):
            if job is not None:
                self._fail(job, message, status)
                self._release(row)

    def _fail_queued(self, message: str, status: int = 503) -> None:
        """Fail every job still in the inbox, so that no request waits for a scheduler that is gone."""
        while True:
            try:
                job = self.inbox.get_nowait()
            except queue.Empty:
                return
            if isinstance(job, Job):
                self._fail(job, message, status)

    def _run_one_call(self) -> None:
        """Run the next call, if any; while rows decode, calls get at most a third of the scheduler's time
        (after a call that took t seconds, the next waits until the decode steps have had 2t seconds), so
        that a long inspection slows the streams no more than one more stream does. A half was enough at
        256 bytes of context; at 8,192 a second stream costs less than its share (rows decode batched)
        and an inspection's window more (bench/editor_latency.py: 2.36x against 1.81x with a half)."""
        if time.perf_counter() < self._next_call_at and any(job is not None for job in self.rows):
            return
        try:
            fn, future = self.calls.get_nowait()
        except queue.Empty:
            return
        if not future.set_running_or_notify_cancel():
            return
        start = time.perf_counter()
        try:
            future.set_result(fn())
        except Exception as exc:  # the caller's failure, reported to the caller
            future.set_exception(exc)
        end = time.perf_counter()
        self._next_call_at = end + CALL_WAIT * (end - start)

    def _fail_calls(self, message: str) -> None:
        while True:
            try:
                _, future = self.calls.get_nowait()
            except queue.Empty:
                return
            if future.set_running_or_notify_cancel():
                future.set_exception(EngineDead(message))

    def _admit(self) -> bool:
        """Prefill waiting jobs into free rows, together; block while there is nothing to do. False on stop."""
        jobs: list[Job] = []
        while self.rows.count(None) > len(jobs):
            idle = not jobs and all(job is None for job in self.rows) and self.calls.empty()
            try:
                job = self.inbox.get(block=idle)
            except queue.Empty:
                break
            if job is None:
                return False
            if not isinstance(job, Job):  # WAKE: a call is waiting; run it before blocking again
                break
            if job.cancelled:
                self._done(job)
                continue
            jobs.append(job)
        if jobs:
            self._start(jobs)
        return True

    def _start(self, jobs: list[Job]) -> None:
        """Give each job a row and prefill them in one batch; the first bytes go out right after."""
        started: list[tuple[int, RowState]] = []
        warm: list[tuple[int, Job]] = []
        for job in jobs:
            try:
                spec = job.spec
                if spec.prompt_logprobs:
                    job.sink(PromptLogprobs(job.index, self._prompt_logprobs(spec.prompt, spec.logprobs or 0)))
                if spec.options.max_tokens == 0 and not spec.warm:
                    self._finish(job, "length")
                    continue
                generator = torch.Generator().manual_seed(spec.seed)
                job.state = RowState(spec.prompt, spec.options, generator, self.vocab)
                job.read = self.batch.read(job.state)  # what admission prefills
            except Exception as exc:
                self._fail(job, f"prefill failed: {exc}")
                continue
            free = [r for r, j in enumerate(self.rows) if j is None]
            row = self.batch.best_row(free, job.state)  # where the prompt's start is cached already
            self.rows[row] = job
            if spec.options.max_tokens == 0:
                warm.append((row, job))
            else:
                started.append((row, job.state))
        if warm:
            self._warm(warm)
        if not started:
            return
        try:
            steps = self.batch.admit([row for row, _ in started], [state for _, state in started])
        except Exception as exc:
            for row, _ in started:
                job = self.rows[row]
                assert job is not None
                self._release(row)
                self._fail(job, f"prefill failed: {exc}")
            return
        self._publish(steps)

    def _warm(self, warm: list[tuple[int, Job]]) -> None:
        """Prefill warm-up prompts into their rows together and free the rows: nothing is sampled, and each
        row's cache keeps its prompt for the next request that starts the same way (`best_row`)."""
        try:
            for row, job in warm:
                assert job.state is not None
                job.state.prompt_cached = self.batch.decoder.reuse(row, job.read)
                job.state.finish_reason = job.state.stopped_by = "length"
            self.batch.decoder.prefill_rows([row for row, _ in warm], [job.read for _, job in warm])
        except Exception as exc:
            for row, job in warm:
                self._release(row)
                self._fail(job, f"prefill failed: {exc}")
            return
        for row, job in warm:
            self._release(row)
            self._finish(job, "length")

    def _prompt_logprobs(self, prompt: list[int], top: int) -> list[ByteLogprob | None]:
        logprobs = prompt_logprobs(self.model, prompt)  # (T-1, V): as generation reads the prompt
        return [None] + [_record(logprobs[t - 1], prompt[t], top) for t in range(1, len(prompt))]

    def _step(self) -> None:
        """Drop cancelled rows, then advance every other row by one byte together."""
        for row, job in enumerate(self.rows):
            if job is not None and job.cancelled:
                self._release(row)
                self._done(job)
        self._publish(self.batch.step())

    def _publish(self, steps: list[RowStep]) -> None:
        """Send what each sampled byte made final; finish, or fail alone, the rows that ended."""
        for step in steps:
            job = self.rows[step.row]
            assert job is not None
            if step.error is not None:
                log.error("sampling failed for one completion", exc_info=step.error)
                self._release(step.row)
                self._fail(job, f"sampling failed: {_reason(step.error)}")
                continue
            state, logprobs = step.state, job.spec.logprobs
            if logprobs is not None:  # the model's own distribution, as OpenAI reports
                job.records.append(_record(logprobs_of(step.logits), step.token, logprobs))
            start = state.emitted - len(step.accepted.text)
            if step.accepted.text:
                records = job.records[start : state.emitted] if logprobs is not None else []
                job.sink(Chunk(job.index, step.accepted.text, records))
            if step.accepted.finish_reason is not None:
                eos = job.records[-1] if step.token == EOS_ID and logprobs is not None else None
                self._release(step.row)
                self._finish(job, step.accepted.finish_reason, eos)

    def _finish(self, job: Job, reason: str, eos: ByteLogprob | None = None) -> None:
        state = job.state
        n, word, by = (state.n_generated, state.stop_hit, state.stopped_by) if state else (0, None, reason)
        cached = state.prompt_cached if state else 0
        job.sink(Finished(job.index, reason, n, eos, word, by, cached, tuple(job.read)))
        self._done(job)

    def _fail(self, job: Job, message: str, status: int = 500) -> None:
        job.sink(Failed(job.index, message, status))
        self._done(job)

    def _done(self, job: Job) -> None:
        with self._lock:
            self._in_system -= 1

    def _release(self, row: int) -> None:
        self.rows[row] = None
        self.batch.release(row)


def _reason(exc: BaseException) -> str:
    text = first_line(exc)
    return text if text == type(exc).__name__ else f"{type(exc).__name__}: {text[:200]}"


def _record(logprobs: torch.Tensor, token: int, top: int) -> ByteLogprob:
    """The logprob of `token` under logprobs (V,), with the `top` most likely ids."""
    alternatives: list[tuple[int, float]] = []
    if top:
        values, ids = torch.topk(logprobs, top)
        alternatives = list(zip(ids.tolist(), values.tolist(), strict=True))
    return ByteLogprob(token, float(logprobs[token]), alternatives)
