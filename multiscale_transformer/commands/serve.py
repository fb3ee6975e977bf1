"""`axl serve`: the OpenAI-compatible HTTP server (completions, chat, models, health)."""

from __future__ import annotations

import argparse
import os

from multiscale_transformer.commands.common import (
    DECODE_THREADS,
    add_threads_argument,
    positive_float,
    positive_int,
    set_threads,
)
from multiscale_transformer.errors import UserError
from multiscale_transformer.model.config import GENERATION_DEFAULTS


def add_arguments(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", help="model directory or .pt checkpoint")
    source.add_argument("--preset", help="a preset with random weights (for trying the server, not for output)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8880, help="port (default 8880)")
    p.add_argument("--name", default=None, help="model name reported by /v1/models (default: the directory name)")
    p.add_argument(
        "--api-key", default=None, help="require 'Authorization: Bearer KEY' (default: $AXL_API_KEY, else none)"
    )
    p.add_argument(
        "--max-batch",
        "--max-concurrency",
        dest="max_batch",
        type=positive_int,
        default=8,
        help="completions decoded together in one batch (default 8)",
    )
    p.add_argument("--max-queue", type=positive_int, default=64, help="completions waiting before 429 (default 64)")
    p.add_argument(
        "--max-tokens-limit", type=positive_int, default=4096, help="largest max_tokens accepted (default 4096)"
    )
    p.add_argument(
        "--default-max-tokens",
        type=positive_int,
        default=GENERATION_DEFAULTS["max_new_tokens"],
        help="max_tokens when a request omits it (default: the generation config's max_new_tokens)",
    )
    p.add_argument("--max-body-bytes", type=positive_int, default=1 << 20, help="largest request body (default 1 MiB)")
    p.add_argument("--chat-template", default=None, help="JSON file: system, user, assistant, generation_prompt, stop")
    p.add_argument(
        "--allowed-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also accept this Host header (repeatable; '*' = any); loopback names and --host always work",
    )
    p.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let web pages from this origin call the API, e.g. http://localhost:3000 (repeatable; default none)",
    )
    p.add_argument("--docs", action="store_true", help="serve /docs, /redoc and /openapi.json (behind the API key)")
    p.add_argument("--header-timeout", type=positive_float, default=10.0, help="seconds to send request headers (10)")
    p.add_argument("--body-timeout", type=positive_float, default=30.0, help="seconds between body chunks (30)")
    p.add_argument("--keep-alive", type=positive_int, default=5, help="seconds an idle connection stays open (5)")
    p.add_argument(
        "--shutdown-timeout", type=positive_int, default=10, help="seconds shutdown waits for requests in progress (10)"
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    add_threads_argument(p, default="1, measured fastest here for decoding; see docs/serving.md")


def run(args: argparse.Namespace) -> int:
    try:
        from multiscale_transformer.serving.app import create_app
        from multiscale_transformer.serving.chat import ChatTemplate
        from multiscale_transformer.serving.common import ServerSettings
        from multiscale_transformer.serving.http import bind_socket, make_server
    except ImportError as exc:
        raise UserError(
            f"axl serve needs the [serve] extra: pip install 'multiscale-transformer[serve]' ({exc})"
        ) from None

    if not 0 < args.port < 65536:
        raise UserError(f"--port must be in 1..65535, got {args.port}")
    if args.default_max_tokens > args.max_tokens_limit:
        raise UserError("--default-max-tokens must not exceed --max-tokens-limit")
    if args.preset:
        from multiscale_transformer.commands.common import load_model_from_args

        model: object = load_model_from_args(args)
        name = args.name or f"axl-{args.preset}-random"
    else:
        from multiscale_transformer.commands.common import model_path_from_args

        path = model_path_from_args(args)
        if not path.exists():
            raise UserError(f"no such model: {path}")
        model = path
        name = args.name or path.resolve().stem
    set_threads(args.threads or DECODE_THREADS)  # and the other core serves HTTP
    settings = ServerSettings(
        name=name,
        api_key=args.api_key or os.environ.get("AXL_API_KEY") or None,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        default_max_tokens=args.default_max_tokens,
        max_tokens_limit=args.max_tokens_limit,
        max_body_bytes=args.max_body_bytes,
        chat_template=ChatTemplate.from_file(args.chat_template) if args.chat_template else ChatTemplate(),
        host=args.host,
        allowed_hosts=tuple(args.allowed_host),
        cors_origins=tuple(args.cors_origin),
        docs=args.docs,
        header_timeout_s=args.header_timeout,
        body_timeout_s=args.body_timeout,
        keep_alive_s=args.keep_alive,
        shutdown_timeout_s=args.shutdown_timeout,
    )
    # Bound before the model loads: a bad address or a busy port is one line, not a log and exit code 3.
    sock = bind_socket(args.host, args.port)
    app = create_app(model, settings)  # type: ignore[arg-type]
    server = make_server(app, settings, log_level=args.log_level)

    def shutdown() -> None:  # called from the scheduler thread if it dies
        server.should_exit = True

    app.state.shutdown = shutdown
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"axl serve: http://{shown}:{args.port}/v1 (model {name!r}; GET /health says when it is ready)")
    if args.host in ("0.0.0.0", "::") and not settings.api_key:
        print("axl serve: warning: listening on all interfaces without --api-key; anyone on the network can use it")
    server.run(sockets=[sock])
    if app.state.fatal_error:
        raise UserError(f"the generation engine stopped ({app.state.fatal_error}); the server has shut down")
    return 0
