"""What every endpoint starts from: the server's settings and engine, the API key, the body, the reply's header."""

from __future__ import annotations

import asyncio
import hmac
import time
import uuid
from typing import TYPE_CHECKING, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from multiscale_transformer.serving.errors import APIError, validation_error
from multiscale_transformer.serving.settings import ServerSettings

if TYPE_CHECKING:
    from multiscale_transformer.serving.engine import Engine
    from multiscale_transformer.serving.repository import Repository

Req = TypeVar("Req", bound=BaseModel)


def settings_of(request: Request) -> ServerSettings:
    return request.app.state.settings


def repository_of(request: Request) -> Repository | None:
    """`axl serve --repo`'s index (serving/repository.py), or None."""
    return request.app.state.repository


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


def now() -> int:
    return int(time.time())


def reply_header(request: Request, prefix: str) -> dict[str, object]:
    """The id, created and model fields that an OpenAI-shaped reply and each of its stream's chunks share."""
    return {"id": f"{prefix}-{uuid.uuid4().hex}", "created": now(), "model": settings_of(request).name}
