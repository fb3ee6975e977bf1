"""What both generation endpoints share: settings, reading the body, turning fields into engine specs."""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from multiscale_transformer.errors import UserError
from multiscale_transformer.generation.row import CompletionOptions
from multiscale_transformer.generation.sampling import SamplingParams
from multiscale_transformer.model.config import GENERATION_DEFAULTS
from multiscale_transformer.model.vocab import VOCAB_SIZE
from multiscale_transformer.serving.errors import APIError, validation_error
from multiscale_transformer.serving.protocol import SamplingFields
from multiscale_transformer.serving.settings import ServerSettings
from multiscale_transformer.text import text_bytes

if TYPE_CHECKING:
    from multiscale_transformer.serving.engine import Engine

Req = TypeVar("Req", bound=BaseModel)


def settings_of(request: Request) -> ServerSettings:
    return request.app.state.settings


def engine_of(request: Request) -> Engine:
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        raise APIError(503, "the model is still loading; retry in a moment", code="model_loading")
    return engine


def check_api_key(request: Request) -> None:
    """Bearer authentication with a constant-time comparison, when the server has a key."""
    key = settings_of(request).api_key
    if key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
        raise APIError(401, "invalid or missing API key: send 'Authorization: Bearer KEY'", code="invalid_api_key")


async def read_body(request: Request, model: type[Req]) -> Req:
    """The body as `model`, refusing bodies over the limit before reading them whole (413)."""
    limit = settings_of(request).max_body_bytes
    too_large = APIError(413, f"the request body exceeds {limit} bytes", code="request_too_large")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    body = bytearray()
    timeout = settings_of(request).body_timeout_s
    chunks = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), timeout)
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:
            raise APIError(
                408, f"the request body stalled: no data for {timeout:g} s", code="request_timeout"
            ) from None
        except ClientDisconnect:
            raise APIError(499, "the client disconnected while sending the body", code="client_closed") from None
        body += chunk
        if len(body) > limit:
            raise too_large
    try:
        return model.model_validate_json(bytes(body))
    except ValidationError as exc:
        raise validation_error(exc) from None


def truncate(ids: list[int], request: Request) -> list[int]:
    """Prompts longer than the context keep their last max_seq_len bytes."""
    return ids[-request.app.state.context_length :]


@dataclass(frozen=True)
class Sampling:
    """How a request's completions are sampled; choice j uses seed + j."""

    options: CompletionOptions
    seed: int


def sampling_of(
    req: SamplingFields, settings: ServerSettings, max_tokens: int | None, extra_stop: list[str]
) -> Sampling:
    """The request's sampling fields with the server's defaults filled in; 400 for what cannot be served."""
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
    try:
        params = SamplingParams(
            temperature=d["temperature"] if req.temperature is None else req.temperature,
            top_k=d["top_k"] if req.top_k is None else req.top_k,
            top_p=d["top_p"] if req.top_p is None else req.top_p,
            repetition_penalty=d["repetition_penalty"] if req.repetition_penalty is None else req.repetition_penalty,
        )
    except UserError as exc:
        raise APIError(400, str(exc), code="invalid_value") from None
    bias: dict[int, float] = {}
    for key, value in (req.logit_bias or {}).items():
        # ASCII digits only: str.isdigit() also accepts "²", which int() refuses.
        if not (key.isascii() and key.isdigit()) or int(key) >= VOCAB_SIZE:
            raise APIError(
                400, f"logit_bias keys must be token ids 0..{VOCAB_SIZE - 1}, got {key!r}", param="logit_bias"
            )
        bias[int(key)] = value
    # Without a seed each request draws its own, so no two requests share random state.
    seed = secrets.randbits(63) if req.seed is None else req.seed % (1 << 64)
    options = CompletionOptions(
        max_tokens=max_tokens,
        params=params,
        stop=(*req.stops(), *(text_bytes(s) for s in extra_stop if s)),
        frequency_penalty=req.frequency_penalty or 0.0,
        presence_penalty=req.presence_penalty or 0.0,
        logit_bias=bias,
    )
    return Sampling(options, seed)


def check_capacity(count: int, settings: ServerSettings) -> None:
    most = settings.max_batch + settings.max_queue
    if count > most:
        raise APIError(400, f"the request asks for {count} completions; this server takes at most {most} at once", "n")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


def sse(payload: BaseModel | dict[str, object]) -> str:
    data = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload)
    return f"data: {data}\n\n"


SSE_DONE = "data: [DONE]\n\n"
