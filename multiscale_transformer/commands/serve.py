"""`axl serve`: the OpenAI-compatible HTTP server (completions, chat, models, health)."""

from __future__ import annotations

import argparse
import os

from multiscale_transformer.commands.common import DECODE_THREADS, add_threads_argument, set_threads
from multiscale_transformer.errors import UserError
from multiscale_transformer.serving.settings import ServerSettings
from multiscale_transformer.settings import add_flags, from_flags


def add_arguments(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group()
    source.add_argument("--model", help="model directory or .pt checkpoint")
    source.add_argument("--preset", help="a preset with random weights (for trying the server, not for output)")
    p.add_argument("--port", type=int, default=8880, help="port (default 8880)")
    p.add_argument("--name", default=None, help="model name reported by /v1/models (default: the directory name)")
    p.add_argument(
        "--api-key", default=None, help="require 'Authorization: Bearer KEY' (default: $AXL_API_KEY, else none)"
    )
    p.add_argument("--chat-template", default=None, help="JSON file: system, user, assistant, generation_prompt, stop")
    add_flags(p, ServerSettings)  # every other server setting, declared once in serving/settings.py
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    add_threads_argument(p, default="1, measured fastest here for decoding; see docs/serving.md")


def run(args: argparse.Namespace) -> int:
    try:
        from multiscale_transformer.serving.app import create_app
        from multiscale_transformer.serving.chat import ChatTemplate
        from multiscale_transformer.serving.http import bind_socket, make_server
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
    settings = from_flags(
        ServerSettings,
        args,
        name=name,
        api_key=args.api_key or os.environ.get("AXL_API_KEY") or None,
        chat_template=ChatTemplate.from_file(args.chat_template) if args.chat_template else ChatTemplate(),
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
    print(f"axl serve: playground at http://{shown}:{args.port}/ (open it in a browser)")
    if args.host in ("0.0.0.0", "::") and not settings.api_key:
        print("axl serve: warning: listening on all interfaces without --api-key; anyone on the network can use it")
    server.run(sockets=[sock])
    if app.state.fatal_error:
        raise UserError(f"the generation engine stopped ({app.state.fatal_error}); the server has shut down")
    return 0
