"""POST /v1/inspect: every byte of a text with the model's surprise, top alternatives and scale gates.

The playground's Inspect view draws this. The text is scored as `axl eval` scores a file (sliding
window, evaluation/inspect.py), so long texts are fine up to the server's `--max-inspect-bytes`.
One inspection runs at a time, in a worker thread, beside the generation engine's scheduler;
numbers are rounded to 4 decimals.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from multiscale_transformer.evaluation.inspect import LOG2, gzip_bits_per_byte, inspect_bytes
from multiscale_transformer.serving.common import engine_of, read_body, settings_of
from multiscale_transformer.serving.errors import APIError
from multiscale_transformer.serving.protocol import openapi_body
from multiscale_transformer.serving.tokens import token_text

router = APIRouter()
DIGITS = 4  # of logprobs and gates: ample for a view, and a quarter of the JSON


class InspectRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    model: str | None = None
    text: str
    top_logprobs: Annotated[int, Field(ge=0, le=20)] = 5
    stride: Annotated[int, Field(ge=1)] | None = None  # bytes scored per window; default half the context


@router.post("/v1/inspect", response_model=None, openapi_extra=openapi_body(InspectRequest))
async def inspect(request: Request) -> JSONResponse:
    req = await read_body(request, InspectRequest)
    engine = engine_of(request)
    limit = settings_of(request).max_inspect_bytes
    data = req.text.encode("utf-8", "surrogatepass")
    if not data:
        raise APIError(400, "the text is empty: give at least one byte", param="text", code="empty_prompt")
    if len(data) > limit:
        raise APIError(
            400, f"the text has {len(data)} bytes; this server inspects at most {limit}", "text", "text_too_long"
        )
    context = engine.model.config.max_seq_len
    if req.stride is not None and req.stride > context:
        raise APIError(400, f"stride must be at most the model's context ({context}), got {req.stride}", "stride")
    async with request.app.state.inspect_lock:  # one at a time: each may take a core for seconds
        result = await run_in_threadpool(inspect_bytes, engine.model, data, req.top_logprobs, req.stride)
    return JSONResponse(
        {
            "object": "inspection",
            "model": settings_of(request).name,
            "bytes": len(data),
            "bits_per_byte": result.bits_per_byte,
            "gzip_bits_per_byte": gzip_bits_per_byte(data),
            "scales": result.scales,
            "context": result.context,
            "stride": result.stride,
            "tokens": [
                {
                    "id": b.byte,
                    "token": token_text(b.byte),
                    "logprob": round(b.logprob, DIGITS),
                    "bits": round(-b.logprob / LOG2, DIGITS),
                    "top_logprobs": [
                        {"id": i, "token": token_text(i), "logprob": round(lp, DIGITS)} for i, lp in b.top
                    ],
                    "gates": [round(g, DIGITS) for g in b.gates],
                }
                for b in result.bytes
            ],
        }
    )
