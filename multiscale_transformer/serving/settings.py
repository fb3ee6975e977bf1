"""ServerSettings: what `axl serve` and `create_app` take, each setting with its flag, default and help.

Kept free of FastAPI, pydantic and torch so that building the `axl` parser stays cheap and works
without the [serve] extra.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from multiscale_transformer.errors import UserError
from multiscale_transformer.model.config import GENERATION_DEFAULTS
from multiscale_transformer.settings import flag, positive_float, positive_int

if TYPE_CHECKING:
    from multiscale_transformer.serving.chat import ChatTemplate


@dataclass(frozen=True)
class ServerSettings:
    """What `axl serve` and `create_app` take; each `flag` field is also an `axl serve` flag."""

    name: str = "axl"  # the model id in /v1/models; `axl serve` defaults it to the model's directory name
    api_key: str | None = None  # `axl serve --api-key`, else $AXL_API_KEY
    max_batch: int = flag(
        8,
        "completions decoded together, one batch row each",
        type=positive_int,
        names=("--max-batch", "--max-concurrency"),
    )
    max_queue: int = flag(64, "completions waiting for a row before requests get 429", type=positive_int)
    default_max_tokens: int = flag(
        GENERATION_DEFAULTS["max_new_tokens"],
        "max_tokens when a request omits it (at most the limit)",
        type=positive_int,
    )
    max_tokens_limit: int = flag(4096, "largest max_tokens accepted", type=positive_int)
    max_body_bytes: int = flag(1 << 20, "largest request body in bytes", type=positive_int)
    chat_template: ChatTemplate | None = None  # None: the AXL format; `axl serve --chat-template FILE`
    # Sampling defaults for fields a request omits: the served model directory's generation_config.json
    # (set when the model loads); None: the published ones (GENERATION_DEFAULTS).
    generation: dict[str, Any] | None = None
    # Local-origin protection (serving/security.py): the bound address and what else may name it.
    host: str = flag("127.0.0.1", "address to bind; 127.0.0.1 = this machine only, 0.0.0.0 = the network")
    allowed_hosts: tuple[str, ...] = flag(
        (),
        "also accept this Host header (repeatable; '*' = any); loopback names and --host always work",
        names=("--allowed-host",),
        many=True,
        metavar="NAME",
    )
    cors_origins: tuple[str, ...] = flag(
        (),
        "let web pages from this origin call the API, e.g. http://localhost:3000 (repeatable)",
        names=("--cors-origin",),
        many=True,
        metavar="ORIGIN",
    )
    docs: bool = flag(False, "serve /docs, /redoc and /openapi.json (behind the API key when there is one)")
    metrics: bool = flag(False, "serve Prometheus metrics at /metrics (behind the API key when there is one)")
    max_inspect_bytes: int = flag(
        16 * 1024, "longest text /v1/inspect (the playground's Inspect) takes, in bytes", type=positive_int
    )
    # Timeouts (serving/http.py): request headers, each wait for the next piece of a body, idle
    # keep-alive connections, and how long shutdown waits for requests in progress.
    header_timeout_s: float = flag(
        10.0, "seconds a client may take to send its request headers", type=positive_float, names=("--header-timeout",)
    )
    body_timeout_s: float = flag(
        30.0, "seconds to wait for each next piece of a request body", type=positive_float, names=("--body-timeout",)
    )
    keep_alive_s: int = flag(5, "seconds an idle connection stays open", type=positive_int, names=("--keep-alive",))
    shutdown_timeout_s: int = flag(
        10, "seconds shutdown waits for requests in progress", type=positive_int, names=("--shutdown-timeout",)
    )
    max_header_bytes: int = flag(16 * 1024, "largest request head (request line and headers)", type=positive_int)
    repo: Path | None = flag(
        None,
        "index this repository's .py files and add chunks retrieved from it to infillings that bring none "
        "(re-indexed when files change; needs a context of 512 bytes or more to have room for them)",
        type=Path,
    )

    def __post_init__(self) -> None:
        positive = ("max_batch", "max_queue", "default_max_tokens", "max_tokens_limit", "max_body_bytes")
        for name in (*positive, "max_inspect_bytes"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("header_timeout_s", "body_timeout_s", "keep_alive_s", "shutdown_timeout_s"):
            if not 0 < getattr(self, name) < float("inf"):
                raise UserError(f"{name} must be a positive number of seconds, got {getattr(self, name)}")
