"""What an editor's infillings cost at a long context: bytes read, bytes found in a row's cache, time to
the prompt read, for the requests llama.vim and llama.vscode send (docs/editors.md, "Long contexts").

Serves a model with random weights in-process on 1 thread (the post20 layout at 8,192 bytes with windows
256 / 1,024 by default: speed does not depend on the weights), then posts to /infill, in order: a
6 KB prefix and 2 KB suffix of textwrap.py cold, again, one byte longer; the same with 16 chunks of
1 KB of argparse.py as `input_extra`, cold; llama.vim's warm-up of those chunks (`n_predict: 0`, empty
prefix and suffix); the infilling after it; one byte more; a 200-byte prefix after the same chunks;
one byte more. One line per request.

    python bench/infill_context.py [--preset mini-post20 --context 8192 --window 256 --coarse-window 1024]
"""

from __future__ import annotations

import argparse
import textwrap
import time
from pathlib import Path
from typing import Any

import torch
from fastapi.testclient import TestClient

from multiscale_transformer.model.config import ModelConfig
from multiscale_transformer.model.model import MultiScaleTransformer
from multiscale_transformer.serving.app import create_app

FIELDS = ["timings/prompt_ms", "tokens_evaluated", "tokens_cached", "truncated"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="mini-post20")
    parser.add_argument("--context", type=int, default=8192)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--coarse-window", type=int, default=1024)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = ModelConfig.from_name(
        args.preset, max_seq_len=args.context, attention_window=args.window, coarse_window=args.coarse_window, fim=True
    )
    model = MultiScaleTransformer(config).eval()
    source = Path(textwrap.__file__).read_text(encoding="utf-8")
    other = Path(argparse.__file__).read_text(encoding="utf-8")
    prefix, suffix = source[:6000], source[6000:8000]
    chunks = [{"filename": f"argparse_{i}.py", "text": other[i * 1000 : (i + 1) * 1000]} for i in range(16)]
    base = {"input_prefix": prefix, "input_suffix": suffix, "n_predict": 1, "temperature": 0.0}
    base["response_fields"] = FIELDS
    print(f"{args.preset}, context {args.context}, windows {args.window}/{args.coarse_window}, 1 thread")
    print(f"{'request':58s} {'prompt ms':>10s} {'read':>6s} {'cached':>6s} truncated")
    with TestClient(create_app(model, name="bench", max_batch=2), base_url="http://127.0.0.1") as client:
        while client.get("/health").status_code != 200:
            time.sleep(0.1)

        def post(label: str, **fields: Any) -> None:
            r = client.post("/infill", json={**base, **fields}).json()
            print(
                f"{label:58s} {r['timings/prompt_ms']:10.1f} {r['tokens_evaluated']:6d} {r['tokens_cached']:6d} "
                f"{r['truncated']}"
            )

        post("(the model's first call, not counted)", input_prefix="x", input_suffix="")
        post("6 KB prefix + 2 KB suffix, cold")
        post("the same again")
        post("one byte more typed", input_prefix=prefix + "x")
        post("with 16 x 1 KB input_extra, cold", input_extra=chunks, input_prefix=prefix[:5000])
        warm = {"input_extra": chunks[::-1], "input_prefix": "", "input_suffix": "", "n_predict": 0}
        post("llama.vim's warm-up: those chunks, n_predict 0", **warm)
        post("the infilling after the warm-up", input_extra=chunks[::-1])
        post("one byte more typed", input_extra=chunks[::-1], input_prefix=prefix + "x")
        post("a 200-byte prefix after the same chunks", input_extra=chunks[::-1], input_prefix=prefix[-200:])
        post("one byte more typed", input_extra=chunks[::-1], input_prefix=prefix[-200:] + "x")


if __name__ == "__main__":
    main()
