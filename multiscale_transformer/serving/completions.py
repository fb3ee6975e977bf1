"""POST /v1/completions: text completion, with echo and per-byte logprobs (prompt included).

A prompt may be FIM marker text, or come with a `suffix` (Mistral's and OpenAI's way to ask for the
middle): then it is an infilling (serving/request.py).
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from multiscale_transformer.generation import fim
from multiscale_transformer.generation.fim import Infill
from multiscale_transformer.model.vocab import EOS_ID, ByteTokenizer
from multiscale_transformer.serving.common import engine_of, read_body, reply_header, repository_of, settings_of
from multiscale_transformer.serving.engine import ByteLogprob, Chunk, Finished, PromptLogprobs
from multiscale_transformer.serving.errors import APIError
from multiscale_transformer.serving.pipeline import Outcome, serve
from multiscale_transformer.serving.protocol import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    Reply,
    Usage,
    openapi_body,
)
from multiscale_transformer.serving.request import GenerationRequest, infill_prompt, plain_prompt, sampling_of
from multiscale_transformer.serving.sse import OpenAIStream
from multiscale_transformer.serving.tokens import token_text
from multiscale_transformer.text import text_bytes

router = APIRouter()
TOKENIZER = ByteTokenizer()  # text of ids: BOS/EOS given as prompt context are not text


@router.post("/v1/completions", response_model=None, openapi_extra=openapi_body(CompletionRequest))
async def completions(request: Request) -> Response:
    req = await read_body(request, CompletionRequest)
    job = generation_request(req, request)
    header = reply_header(request, "cmpl")
    return await serve(
        request,
        job,
        lambda outcomes: JSONResponse(_reply(job, outcomes, header).model_dump()),
        lambda: _Stream(job, header, bool(req.stream_options and req.stream_options.include_usage)),
    )


def generation_request(req: CompletionRequest, request: Request) -> GenerationRequest:
    """The request's prompts (each plain or an infilling) with n choices each."""
    config = engine_of(request).model.config  # 503 while loading, before anything needs the context length
    n = req.n or 1
    if req.best_of not in (None, n):
        raise APIError(400, "best_of is not supported (only best_of == n)", "best_of", "unsupported")
    items = _prompt_items(req)
    infills = _infills(req, items)
    echo = bool(req.echo)
    if echo and any(infills):
        raise APIError(400, "echo cannot be combined with fill-in-the-middle", param="echo", code="unsupported")
    sampling = sampling_of(req, settings_of(request), req.max_tokens)
    options = sampling.options
    param = "suffix" if req.suffix else "prompt"
    prompts = [
        plain_prompt(text_bytes(p) if isinstance(p, str) else p, options, config)
        if infill is None
        else infill_prompt(infill, options, config, param, repository_of(request))
        for p, infill in zip(items, infills, strict=True)
    ]
    return GenerationRequest(prompts, sampling.seed, n, req.logprobs, echo, bool(req.stream))


def _prompt_items(req: CompletionRequest) -> list[str | list[int]]:
    """The prompts: a string, strings, byte ids, or lists of byte ids; 400 when one is empty."""
    p = req.prompt
    single = isinstance(p, str) or bool(p and all(isinstance(x, int) for x in p))
    items: list[str | list[int]] = [p] if single else list(p)  # type: ignore[list-item]
    if not items or not all(items):
        raise APIError(400, "the prompt is empty: give at least one byte", param="prompt", code="empty_prompt")
    return items


def _infills(req: CompletionRequest, items: list[str | list[int]]) -> list[Infill | None]:
    """Per prompt, the infilling it asks for: `suffix` (with one string prompt) or FIM marker text."""
    if req.suffix:  # an empty suffix leaves nothing to fill: a plain completion
        if not isinstance(req.prompt, str):
            raise APIError(400, "suffix needs the prompt as one string", param="suffix", code="unsupported")
        return [Infill(text_bytes(req.prompt), text_bytes(req.suffix))]
    return [fim.parse_markers(p) if isinstance(p, str) else None for p in items]  # byte ids: no marker text


def logprobs_of(ids: list[int], records: list[ByteLogprob | None], top: int, start: int) -> CompletionLogprobs:
    """OpenAI's completion logprobs for bytes `ids`; text_offset counts bytes from `start`."""
    return CompletionLogprobs(
        tokens=[token_text(i) for i in ids],
        token_logprobs=[r.logprob if r else None for r in records],
        top_logprobs=[({token_text(t): lp for t, lp in r.top} if r else None) for r in records] if top else None,
        text_offset=list(range(start, start + len(ids))),
    )


def _reply(job: GenerationRequest, outcomes: list[Outcome], header: dict[str, object]) -> Completion:
    choices = [_choice(i, job, o) for i, o in enumerate(outcomes)]
    completion_tokens = sum(o.end.completion_tokens for o in outcomes)
    return Completion(**header, choices=choices, usage=Usage.of(job.prompt_tokens, completion_tokens))  # type: ignore[arg-type]


def _choice(index: int, job: GenerationRequest, o: Outcome) -> CompletionChoice:
    """One choice; with echo its text and logprobs start with the prompt's, and a sampled EOS's
    logprob comes after the text's bytes (logprobs count every sampled token)."""
    ids = (job.prompt_of(index).ids if job.echo else []) + list(o.text)
    text, logprobs = TOKENIZER.decode(ids), None
    if job.logprobs is not None:
        records = [*((o.prompt_logprobs or []) if job.echo else []), *o.logprobs]
        if o.end.eos is not None:
            ids, records = [*ids, EOS_ID], [*records, o.end.eos]
        logprobs = logprobs_of(ids, records, job.logprobs, 0)
    return CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=o.end.finish_reason)  # type: ignore[arg-type]


class _Stream(OpenAIStream):
    """Completion chunks; text_offset goes on counting bytes across a choice's chunks."""

    reply = Completion

    def __init__(self, job: GenerationRequest, header: dict[str, object], include_usage: bool) -> None:
        super().__init__(job, header, include_usage)
        self.offsets = [0] * job.count

    def piece(
        self, index: int, text: str, logprobs: CompletionLogprobs | None = None, finish: str | None = None
    ) -> Reply:
        return self.chunk(CompletionChoice(index=index, text=text, logprobs=logprobs, finish_reason=finish))  # type: ignore[arg-type]

    def opening(self) -> Iterable[Reply]:
        if self.job.echo and self.job.logprobs is None:  # the echoed prompt needs no logprobs: send it at once
            for i in range(self.job.count):
                yield self._echo(i, None)

    def prompt(self, event: PromptLogprobs) -> Iterable[Reply]:
        ids = self.job.prompt_of(event.index).ids
        yield self._echo(event.index, logprobs_of(ids, event.logprobs, self.job.logprobs or 0, 0))

    def _echo(self, index: int, logprobs: CompletionLogprobs | None) -> Reply:
        ids = self.job.prompt_of(index).ids
        self.offsets[index] = len(ids)
        return self.piece(index, TOKENIZER.decode(ids), logprobs)

    def text(self, event: Chunk, text: str) -> Iterable[Reply]:
        i, top = event.index, self.job.logprobs
        lp = logprobs_of(list(event.data), list(event.logprobs), top, self.offsets[i]) if top is not None else None
        self.offsets[i] += len(event.data)
        yield self.piece(i, text, lp)

    def finish(self, event: Finished, text: str) -> Iterable[Reply]:
        eos, top = event.eos, self.job.logprobs or 0
        lp = logprobs_of([EOS_ID], [eos], top, self.offsets[event.index]) if eos is not None else None
        yield self.piece(event.index, text, lp, event.finish_reason)
