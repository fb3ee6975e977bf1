"""POST /v1/inspect: every byte of a text with the model's surprise, top alternatives and scale shares.

The playground's Inspect view draws this. The text is scored as `axl eval` scores a file (sliding
window, evaluation/inspect.py), so long texts are fine up to the server's `--max-inspect-bytes`.
Numbers are rounded to 4 decimals. What an inspection may cost is bounded, since any caller can ask:
- work: the positions its windows compute at most INSPECT_COST x `--max-inspect-bytes` (the
  default stride, half the context, computes 2 per byte; stride 1 on 16 KiB would be 4 million);
- size: top_logprobs x bytes at most ALTERNATIVES x `--max-inspect-bytes` (the playground asks 5);
- queue: one inspection runs at a time, INSPECT_QUEUE in all may wait or run, more get 429;
- sharing: its windows run in the engine's thread between decoding steps (`Engine.call`), at most
  a third of the scheduler's time while streams run, so a stream slows no more than beside one more
  stream, not by a second computation competing for the cores;
- abandonment: a client that disconnects stops its inspection at the next window.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Annotated

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field

from multiscale_transformer.evaluation.bpb import sliding_windows
from multiscale_transformer.evaluation.inspect import (
    LOG2,
    ByteReport,
    Inspection,
    default_stride,
    gzip_bits_per_byte,
    inspect_window,
    positions_computed,
    text_ids,
)
from multiscale_transformer.serving.common import engine_of, read_body, settings_of
from multiscale_transformer.serving.errors import APIError
from multiscale_transformer.serving.protocol import RequestModel, openapi_body
from multiscale_transformer.serving.tokens import token_text
from multiscale_transformer.text import text_bytes

INSPECT_COST = 4  # positions computed per byte of --max-inspect-bytes
ALTERNATIVES = 5  # top_logprobs entries per byte of --max-inspect-bytes
INSPECT_QUEUE = 4  # inspections running or waiting

router = APIRouter()
DIGITS = 4  # of logprobs and gates: ample for a view, and a quarter of the JSON


class InspectRequest(RequestModel):
    model: str | None = None
    text: str
    top_logprobs: Annotated[int, Field(ge=0, le=20)] = 5
    stride: Annotated[int, Field(ge=1)] | None = None  # bytes scored per window; default half the context


@router.post("/v1/inspect", response_model=None, openapi_extra=openapi_body(InspectRequest))
async def inspect(request: Request) -> Response:
    req = await read_body(request, InspectRequest)
    engine = engine_of(request)
    limit = settings_of(request).max_inspect_bytes
    data = text_bytes(req.text)
    if not data:
        raise APIError(400, "the text is empty: give at least one byte", param="text", code="empty_prompt")
    if len(data) > limit:
        raise APIError(
            400, f"the text has {len(data)} bytes; this server inspects at most {limit}", "text", "text_too_long"
        )
    context = engine.model.config.max_seq_len
    if req.stride is not None and req.stride > context:
        raise APIError(400, f"stride must be at most the model's context ({context}), got {req.stride}", "stride")
    stride = req.stride or default_stride(context)
    cost = positions_computed(len(data), context, stride)
    if cost > INSPECT_COST * limit:
        raise APIError(
            400,
            f"stride {stride} on {len(data)} bytes would compute {cost} positions; this server computes at most "
            f"{INSPECT_COST * limit} for one inspection (a larger stride, or a shorter text)",
            "stride",
            "inspection_too_costly",
        )
    if req.top_logprobs * len(data) > ALTERNATIVES * limit:
        raise APIError(
            400,
            f"top_logprobs {req.top_logprobs} for {len(data)} bytes is more than {ALTERNATIVES * limit} "
            "alternatives in all; ask for fewer, or inspect a shorter text",
            "top_logprobs",
        )
    state = request.app.state
    if state.inspections >= INSPECT_QUEUE:
        raise APIError(429, f"{state.inspections} inspections are running or waiting; retry later", code="busy")
    state.inspections += 1
    try:
        async with state.inspect_lock:  # one at a time: its windows already share the engine's steps
            ids = text_ids(data)
            reports: list[ByteReport] = []
            for w in sliding_windows(len(data), context, stride):
                if await request.is_disconnected():
                    return Response(status_code=499)  # nobody reads the answer: stop computing it
                window = functools.partial(inspect_window, engine.model, ids, w, req.top_logprobs)
                reports += await asyncio.wrap_future(engine.call(window))
    finally:
        state.inspections -= 1
    result = Inspection(reports, list(engine.model.config.downsample_factors), context, stride)
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
                    "shares": [round(g, DIGITS) for g in b.shares],
                }
                for b in result.bytes
            ],
        }
    )
