"""Generation: one iterator (prefill, then one byte at a time) shared by model.generate, CLI and server."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from multiscale_transformer.errors import UserError
from multiscale_transformer.generation.decoder import Decoder, FullDecoder
from multiscale_transformer.generation.row import Accepted, CompletionOptions, RowState
from multiscale_transformer.generation.sampling import SamplingParams
from multiscale_transformer.model.config import GENERATION_DEFAULTS
from multiscale_transformer.model.vocab import BOS_ID, EOS_ID, NEVER_SAMPLED

if TYPE_CHECKING:
    from multiscale_transformer.model.model import MultiScaleTransformer


@dataclass(frozen=True)
class Step:
    """One generation step: the sampled ids (B,) and the model's logits (B, V) they came from."""

    ids: torch.Tensor
    logits: torch.Tensor

    @property
    def logprobs(self) -> torch.Tensor:
        """Log-probabilities (B, V); computed on demand, since most callers only want the ids."""
        return torch.log_softmax(self.logits, dim=-1)


def new_decoder(model: MultiScaleTransformer, batch_size: int, cached: bool = True) -> Decoder:
    """The KV-cached decoder (equal to the full forward pass, tested), or the full-recompute reference."""
    from multiscale_transformer.generation.cached import CachedDecoder

    return CachedDecoder(model, batch_size) if cached else FullDecoder(model, batch_size)


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


def check_prompts(model: MultiScaleTransformer, rows: list[list[int]]) -> None:
    vocab = model.config.vocab_size
    for ids in rows:
        if not ids:
            raise UserError("the prompt is empty: give at least one byte")
        if min(ids) < 0 or max(ids) >= vocab:
            raise UserError(f"prompt ids must be in 0..{vocab - 1}")


@dataclass(frozen=True)
class RowStep:
    """One byte generated for one row: its id, the logits (V,) it was sampled from, what it released."""

    row: int
    token: int
    logits: torch.Tensor
    accepted: Accepted
    state: RowState


def decode(
    model: MultiScaleTransformer,
    prompts: Sequence[Sequence[int]],
    options: Sequence[CompletionOptions],
    generators: Sequence[torch.Generator | None],
    decoder: Decoder | None = None,
    file_start: bool = True,
) -> Iterator[list[RowStep]]:
    """The generation loop: prefill every row, then per step sample each unfinished row through its
    `RowState` and advance those rows together in one decoder step. Yields each step's RowSteps.

    `axl generate`, `model.generate`, `stream` and the evaluator's probes all run this loop (the
    server's scheduler drives the same RowState per row, with its own queueing). A caller may end a
    row early with `step.state.end(reason)`; rows that share a generator draw from it in row order.
    Prompts longer than the context keep their last max_seq_len bytes and beyond it the window
    slides; `file_start` reads a prompt that fits the context as the start of a file.
    """
    rows = [list(map(int, p)) for p in prompts]
    check_prompts(model, rows)
    states = [RowState(r, o, g, model.config.vocab_size) for r, o, g in zip(rows, options, generators, strict=True)]
    live = [i for i, o in enumerate(options) if o.max_tokens > 0]
    if not live:
        return
    decoder = decoder or new_decoder(model, len(rows))
    window = model.config.max_seq_len
    with torch.inference_mode():
        contexts = [with_file_start(rows[i], window) if file_start else rows[i] for i in live]
        # Sampling runs on the CPU whatever the model's device: RowState keeps its counts there.
        logits = torch.zeros(len(rows), model.config.vocab_size)
        logits[live] = decoder.prefill_rows(live, contexts).float().cpu()
        while live:
            steps = []
            next_ids = torch.zeros(len(rows), dtype=torch.long)
            for i in live:
                token = states[i].sample(logits[i])
                steps.append(RowStep(i, token, logits[i], states[i].accept(token), states[i]))
                next_ids[i] = token
            yield steps
            live = [i for i in live if states[i].finish_reason is None]
            if live:
                active = torch.zeros(len(rows), dtype=torch.bool)
                active[live] = True
                logits = decoder.step(next_ids, active).float().cpu()


def stream(
    model: MultiScaleTransformer,
    prompts: torch.Tensor | Sequence[Sequence[int]],
    max_new_tokens: int,
    params: SamplingParams,
    generator: torch.Generator | None = None,
    decoder: Decoder | None = None,
    file_start: bool = True,
) -> Iterator[Step]:
    """`decode` for a batch that all generates max_new_tokens bytes, EOS included: one Step per byte.

    BOS and the FIM sentinels are never sampled. `logprobs` are of the model's distribution before
    temperature and filters (what OpenAI's API reports).
    """
    rows = prompts.tolist() if isinstance(prompts, torch.Tensor) else prompts
    options = CompletionOptions(max_new_tokens, params, stop_at_eos=False)
    for steps in decode(model, rows, [options] * len(rows), [generator] * len(rows), decoder, file_start):
        logits = torch.stack([s.logits for s in steps])
        logits[:, list(NEVER_SAMPLED)] = float("-inf")  # as sampling saw them
        yield Step(torch.tensor([s.token for s in steps]), logits)


def make_generator(seed: int | None, generator: torch.Generator | None = None) -> torch.Generator | None:
    if generator is not None or seed is None:
        return generator
    return torch.Generator().manual_seed(seed)


def generate(
    model: MultiScaleTransformer,
    idx: torch.Tensor,
    max_new_tokens: int = GENERATION_DEFAULTS["max_new_tokens"],
    temperature: float = GENERATION_DEFAULTS["temperature"],
    top_k: int | None = GENERATION_DEFAULTS["top_k"],
    top_p: float | None = GENERATION_DEFAULTS["top_p"],
    repetition_penalty: float = GENERATION_DEFAULTS["repetition_penalty"],
    seed: int | None = None,
    generator: torch.Generator | None = None,
    stop_at_eos: bool = True,
) -> torch.Tensor:
    """Prompt plus continuation (B, T + new); finished sequences are padded with EOS."""
    if max_new_tokens < 0:
        raise UserError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    params = SamplingParams(temperature, top_k, top_p, repetition_penalty)
    options = CompletionOptions(max_new_tokens, params, stop_at_eos=stop_at_eos)
    rows = idx.tolist()
    out = torch.full((len(rows), max_new_tokens), EOS_ID, dtype=idx.dtype)  # finished rows: EOS padding
    n = 0
    for n, steps in enumerate(
        decode(model, rows, [options] * len(rows), [make_generator(seed, generator)] * len(rows)), 1
    ):
        for s in steps:
            out[s.row, n - 1] = s.token
    return torch.cat([idx, out[:, :n].to(idx.device)], dim=1)


class TextStream:
    """Bytes of one completion as they become final, honouring EOS and stop sequences.

    The server's scheduler drives the same `RowState`, so a seed gives the same bytes through both.
    Bytes that could be the start of a stop sequence are held back until they cannot be, so a
    stop sequence never reaches the caller, even when it spans several generated bytes.
    After iteration, `finish_reason` is "stop" (EOS or a stop sequence) or "length".
    """

    def __init__(
        self,
        model: MultiScaleTransformer,
        prompt_ids: list[int],
        max_new_tokens: int,
        params: SamplingParams,
        stop: list[bytes] | None = None,
        seed: int | None = None,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        logit_bias: dict[int, float] | None = None,
        min_indent: int = 0,
    ) -> None:
        check_prompts(model, [list(prompt_ids)])
        self.model = model
        self.prompt = list(prompt_ids)
        self.options = CompletionOptions(
            max_new_tokens,
            params,
            tuple(stop or ()),
            frequency_penalty,
            presence_penalty,
            dict(logit_bias or {}),
            min_indent=min_indent,
        )
        self.generator = make_generator(seed)
        self.finish_reason: str | None = None
        self.stopped_by: str | None = None  # RowState.stopped_by: eos, word, indent, time or length
        self.n_generated = 0

    def __iter__(self) -> Iterator[bytes]:
        self.finish_reason = "length"
        for (step,) in decode(self.model, [self.prompt], [self.options], [self.generator]):
            self.n_generated = step.state.n_generated
            if step.accepted.text:
                yield step.accepted.text
            if step.accepted.finish_reason is not None:
                self.finish_reason, self.stopped_by = step.accepted.finish_reason, step.state.stopped_by
