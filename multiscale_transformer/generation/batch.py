"""The generation loop, once: rows of a decoder batch, each with its own RowState, sampled and
advanced together. `decode` (behind model.generate, `axl generate`, `stream` and the evaluator's
probes) runs a fixed set of rows to the end; the server's scheduler admits rows into a running
batch and releases them as they finish; both call `Batch.admit` and `Batch.step`.

Seeds: rows that share a generator draw from it in row order (model.generate's `seed` seeds one
generator for the whole batch, so a row's bytes depend on the rows before it); a row with its own
generator depends on nothing else (the server seeds choice j of a request with seed + j, so each
choice is what a request for it alone with that seed returns).

Logprobs are the model's own distribution for the next byte (`logprobs_of`), before sampling's
temperature, filters and penalties, as OpenAI's API reports them; prompt logprobs come from one
pass over the prompt as the model reads it (`prompt_logprobs`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from multiscale_transformer.generation.decoder import Decoder, LanguageModel
from multiscale_transformer.generation.row import Accepted, RowState
from multiscale_transformer.model.vocab import BOS_ID, EOS_ID


@dataclass(frozen=True)
class RowStep:
    """One byte generated for one row: its id, the logits (V,) it was sampled from, what it released."""

    row: int
    token: int
    logits: torch.Tensor
    accepted: Accepted
    state: RowState
    error: Exception | None = None  # sampling failed (a bug, or values it cannot handle): this row alone


def logprobs_of(logits: torch.Tensor) -> torch.Tensor:
    """The model's log-probabilities (..., V) for the next byte: what every logprobs field reports."""
    return torch.log_softmax(logits.float(), dim=-1)


def with_file_start(ids: Sequence[int], window: int) -> list[int]:
    """The prompt as the model should read it: after an EOS when it is the start of a text.

    Training saw every file right after an EOS, so a prompt that fits the context is read as the
    start of a file; without the marker a small model treats `def f():` as the middle of a file
    (measured on the bundled model: greedy completions of bare headers were runs of spaces). A
    prompt that already starts with BOS/EOS, or fills the context (then it is a file's middle),
    is left alone. The EOS is context only: it is never part of the output.
    """
    ids = list(ids)
    if not ids or ids[0] in (BOS_ID, EOS_ID) or len(ids) >= window:
        return ids
    return [EOS_ID, *ids]


@torch.inference_mode()
def prompt_logprobs(model: LanguageModel, prompt: list[int]) -> torch.Tensor:
    """logprobs_of the model's predictions inside a prompt of at most max_seq_len bytes, as generation
    reads it (with_file_start): row t-1 predicts byte t, (T-1, V); the first byte has none."""
    window = model.config.max_seq_len
    if len(prompt) > window:
        raise ValueError(f"prompt logprobs need a prompt within the context ({window} bytes), got {len(prompt)}")
    read = with_file_start(prompt, window)  # the prompt, after the file-start EOS when there is room
    logits = model(torch.tensor([read]))[0]  # (len(read), V)
    return logprobs_of(logits[len(read) - len(prompt) : -1])


class Batch:
    """Rows of one decoder, each with its RowState: `admit` prefills new rows, `step` advances every
    row that has not finished by one byte; each returns the RowSteps of the bytes just sampled.
    Sampling runs on the CPU whatever the model's device: RowState keeps its counts there."""

    def __init__(self, model: LanguageModel, decoder: Decoder, file_start: bool = True) -> None:
        self.model = model
        self.decoder = decoder
        self.file_start = file_start
        self.states: dict[int, RowState] = {}  # row -> its state, while it decodes
        self.feed: dict[int, int] = {}  # row -> the byte it sampled, for the next decoder step

    def best_row(self, free: Sequence[int], state: RowState) -> int:
        """The free row whose cache already holds the longest start of this prompt (an editor sends
        the same file again and again, a little longer each time), else the first."""
        prompt = self.read(state)
        return max(free, key=lambda row: (self.decoder.reuse(row, prompt), -row))

    def read(self, state: RowState) -> list[int]:
        """The prompt as the model reads it."""
        return with_file_start(state.prompt, self.model.config.max_seq_len) if self.file_start else list(state.prompt)

    def admit(self, rows: Sequence[int], states: Sequence[RowState]) -> list[RowStep]:
        """Prefill `rows` (free) with their states' prompts together and sample each one's first byte."""
        prompts = [self.read(s) for s in states]
        for row, state, prompt in zip(rows, states, prompts, strict=True):
            state.prompt_cached = self.decoder.reuse(row, prompt)
        logits = self.decoder.prefill_rows(list(rows), prompts).float().cpu()
        self.states.update(zip(rows, states, strict=True))
        return [self._sample(row, row_logits) for row, row_logits in zip(rows, logits, strict=True)]

    def step(self) -> list[RowStep]:
        """Advance every row that sampled a byte last time and is still going; sample each again."""
        rows = [r for r in self.feed if self.states[r].finish_reason is None]  # a caller may have ended one
        if not rows:
            self.feed.clear()
            return []
        size = self.decoder.batch_size
        next_ids = torch.zeros(size, dtype=torch.long)
        active = torch.zeros(size, dtype=torch.bool)
        next_ids[rows] = torch.tensor([self.feed[r] for r in rows])
        active[rows] = True
        self.feed.clear()
        logits = self.decoder.step(next_ids, active).float().cpu()
        return [self._sample(row, logits[row]) for row in rows]

    def release(self, row: int) -> None:
        """Forget `row` (finished, cancelled or failed) so that it can take a new prompt."""
        self.states.pop(row, None)
        self.feed.pop(row, None)
        self.decoder.release(row)

    def _sample(self, row: int, logits: torch.Tensor) -> RowStep:
        state = self.states[row]
        try:
            token = state.sample(logits)
            step = RowStep(row, token, logits, state.accept(token), state)
        except Exception as exc:  # the other rows go on; the caller decides what a failed row means
            state.finish_reason = state.stopped_by = "error"
            return RowStep(row, -1, logits, Accepted(b"", "error"), state, exc)
        if state.finish_reason is None:
            self.feed[row] = token
        return step
