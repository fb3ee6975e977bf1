"""`axl serve`: the OpenAI-compatible HTTP server (completions, chat, models, health)."""

from __future__ import annotations

import argparse
import os

from multiscale_transformer.commands.common import DECODE_THREADS, add_threads_argument, positive_int, set_threads
from multiscale_transformer.errors import UserError


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
        "--default-max-tokens", type=positive_int, default=256, help="max_tokens when a request omits it (256)"
    )
    p.add_argument("--max-body-bytes", type=positive_int, default=1 << 20, help="largest request body (default 1 MiB)")
    p.add_argument("--chat-template", default=None, help="JSON file: system, user, assistant, generation_prompt, stop")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    add_threads_argument(p, default="1, measured fastest here for decoding; see docs/serving.md")


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from multiscale_transformer.serving.app import create_app
        from multiscale_transformer.serving.chat import ChatTemplate
        from multiscale_transformer.serving.common import ServerSettings
    except ImportError as exc:
        raise UserError(
            f"axl serve needs the [serve] extra: pip install 'multiscale-transformer[serve]' ({exc})"
        ) from None

    if not 0 < args.port < 65536:
        raise UserError(f"--port must be in 1..65535, got {args.port}")
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
    )
    if args.default_max_tokens > args.max_tokens_limit:
        raise UserError("--default-max-tokens must not exceed --max-tokens-limit")
    app = create_app(model, settings)  # type: ignore[arg-type]
    print(f"axl serve: http://{args.host}:{args.port}/v1 (model {name!r}; GET /health says when it is ready)")
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    except OSError as exc:
        raise UserError(f"cannot listen on {args.host}:{args.port}: {exc}") from None
    return 0
