"""create_app: the FastAPI application of `axl serve`; all state lives in app.state.

The model loads in a background thread when given as a path, so the port answers at once:
/health says 503 until the model and the engine are ready, then 200.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from multiscale_transformer.model.vocab import VOCAB_SIZE
from multiscale_transformer.serving import (
    chat_completions,
    completions,
    fim_completions,
    inspection,
    llamacpp,
    props,
    tokenization,
)
from multiscale_transformer.serving.common import ServerSettings, check_api_key, engine_of, now, settings_of
from multiscale_transformer.serving.engine import Engine
from multiscale_transformer.serving.errors import APIError, error_body, install_handlers
from multiscale_transformer.serving.metrics import Metrics, MetricsMiddleware, metrics_endpoint
from multiscale_transformer.serving.playground import add_playground
from multiscale_transformer.serving.protocol import ModelCard, ModelList, ModelMeta
from multiscale_transformer.serving.repository import Repository
from multiscale_transformer.serving.security import OriginGuard, OriginPolicy

if TYPE_CHECKING:
    from multiscale_transformer.model.model import MultiScaleTransformer

log = logging.getLogger("axl.serve")


def create_app(
    model: MultiScaleTransformer | str | Path, settings: ServerSettings | None = None, **overrides: Any
) -> FastAPI:
    """The server for `model` (a loaded model, or a path loaded in the background at startup).

    settings: ServerSettings; keyword overrides replace single fields (e.g. api_key="k", max_batch=4).
    """
    settings = replace(settings or ServerSettings(), **overrides)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader = threading.Thread(target=_load, args=(app, model), name="axl-loader", daemon=True)
        loader.start()
        try:
            yield
        finally:
            engine = getattr(app.state, "engine", None)
            if engine is not None:
                engine.stop()

    # Interactive docs only when asked for, and then through routes that check the API key.
    app = FastAPI(
        title="AXL OpenAI-compatible server", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None
    )
    app.state.settings = settings
    app.state.engine = None
    app.state.load_error = None
    app.state.fatal_error = None  # set when the scheduler thread dies
    app.state.shutdown = None  # set by `axl serve`: stops the HTTP server
    app.state.context_length = 0
    app.state.model_config = None
    app.state.inspect_lock = asyncio.Lock()
    app.state.inspections = 0  # in progress or waiting for the lock (serving/inspection.py bounds it)
    app.state.metrics = None
    # Indexed now, so that a directory without Python files stops `axl serve` with one line.
    app.state.repository = Repository(settings.repo) if settings.repo is not None else None
    install_handlers(app)

    v1 = APIRouter(dependencies=[Depends(check_api_key)])
    v1.include_router(completions.router)
    v1.include_router(chat_completions.router)
    v1.include_router(fim_completions.router)  # Mistral's /v1/fim/completions
    v1.include_router(llamacpp.router)  # llama.cpp's /completion and /infill (at the root, as llama.cpp has them)
    v1.include_router(tokenization.router)  # /tokenize, /detokenize, /tokenizer_info (vLLM's, at the root)
    v1.include_router(props.router)  # /props (llama.cpp's)
    v1.include_router(inspection.router)  # /v1/inspect: per-byte surprise and scale gates
    v1.add_api_route("/v1/models", list_models, methods=["GET"])
    v1.add_api_route("/v1/models/{model_id:path}", get_model, methods=["GET"])
    if settings.metrics:
        app.state.metrics = Metrics(app)
        v1.add_api_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
    app.include_router(v1)
    # Open without the key: /health for probes, and the page and its files (it asks for the key itself).
    app.add_api_route("/health", health, methods=["GET"])
    add_playground(app)
    if settings.docs:
        _add_docs(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type"],
        )
    # Added last, so it runs first: a foreign Host or Origin is refused before CORS or routing.
    policy = OriginPolicy.for_bind(settings.host, settings.allowed_hosts, settings.cors_origins)
    app.add_middleware(OriginGuard, policy=policy)
    if app.state.metrics is not None:  # outermost: refused requests are counted too
        app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app


def _add_docs(app: FastAPI) -> None:
    keyed = [Depends(check_api_key)]

    async def openapi_json() -> JSONResponse:
        return JSONResponse(app.openapi())

    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - docs")

    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title=f"{app.title} - ReDoc")

    app.add_api_route("/openapi.json", openapi_json, methods=["GET"], dependencies=keyed, include_in_schema=False)
    app.add_api_route("/docs", swagger, methods=["GET"], dependencies=keyed, include_in_schema=False)
    app.add_api_route("/redoc", redoc, methods=["GET"], dependencies=keyed, include_in_schema=False)


def _load(app: FastAPI, model: MultiScaleTransformer | str | Path) -> None:
    settings: ServerSettings = app.state.settings
    try:
        if isinstance(model, str | Path):
            from multiscale_transformer.model.io import read_generation_config
            from multiscale_transformer.model.model import MultiScaleTransformer

            log.info("loading %s", model)
            if Path(model).is_dir():
                settings = replace(settings, generation=read_generation_config(model))
            model = MultiScaleTransformer.from_pretrained(model)
        model.eval()
        engine = Engine(model, settings.max_batch, settings.max_queue, on_fatal=lambda reason: _fatal(app, reason))
        engine.start()
    except Exception as exc:  # reported by /health; the server stays up to say so
        app.state.load_error = f"{type(exc).__name__}: {exc}"
        log.error("the model failed to load: %s", app.state.load_error)
        return
    app.state.settings = settings
    app.state.context_length = model.config.max_seq_len
    app.state.model_config = model.config
    app.state.engine = engine  # last: its presence means ready
    log.info(
        "ready: serving %r (context %d bytes, %d rows)", settings.name, model.config.max_seq_len, settings.max_batch
    )


def _fatal(app: FastAPI, reason: str) -> None:
    """The scheduler died: /health says so, and `axl serve` (through app.state.shutdown) exits non-zero."""
    app.state.fatal_error = reason
    shutdown = getattr(app.state, "shutdown", None)
    if shutdown is not None:
        shutdown()


async def health(request: Request) -> JSONResponse:
    engine = request.app.state.engine
    if engine is not None and not engine.alive:
        message = f"the generation engine has stopped ({engine.failure or 'no scheduler thread'}); restart the server"
        return JSONResponse({"status": "error", **error_body(503, message, code="engine_dead")}, status_code=503)
    if engine is None:
        error = request.app.state.load_error
        message = f"the model failed to load: {error}" if error else "the model is loading"
        body = {"status": "error" if error else "loading", **error_body(503, message, code="model_loading")}
        return JSONResponse(body, status_code=503)
    return JSONResponse({"status": "ok", "model": settings_of(request).name, **engine.stats()})


def _card(request: Request) -> ModelCard:
    engine = engine_of(request)  # 503 while loading: the context length is not known yet
    context = request.app.state.context_length
    meta = ModelMeta(n_ctx_train=context, n_vocab=VOCAB_SIZE, n_params=engine.model.num_parameters())
    return ModelCard(
        id=settings_of(request).name, created=now(), context_length=context, max_model_len=context, meta=meta
    )


async def list_models(request: Request) -> JSONResponse:
    return JSONResponse(ModelList(data=[_card(request)]).model_dump())


async def get_model(request: Request, model_id: str) -> JSONResponse:
    card = _card(request)
    if model_id != card.id:
        raise APIError(
            404, f"the model {model_id!r} does not exist; this server serves {card.id!r}", "model", "model_not_found"
        )
    return JSONResponse(card.model_dump())
