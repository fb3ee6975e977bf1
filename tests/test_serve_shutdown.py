"""SIGTERM during streams: `axl serve` stops admitting, lets active streams run, ends the rest with an
error event and [DONE] before the shutdown timeout, and exits 0 (issue 29's red-team case)."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import httpx

from .conftest import make_model
from .test_serve_cli import start_serve

TIMEOUT_S = 3  # --shutdown-timeout


def read_stream(url: str, body: dict, out: dict) -> None:
    """Reads one SSE stream to its end; records its events, whether bytes came, and how it ended."""
    out.update(events=[], done=False, error=None, first_byte=threading.Event())
    try:
        with httpx.stream("POST", url, json=body, timeout=60) as response:
            out["status"] = response.status_code
            for line in response.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = line.removeprefix("data: ")
                if data == "[DONE]":
                    out["done"] = True
                    continue
                event = json.loads(data)
                out["events"].append(event)
                if "error" in event:
                    out["error"] = event["error"]
                elif any(c.get("text") for c in event.get("choices", [])):
                    out["first_byte"].set()
    except httpx.HTTPError as exc:
        out["transport_error"] = repr(exc)


def test_sigterm_ends_every_stream_with_an_event_and_exits_0(tmp_path: Path) -> None:
    model_dir = make_model("tiny").save_pretrained(tmp_path / "m")
    args = ["--model", str(model_dir), "--max-batch", "2", "--shutdown-timeout", str(TIMEOUT_S), "--threads", "1",
            "--log-level", "warning"]  # fmt: skip
    server, base = start_serve(args)
    try:
        # 2 active and 2 queued streams, each far longer than the shutdown timeout.
        # (EOS is banned: a random model would otherwise end a stream by itself within a few hundred bytes)
        body = {"prompt": "def f(x):", "max_tokens": 4000, "stream": True, "logit_bias": {"257": -100}}
        streams = [dict() for _ in range(4)]
        threads = [threading.Thread(target=read_stream, args=(f"{base}/v1/completions", body, s)) for s in streams]
        for t in threads:
            t.start()
            time.sleep(0.2)
        assert streams[0]["first_byte"].wait(30) and streams[1]["first_byte"].wait(30)
        signalled = time.monotonic()
        server.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        try:  # after the signal: refused at the socket, or a 503 naming the shutdown
            late = httpx.post(f"{base}/v1/completions", json={"prompt": "x", "max_tokens": 2}, timeout=10)
            assert late.status_code == 503 and late.json()["error"]["code"] == "shutting_down", late.text
        except httpx.ConnectError:
            pass
        rc = server.wait(timeout=TIMEOUT_S + 15)
        took = time.monotonic() - signalled
        for t in threads:
            t.join(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    log = server.stdout.read().decode() if server.stdout else ""
    assert rc == 0, log
    assert took < TIMEOUT_S + 5, took
    for s in streams:
        assert s.get("status") == 200 and "transport_error" not in s, s
        assert s["done"], s  # every stream ends with [DONE]
        assert s["error"] is not None and "shutting down" in s["error"]["message"], s["events"][-1:]
        assert s["error"]["type"] == "server_error"
    assert all(s["first_byte"].is_set() for s in streams[:2])  # the active two streamed bytes before the end
