"""OpenAI-shaped errors: {"error": {"message", "type", "param", "code"}} for every failure, never HTML."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException

TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    500: "server_error",
    503: "server_error",
}


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {
        "error": {"message": message, "type": TYPES.get(status, "invalid_request_error"), "param": param, "code": code}
    }


def error_response(status: int, message: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


def validation_error(exc: ValidationError | RequestValidationError) -> APIError:
    """The first problem of a pydantic validation as a 400 naming the parameter, as OpenAI does."""
    first = exc.errors()[0]
    if first.get("type") == "json_invalid":
        return APIError(400, f"the body is not valid JSON: {first.get('ctx', {}).get('error', first['msg'])}")
    if first.get("type") == "model_type" and not first.get("loc"):
        return APIError(400, "the body must be a JSON object")
    # Drop union-branch names (e.g. "str", "list[int]") so that the parameter reads like the API's.
    raw_loc = first.get("loc", ())
    loc = [str(p) for p in raw_loc if p != "body" and not _is_type_name(p)]
    param = ".".join(loc) or None
    hint = UNION_HINTS.get(loc[-1]) if loc and any(map(_is_type_name, raw_loc)) else None
    message = f"{param} must be {hint}" if hint else f"{param or 'body'}: {first['msg']}"
    return APIError(400, message, param=param, code="invalid_value")


# Fields that take one of several shapes: pydantic's error for the first shape tried would mislead.
UNION_HINTS = {
    "prompt": "a string, a list of strings, a list of byte values 0..255, or a list of such lists",
    "stop": "a string or a list of at most 16 strings",
    "content": "a string or a list of {'type': 'text', 'text': ...} parts",
}


def _is_type_name(part: object) -> bool:
    return isinstance(part, str) and (
        part in {"str", "int", "float", "bool"} or "[" in part or part.startswith("constrained")
    )


def install_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.param, exc.code)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        err = validation_error(exc)
        return error_response(err.status, err.message, err.param, err.code)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        message = {404: f"no such endpoint: {request.method} {request.url.path}"}.get(exc.status_code, str(exc.detail))
        return error_response(exc.status_code, message, code={404: "not_found"}.get(exc.status_code))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}")
