"""`axl serve` as a command: it binds 127.0.0.1, serves, and bad flags end in one line, exit 2."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from multiscale_transformer.cli import main

from .conftest import make_model
from .live import assert_openai_error


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """`axl serve ARGS` as a subprocess on a free port, once /health says 200: (the process, its base URL)."""
    port = free_port()
    cmd = [sys.executable, "-m", "multiscale_transformer", "serve", "--port", str(port), *args]
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        if server.poll() is not None:
            raise AssertionError(server.stdout.read().decode() if server.stdout else "axl serve exited")
        try:
            if httpx.get(f"{base}/health").status_code == 200:
                return server, base
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.kill()
            raise AssertionError("axl serve did not become ready")
        time.sleep(0.1)


@contextmanager
def running_serve(args: list[str], env: dict[str, str] | None = None) -> Iterator[str]:
    """`start_serve` for the length of a block; yields the base URL."""
    server, base = start_serve(args, env)
    try:
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_axl_serve_runs_and_answers(tmp_path: Path) -> None:
    model_dir = make_model("tiny").save_pretrained(tmp_path / "my-model")
    template = tmp_path / "template.json"
    template.write_text(json.dumps({"user": "Q: {content}\n", "generation_prompt": "A: ", "stop": ["\nQ:"]}))
    args = ["--model", str(model_dir), "--threads", "1", "--chat-template", str(template), "--log-level", "warning"]
    with running_serve(args, env={**os.environ, "AXL_API_KEY": "secret"}) as base:
        headers = {"Authorization": "Bearer secret"}
        models = httpx.get(f"{base}/v1/models", headers=headers).json()
        assert models["data"][0]["id"] == "my-model"
        chat = httpx.post(
            f"{base}/v1/chat/completions",
            headers=headers,
            json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
        )
        assert chat.status_code == 200 and chat.json()["usage"]["prompt_tokens"] == len("Q: hi\nA: ")
        assert_openai_error(httpx.get(f"{base}/v1/models"), 401)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["serve", "--model", "/no/such/model"], "no such model"),
        (["serve", "--preset", "tiny", "--port", "70000"], "--port"),
        (["serve", "--preset", "tiny", "--chat-template", "/no/such.json"], "chat template"),
    ],
)
def test_bad_flags_are_one_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
