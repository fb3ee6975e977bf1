"""The one internal request that every endpoint's wire shape becomes: `GenerationRequest`.

Endpoint modules (OpenAI's completions and chat, Mistral's FIM, llama.cpp's /completion and
/infill) build it with the helpers here: the sampling fields with the server's defaults filled in
(`sampling_of`), and each prompt cut to the context or laid out as an infilling (`plain_prompt`,
`infill_prompt`). serving/pipeline.py runs it; the endpoint writes the result back
in its own shape. The ranges of the sampling fields are the request models' (serving/protocol.py):
nothing here checks them again.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from multiscale_transformer.errors import UserError
from multiscale_transformer.generation import fim
from multiscale_transformer.generation.fim import Infill
from multiscale_transformer.generation.row import CompletionOptions
from multiscale_transformer.generation.sampling import SamplingParams
from multiscale_transformer.model.config import GENERATION_DEFAULTS
from multiscale_transformer.serving.engine import Spec
from multiscale_transformer.serving.errors import APIError
from multiscale_transformer.serving.protocol import SamplingFields
from multiscale_transformer.text import text_bytes

if TYPE_CHECKING:
    from multiscale_transformer.model.config import ModelConfig
    from multiscale_transformer.serving.repository import Repository
    from multiscale_transformer.serving.settings import ServerSettings

SEED_SPACE = 1 << 64  # torch.Generator's seeds


@dataclass(frozen=True)
class Prompt:
    """One prompt as the engine reads it, with its own options (an infilling has its own limit and stops)."""

    ids: list[int]
    options: CompletionOptions
    truncated: bool = False  # the request's text did not all fit the context (llama.cpp reports it)


@dataclass(frozen=True)
class GenerationRequest:
    """`n` completions of each prompt; completion j of a prompt is sampled with seed + j, so that a
    seeded request gives the same choices however many it asks for."""

    prompts: list[Prompt]
    seed: int
    n: int = 1
    logprobs: int | None = None  # None: no logprobs; k: each sampled byte's and the top k
    echo: bool = False  # the reply repeats the prompt (with its logprobs when logprobs are asked)
    stream: bool = False
    warm: bool = False  # a prompt with max_tokens 0 is prefilled into a row's cache all the same (Spec.warm)

    @property
    def count(self) -> int:
        """Completions in all: the rows and queue places the request takes."""
        return len(self.prompts) * self.n

    @property
    def prompt_tokens(self) -> int:
        """Prompt bytes as usage counts them: each prompt once, however many choices it has."""
        return sum(len(p.ids) for p in self.prompts)

    def prompt_of(self, index: int) -> Prompt:
        """The prompt of completion `index` (the choices of one prompt are consecutive)."""
        return self.prompts[index // self.n]

    def specs(self) -> list[Spec]:
        return [
            Spec(
                prompt=p.ids,
                options=p.options,
                seed=(self.seed + j) % SEED_SPACE,
                logprobs=self.logprobs,
                prompt_logprobs=self.echo and self.logprobs is not None,
                warm=self.warm,
            )
            for p in self.prompts
            for j in range(self.n)
        ]


@dataclass(frozen=True)
class Sampling:
    """How a request's completions are sampled and stopped, and the seed of its first completion."""

    options: CompletionOptions
    seed: int


def sampling_of(
    req: SamplingFields, settings: ServerSettings, max_tokens: int | None, extra_stop: Sequence[str] = ()
) -> Sampling:
    """The request's sampling fields with the server's defaults filled in; 400 for what this server
    will not serve (max_tokens above its limit)."""
    if max_tokens is None:  # omitted: the default, within the limit
        max_tokens = min(settings.default_max_tokens, settings.max_tokens_limit)
    if max_tokens > settings.max_tokens_limit:
        raise APIError(
            400,
            f"max_tokens is {max_tokens}, above this server's limit of {settings.max_tokens_limit}",
            param="max_tokens",
            code="max_tokens_too_large",
        )
    d = settings.generation or GENERATION_DEFAULTS
    params = SamplingParams(
        temperature=d["temperature"] if req.temperature is None else req.temperature,
        top_k=d["top_k"] if req.top_k is None else req.top_k,
        top_p=d["top_p"] if req.top_p is None else req.top_p,
        repetition_penalty=d["repetition_penalty"] if req.repetition_penalty is None else req.repetition_penalty,
    )
    # Without a seed each request draws its own, so no two requests share random state.
    seed = secrets.randbits(63) if req.seed is None else req.seed % SEED_SPACE
    options = CompletionOptions(
        max_tokens=max_tokens,
        params=params,
        stop=(*req.stops(), *(text_bytes(s) for s in extra_stop if s)),
        frequency_penalty=req.frequency_penalty or 0.0,
        presence_penalty=req.presence_penalty or 0.0,
        logit_bias={int(k): v for k, v in (req.logit_bias or {}).items()},
    )
    return Sampling(options, seed)


def plain_prompt(ids: Sequence[int], options: CompletionOptions, config: ModelConfig) -> Prompt:
    """A prompt as given; one longer than the context keeps its last max_seq_len bytes."""
    if not ids:
        raise APIError(400, "the prompt is empty: give at least one byte", param="prompt", code="empty_prompt")
    window = config.max_seq_len
    return Prompt(list(ids[-window:]), options, truncated=len(ids) > window)


def infill_prompt(
    infill: Infill, options: CompletionOptions, config: ModelConfig, param: str, repository: Repository | None = None
) -> Prompt:
    """An infilling laid out as the model was trained (generation/fim.py), with max_tokens cut to the room
    the context leaves and the stops with which editor servers end an infilling (`fim.editor_stops`,
    and a repeated line) added; 400 naming `param` when the model cannot infill or the context has no room. With a
    repository (`axl serve --repo`), an infilling that brings no chunks of other files gets retrieved ones."""
    if repository is not None:
        infill = repository.with_chunks(infill)
    try:
        plan = fim.plan(config, infill, options.max_tokens, options.stop)
    except UserError as exc:
        code = "fim_unsupported" if not config.fim else "invalid_fim_prompt"
        raise APIError(400, str(exc), param=param, code=code) from None
    options = dataclasses.replace(options, max_tokens=plan.max_tokens, stop=plan.stop, stop_repeated_lines=True)
    return Prompt(plan.ids, options, truncated=fim.truncated(infill, plan.ids))
