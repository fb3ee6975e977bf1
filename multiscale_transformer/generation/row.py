"""One completion's decoding state: sampling options, history, stops with hold-back, EOS, finish reason.

`RowState.sample` turns the model's logits for the next byte into a byte id (BOS masked, logit_bias
and frequency/presence penalties applied, then `sample_next` with the row's own generator), and
`RowState.accept` accounts for that byte: what text is now final, and whether the completion has
finished and why. `axl generate` (TextStream) and the server's scheduler both drive this one state
machine, so a seed gives the same bytes in both, and every sampling option exists in both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from multiscale_transformer.errors import UserError
from multiscale_transformer.generation.sampling import SamplingParams, adjust_logits, sample_next
from multiscale_transformer.model.vocab import EOS_ID, NEVER_SAMPLED, VOCAB_SIZE

NEWLINE = ord("\n")


@dataclass(frozen=True)
class CompletionOptions:
    """Everything about one completion but its prompt: how to sample and when to stop."""

    max_tokens: int
    params: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[bytes, ...] = ()
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    stop_at_eos: bool = True  # False: a sampled EOS is context like any byte and generation goes on
    # llama.cpp's n_indent: a line after the first that starts less indented than this ends the
    # completion before that line (an editor's block ends where the code dedents); 0 = off.
    min_indent: int = 0
    # llama.cpp's t_max_predict_ms, in seconds: once generating took longer, the completion ends at
    # the next newline (the suggestion stays whole lines); None = no budget.
    max_predict_s: float | None = None
    # Continue's stopAtRepeatingLines, as a server can apply it: a line (with text) that repeats the
    # line before it ends the completion before it. A small model that loops writes the same line
    # again and again; every infilling (generation/fim.py) asks for this.
    stop_repeated_lines: bool = False

    def __post_init__(self) -> None:
        if self.max_tokens < 0:
            raise UserError(f"max_tokens must be >= 0, got {self.max_tokens}")
        if self.min_indent < 0:
            raise UserError(f"n_indent must be >= 0, got {self.min_indent}")
        for name in ("frequency_penalty", "presence_penalty"):
            if not -2 <= getattr(self, name) <= 2:
                raise UserError(f"{name} must be in [-2, 2], got {getattr(self, name)}")
        for token, value in self.logit_bias.items():
            if not 0 <= token < VOCAB_SIZE:
                raise UserError(f"logit_bias keys must be token ids 0..{VOCAB_SIZE - 1}, got {token}")
            if not -100 <= value <= 100:
                raise UserError(f"logit_bias values must be in [-100, 100], got {value} for id {token}")


@dataclass
class Accepted:
    """What one accepted byte released: text that is now final, and the finish reason once done."""

    text: bytes
    finish_reason: str | None  # None while generating; "stop" (EOS, a stop sequence, a dedent) or "length"


class RowState:
    """The state of one completion in flight (one decoder row)."""

    def __init__(
        self, prompt: list[int], options: CompletionOptions, generator: torch.Generator | None, vocab: int
    ) -> None:
        self.prompt = list(prompt)
        self.prompt_cached = 0  # bytes of the prompt a decoder's cache already held (Batch.admit)
        self.options = options
        self.generator = generator
        self.stop = [s for s in options.stop if s]
        self.history = torch.tensor(prompt, dtype=torch.long)
        self.counts = torch.zeros(vocab)
        self.bias: torch.Tensor | None = None
        if options.logit_bias:
            self.bias = torch.zeros(vocab)
            for token, value in options.logit_bias.items():
                self.bias[token] = value
        self.out = bytearray()
        self.emitted = 0
        self.n_generated = 0
        self.finish_reason: str | None = None
        self.stop_hit: bytes | None = None  # the stop sequence that ended the completion, if one did
        # What ended it: "eos", "word" (a stop sequence), "indent" (min_indent), "repeat"
        # (stop_repeated_lines), "time" (max_predict_s), "length" (max_tokens), or what `end` was given.
        self.stopped_by: str | None = None
        self.started: float | None = None  # when the first byte was accepted (max_predict_s counts from it)

    def sample(self, logits: torch.Tensor) -> int:
        """The next byte id from the model's logits (V,) for it."""
        o = self.options
        logits = logits.float().clone()
        adjusted = adjust_logits(logits, self.counts, o.frequency_penalty, o.presence_penalty, self.bias)
        adjusted[list(NEVER_SAMPLED)] = float("-inf")  # BOS and the FIM sentinels
        return int(sample_next(adjusted[None], self.history[None], o.params, self.generator)[0])

    def accept(self, token: int) -> Accepted:
        """Account for one sampled byte; bytes that could begin a stop sequence wait until they cannot."""
        o = self.options
        if self.started is None:
            self.started = time.perf_counter()
        self.n_generated += 1
        self.history = torch.cat([self.history, torch.tensor([token])])
        self.counts[token] += 1
        if token == EOS_ID:
            if o.stop_at_eos:
                return self._finish(len(self.out), "stop", "eos")
        else:
            self.out.append(token)
        cut = find_stop(self.out, self.stop, self.emitted)
        if cut is not None:
            self.stop_hit = next(s for s in self.stop if self.out.startswith(s, cut))
            return self._finish(cut, "stop", "word")
        if o.min_indent and (cut := dedent(self.out, o.min_indent)) is not None:
            return self._finish(cut, "stop", "indent")
        if o.stop_repeated_lines and (cut := repeated_line(self.out)) is not None:
            return self._finish(cut, "stop", "repeat")
        if token == NEWLINE and o.max_predict_s is not None and time.perf_counter() - self.started > o.max_predict_s:
            return self._finish(len(self.out) - 1, "length", "time")
        if self.n_generated >= o.max_tokens:
            return self._finish(len(self.out), "length", "length")
        held = max(
            held_back(self.out, self.stop),
            open_line(self.out) if o.min_indent else 0,
            open_repeat(self.out) if o.stop_repeated_lines else 0,
        )
        return Accepted(self._release(len(self.out) - held), None)

    def end(self, reason: str) -> Accepted:
        """Finish now, for a reason the caller decides (e.g. a probe's end of function): the rest is released."""
        return self._finish(len(self.out), reason, reason)

    def _finish(self, end: int, reason: str, stopped_by: str) -> Accepted:
        self.finish_reason, self.stopped_by = reason, stopped_by
        return Accepted(self._release(end), reason)

    def _release(self, end: int) -> bytes:
        text = bytes(self.out[self.emitted : end]) if end > self.emitted else b""
        self.emitted = max(self.emitted, end)
        return text


def find_stop(out: bytearray, stops: list[bytes], emitted: int) -> int | None:
    """Start of the earliest stop sequence in out that ends in the not-yet-emitted part."""
    hits = []
    for s in stops:
        i = out.find(s, max(0, emitted - len(s) + 1))
        if i >= 0:
            hits.append(i)
    return min(hits) if hits else None


def held_back(out: bytearray, stops: list[bytes]) -> int:
    """Length of the longest tail of out that is a proper prefix of some stop sequence."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(out)), best, -1):
            if out.endswith(s[:n]):
                best = n
                break
    return best


def dedent(out: bytearray, min_indent: int) -> int | None:
    """Where a completion ends under llama.cpp's n_indent: the start of its last line (the newline before
    it) when that line, not the first, has text indented less than min_indent; else None."""
    start = out.rfind(b"\n") + 1
    if start == 0:
        return None  # still the cursor's own line
    line = out[start:]
    text = line.lstrip(b" \t")
    return start - 1 if text and len(line) - len(text) < min_indent else None


def open_line(out: bytearray) -> int:
    """Bytes held back under n_indent: a newline and the indentation after it, until the line's text
    shows whether it is indented enough to keep."""
    start = out.rfind(b"\n")
    return len(out) - start if start >= 0 and not out[start + 1 :].strip(b" \t") else 0


def repeated_line(out: bytearray) -> int | None:
    """Where a completion ends under `stop_repeated_lines`: before the line it just finished (the newline
    ahead of it) when that line has text and equals the line before it, indentation included; else None."""
    if not out.endswith(b"\n"):
        return None
    start = out.rfind(b"\n", 0, len(out) - 1) + 1
    if start == 0:
        return None  # the first line has no line before it
    line = out[start:-1]
    previous = out[out.rfind(b"\n", 0, start - 1) + 1 : start - 1]
    return start - 1 if line == previous and line.strip() else None


def open_repeat(out: bytearray) -> int:
    """Bytes held back under `stop_repeated_lines`: the unfinished last line and the newline before it,
    while that line could still turn out to repeat the one before it."""
    start = out.rfind(b"\n")
    if start < 0:
        return 0
    previous = out[out.rfind(b"\n", 0, start) + 1 : start]
    return len(out) - start if previous.strip() and previous.startswith(out[start + 1 :]) else 0
