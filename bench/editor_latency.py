"""What an editor feels from `axl serve` on 1 thread: kept-alive latency, a time-budgeted infill under load,
and how much an inspection slows a running stream next to what one more generation does.

Starts `axl serve --model MODEL --threads 1` (default: the bundled model) on a free 127.0.0.1 port,
then prints:
1. Three llama.vim-shaped `/infill` requests on one kept-alive connection: the client's time to the
   whole reply against the server's own `timings` (prompt_ms + predicted_ms); the difference is
   what the connection adds (issue 29 aim: within 5 ms from the second request on).
2. A llama.vim request with `t_max_predict_ms: 250` while 3 other streams run (aim: under 300 ms).
3. A 512-byte stream alone, beside a 16 KiB inspection, and beside a second 512-byte stream: the
   inspection should slow it no more than the second stream does (its windows run one per step).
4. llama.vscode with repository context: its warm-up (16 chunks of 32 lines of other files as
   `input_extra`, `n_predict: 0`), then streamed infillings at three cursors (256 lines of prefix, 64
   of suffix, the same chunks): the client's time to the first byte (issue 28 aim: at most 250 ms).

    python bench/editor_latency.py [--model DIR] [--only N ...]
"""

from __future__ import annotations

import argparse
import http.client
import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from serve import free_port, wait_ready  # bench/serve.py, beside this file

BUNDLED = Path(__file__).resolve().parents[1] / "multiscale_transformer" / "pretrained" / "axl-mini"
SOURCE = Path(textwrap.__file__).read_text(encoding="utf-8")
PREFIX, SUFFIX = SOURCE[6000:8000], SOURCE[8000:8600]
VIM = {"input_prefix": PREFIX, "input_suffix": SUFFIX, "input_extra": [], "prompt": "", "n_predict": 128, "n_indent": 4,
       "top_k": 40, "top_p": 0.90, "samplers": ["top_k", "top_p", "infill"], "stream": False, "cache_prompt": True,
       "t_max_prompt_ms": 500, "t_max_predict_ms": 1000,
       "response_fields": ["content", "timings/prompt_ms", "timings/predicted_ms", "timings/predicted_n"]}  # fmt: skip


def kept_alive(base: str) -> None:
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    print("1. three /infill requests on one kept-alive connection (client ms / server ms / added ms)")
    for i in range(3):
        start = time.perf_counter()
        connection.request("POST", "/infill", json.dumps({**VIM, "seed": i}), {"Content-Type": "application/json"})
        reply = json.loads(connection.getresponse().read())
        client_ms = (time.perf_counter() - start) * 1000
        server_ms = reply["timings/prompt_ms"] + reply["timings/predicted_ms"]
        print(f"   request {i + 1}: {client_ms:7.1f} / {server_ms:7.1f} / {client_ms - server_ms:5.1f}")
    connection.close()


def stream(base: str, max_tokens: int, seed: int, out: list[float] | None = None) -> float:
    body = {"prompt": PREFIX[-200:], "max_tokens": max_tokens, "stream": True, "seed": seed}
    body["logit_bias"] = {"257": -100}  # no EOS: every stream writes all its bytes
    start = time.perf_counter()
    with httpx.stream("POST", f"{base}/v1/completions", json=body, timeout=120) as response:
        for _ in response.iter_lines():
            pass
    seconds = time.perf_counter() - start
    if out is not None:
        out.append(seconds)
    return seconds


def budget_under_load(base: str) -> None:
    others = [threading.Thread(target=stream, args=(base, 1500, 100 + i)) for i in range(3)]
    for t in others:
        t.start()
    time.sleep(1.0)
    start = time.perf_counter()
    reply = httpx.post(f"{base}/infill", json={**VIM, "t_max_predict_ms": 250, "seed": 1}, timeout=60).json()
    ms = (time.perf_counter() - start) * 1000
    print(f"2. llama.vim request, t_max_predict_ms 250, 3 other streams: {ms:.0f} ms, "
          f"{reply['timings/predicted_n']} bytes: {reply['content'][:60]!r}")  # fmt: skip
    for t in others:
        t.join()


def inspection_next_to_a_stream(base: str) -> None:
    alone = stream(base, 512, 1)
    text = (SOURCE * 2)[: 16 * 1024]
    results: list[float] = []

    def beside(other: threading.Thread) -> float:
        runner = threading.Thread(target=stream, args=(base, 512, 1, results))
        other.start()
        time.sleep(0.05)
        runner.start()
        runner.join()
        other.join()
        return results.pop()

    inspect = threading.Thread(target=lambda: httpx.post(f"{base}/v1/inspect", json={"text": text}, timeout=300))
    with_inspect = beside(inspect)
    with_stream = beside(threading.Thread(target=stream, args=(base, 512, 2)))
    print(f"3. a 512-byte stream: alone {alone:.2f} s, beside a 16 KiB inspection {with_inspect:.2f} s "
          f"({with_inspect / alone:.2f}x), beside another 512-byte stream {with_stream:.2f} s "
          f"({with_stream / alone:.2f}x)")  # fmt: skip


def repository_context(base: str) -> None:
    other = Path(argparse.__file__).read_text(encoding="utf-8").splitlines(keepends=True)
    extra = [{"filename": "argparse.py", "text": "".join(other[i * 32 : (i + 1) * 32])} for i in range(16)]
    warm = {"input_prefix": "", "input_suffix": "", "input_extra": extra, "prompt": "", "n_predict": 0,
            "samplers": [], "cache_prompt": True, "t_max_prompt_ms": 1, "t_max_predict_ms": 1}  # fmt: skip
    httpx.post(f"{base}/infill", json=warm, timeout=60).raise_for_status()
    lines = SOURCE.splitlines(keepends=True)
    times = []
    for cursor in (300, 360, 420):  # three places in textwrap.py, none read before
        prefix, suffix = "".join(lines[cursor - 256 : cursor]), "".join(lines[cursor : cursor + 64])
        body = {"input_prefix": prefix, "input_suffix": suffix, "input_extra": extra, "prompt": "",
                "n_predict": 128, "n_indent": 4, "top_k": 40, "top_p": 0.99,
                "samplers": ["top_k", "top_p", "infill"], "stream": True, "cache_prompt": True,
                "t_max_prompt_ms": 500, "t_max_predict_ms": 1000}  # fmt: skip
        start = time.perf_counter()
        first = None
        with httpx.stream("POST", f"{base}/infill", json=body, timeout=60) as response:
            for line in response.iter_lines():  # read to the end: the next request finds the row free
                if first is None and line.startswith("data:"):
                    first = (time.perf_counter() - start) * 1000
        times.append(first or float("nan"))
    print("4. llama.vscode after its warm-up with 16 chunks, time to the first byte at three cursors: "
          + " / ".join(f"{ms:.0f}" for ms in times) + " ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=BUNDLED)
    parser.add_argument("--only", type=int, action="append", choices=range(1, 5), help="run item N only (repeatable)")
    args = parser.parse_args()
    port = free_port()
    cmd = [sys.executable, "-m", "multiscale_transformer", "serve", "--model", str(args.model), "--port", str(port),
           "--threads", "1", "--log-level", "warning"]  # fmt: skip
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server)
        stream(base, 32, 0)  # first calls pay one-time costs
        items = {1: kept_alive, 4: repository_context, 2: budget_under_load, 3: inspection_next_to_a_stream}
        for number, item in items.items():
            if not args.only or number in args.only:
                item(base)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
