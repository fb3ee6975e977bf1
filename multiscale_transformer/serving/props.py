"""GET /props: what is served and how it samples by default, as llama.cpp's /props reports it.

The playground fills its parameter panel from `generation_defaults` (the served model directory's
generation_config.json, which the server applies to omitted fields); llama.cpp clients read
`default_generation_settings.n_ctx` (and `n_ctx` at the top, for clients that look there);
the rest describes the model (configuration, parameter count, scales, whether it was trained for
fill-in-the-middle and how an infilling shares the context).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from multiscale_transformer.generation import fim
from multiscale_transformer.model.config import GENERATION_DEFAULTS
from multiscale_transformer.serving.common import engine_of, repository_of, settings_of

router = APIRouter()


@router.get("/props")
async def props(request: Request) -> JSONResponse:
    engine = engine_of(request)
    settings = settings_of(request)
    config = engine.model.config
    repository = repository_of(request)
    d = settings.generation or GENERATION_DEFAULTS
    defaults = {
        "max_tokens": min(settings.default_max_tokens, settings.max_tokens_limit),
        "temperature": d["temperature"],
        "top_k": d["top_k"],
        "top_p": d["top_p"],
        "repetition_penalty": d["repetition_penalty"],
        "frequency_penalty": 0.0,
        "presence_penalty": 0.0,
    }
    return JSONResponse(
        {
            "model": settings.name,
            "n_ctx": config.max_seq_len,
            "context_length": config.max_seq_len,
            "total_slots": settings.max_batch,
            "parameters": engine.model.num_parameters(),
            "scales": list(config.downsample_factors),
            "fim": config.fim,
            # An infilling leaves room for the prompt's prefix and suffix: it writes at most this many bytes.
            "infill_max_tokens": fim.max_infill_tokens(config.max_seq_len),
            # /infill's input_extra chunks take at most this many bytes of the context (generation/fim.py).
            "infill_extra_max_bytes": fim.max_extra_bytes(config.max_seq_len),
            # `axl serve --repo`: the repository whose chunks infillings without input_extra get (null: none).
            "repository": None if repository is None else repository.props(),
            "config": config.to_dict(),
            "generation_defaults": defaults,
            "max_tokens_limit": settings.max_tokens_limit,
            "max_inspect_bytes": settings.max_inspect_bytes,
            # llama.cpp's names for the same defaults
            "default_generation_settings": {
                "n_ctx": config.max_seq_len,
                "params": {
                    "n_predict": defaults["max_tokens"],
                    "temperature": defaults["temperature"],
                    "top_k": defaults["top_k"],
                    "top_p": defaults["top_p"],
                    "repeat_penalty": defaults["repetition_penalty"],
                    "frequency_penalty": 0.0,
                    "presence_penalty": 0.0,
                },
            },
        }
    )
