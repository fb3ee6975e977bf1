"""POST /v1/fim/completions: Mistral's fill-in-the-middle (Continue's `mistral` provider).

It answers in the chat-completion shapes, as Mistral does: clients read choices[0].message.content,
or choices[0].delta.content when streamed. An empty or absent suffix is a plain completion of the
prompt (there is no middle to fill), which every model can serve; a real infilling with a model
that was not trained for it is a 400 naming the cause. /v1/completions (its `suffix`, or FIM marker
text in its prompt) and llama.cpp's /infill and /completion ask for infillings in their own shapes.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from multiscale_transformer.generation.fim import Infill
from multiscale_transformer.serving.chat_completions import answer
from multiscale_transformer.serving.common import engine_of, read_body, repository_of, settings_of
from multiscale_transformer.serving.protocol import MaxTokens, SamplingFields, openapi_body
from multiscale_transformer.serving.request import GenerationRequest, infill_prompt, plain_prompt, sampling_of
from multiscale_transformer.text import text_bytes

router = APIRouter()


class FimRequest(SamplingFields):
    """Mistral's FIM request (`random_seed` is its name for the seed; `min_tokens` is accepted)."""

    prompt: str
    suffix: str | None = None
    min_tokens: MaxTokens | None = None
    random_seed: int | None = None


@router.post("/v1/fim/completions", response_model=None, openapi_extra=openapi_body(FimRequest))
async def fim_completions(request: Request) -> Response:
    req = await read_body(request, FimRequest)
    config = engine_of(request).model.config
    if req.seed is None and req.random_seed is not None:
        req = req.model_copy(update={"seed": req.random_seed})
    sampling = sampling_of(req, settings_of(request), req.max_tokens)
    options = sampling.options
    if req.suffix:
        infill = Infill(text_bytes(req.prompt), text_bytes(req.suffix))
        prompt = infill_prompt(infill, options, config, "suffix", repository_of(request))
    else:
        prompt = plain_prompt(text_bytes(req.prompt), options, config)
    job = GenerationRequest([prompt], sampling.seed, req.n or 1, stream=bool(req.stream))
    return await answer(request, job, "fim", include_usage=False)
