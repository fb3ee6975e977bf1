"""Generation: one iterator (prefill, then one byte at a time) shared by model.generate, CLI and server."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from multiscale_transformer.errors import UserError
from multiscale_transformer.generation.batch import Batch, RowStep, logprobs_of, with_file_start
from multiscale_transformer.generation.cached import CachedDecoder
from multiscale_transformer.generation.decoder import Decoder, FullDecoder, LanguageModel
from multiscale_transformer.generation.row import CompletionOptions, RowState
from multiscale_transformer.generation.sampling import SamplingParams
from multiscale_transformer.model.config import GENERATION_DEFAULTS
from multiscale_transformer.model.vocab import EOS_ID

__all__ = ["Step", "TextStream", "decode", "generate", "new_decoder", "stream", "with_file_start"]


@dataclass(frozen=True)
class Step:
    """One generation step: the sampled ids (B,) and the model's logits (B, V) they came from."""

    ids: torch.Tensor
    logits: torch.Tensor

    @property
    def logprobs(self) -> torch.Tensor:
        """Log-probabilities (B, V); computed on demand, since most callers only want the ids."""
        return logprobs_of(self.logits)


def new_decoder(model: LanguageModel, batch_size: int, cached: bool = True) -> Decoder:
    """The KV-cached decoder (equal to the full forward pass, tested), or the full-recompute reference."""
    return CachedDecoder(model, batch_size) if cached else FullDecoder(model, batch_size)


def check_prompts(model: LanguageModel, rows: list[list[int]]) -> None:
    vocab = model.config.vocab_size
    for ids in rows:
        if not ids:
            raise UserError("the prompt is empty: give at least one byte")
        if min(ids) < 0 or max(ids) >= vocab:
            raise UserError(f"prompt ids must be in 0..{vocab - 1}")


def decode(
    model: LanguageModel,
    prompts: Sequence[Sequence[int]],
    options: Sequence[CompletionOptions],
    generators: Sequence[torch.Generator | None],
    decoder: Decoder | None = None,
    file_start: bool = True,
) -> Iterator[list[RowStep]]:
    """Generate for a fixed set of rows to the end: prefill them all, then per step sample each
    unfinished row and advance them together (`Batch`). Yields each step's RowSteps.

    `axl generate`, `model.generate`, `stream` and the evaluator's probes all run this loop (the
    server's scheduler drives the same Batch, admitting and releasing rows as requests come and go).
    A caller may end a row early with `step.state.end(reason)`; rows that share a generator draw
    from it in row order. Prompts longer than the context keep their last max_seq_len bytes and
    beyond it the window slides; `file_start` reads a prompt that fits the context as the start of
    a file.
    """
    rows = [list(map(int, p)) for p in prompts]
    check_prompts(model, rows)
    states = [RowState(r, o, g, model.config.vocab_size) for r, o, g in zip(rows, options, generators, strict=True)]
    live = [i for i, o in enumerate(options) if o.max_tokens > 0]
    if not live:
        return
    batch = Batch(model, decoder or new_decoder(model, len(rows)), file_start)
    with torch.inference_mode():
        steps = batch.admit(live, [states[i] for i in live])
        while steps:
            for step in steps:
                if step.error is not None:
                    raise step.error
            yield steps
            steps = batch.step()


def stream(
    model: LanguageModel,
    prompts: torch.Tensor | Sequence[Sequence[int]],
    max_new_tokens: int,
    params: SamplingParams,
    generator: torch.Generator | None = None,
    decoder: Decoder | None = None,
    file_start: bool = True,
) -> Iterator[Step]:
    """`decode` for a batch that all generates max_new_tokens bytes, EOS included: one Step per byte.

    BOS and the FIM sentinels are never sampled. `logprobs` are of the model's distribution before
    temperature and filters (`logprobs_of`, what OpenAI's API reports).
    """
    rows = prompts.tolist() if isinstance(prompts, torch.Tensor) else prompts
    options = CompletionOptions(max_new_tokens, params, stop_at_eos=False)
    for steps in decode(model, rows, [options] * len(rows), [generator] * len(rows), decoder, file_start):
        yield Step(torch.tensor([s.token for s in steps]), torch.stack([s.logits for s in steps]))


def make_generator(seed: int | None, generator: torch.Generator | None = None) -> torch.Generator | None:
    if generator is not None or seed is None:
        return generator
    return torch.Generator().manual_seed(seed)


def generate(
    model: LanguageModel,
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
        model: LanguageModel,
        prompt_ids: list[int],
        max_new_tokens: int,
        params: SamplingParams,
        stop: list[bytes] | None = None,
        seed: int | None = None,
        frequency_penalty: float = 0.0,
        presence_penalty: float = 0.0,
        logit_bias: dict[int, float] | None = None,
        min_indent: int = 0,
        stop_repeated_lines: bool = False,
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
            stop_repeated_lines=stop_repeated_lines,
        )
        self.generator = make_generator(seed)
        self.finish_reason: str | None = None
        self.stopped_by: str | None = None  # RowState.stopped_by: eos, word, indent, repeat, time or length
        self.n_generated = 0

    def __iter__(self) -> Iterator[bytes]:
        self.finish_reason = "length"
        for (step,) in decode(self.model, [self.prompt], [self.options], [self.generator]):
            self.n_generated = step.state.n_generated
            if step.accepted.text:
                yield step.accepted.text
            if step.accepted.finish_reason is not None:
                self.finish_reason, self.stopped_by = step.accepted.finish_reason, step.state.stopped_by
