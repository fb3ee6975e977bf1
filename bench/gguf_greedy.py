"""Greedy completions of a GGUF export in llama.cpp (llama-cpp-python), for docs/gguf.md.

Each prompt is read as the start of a file (EOS first, as training saw file starts) and continued
greedily, byte by byte, until EOS or --max-bytes. Not a test: what it prints is for reading.

    python bench/gguf_greedy.py gguf/axl-mini-q4_k_m.gguf
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from multiscale_transformer.export.runtime import llama_logits, load_llama
from multiscale_transformer.model.vocab import EOS_ID

PROMPTS = ("def add(a, b):\n    return", "class Stack:\n    def __init__(self", "def fibonacci(n):\n")


def complete(llm: Any, prompt: str, max_bytes: int) -> bytes:
    ids = [EOS_ID, *prompt.encode("utf-8")]
    for _ in range(max_bytes):
        nxt = int(np.argmax(llama_logits(llm, ids)[-1]))
        if nxt == EOS_ID:
            break
        ids.append(nxt)
    return bytes(ids[len(prompt.encode("utf-8")) + 1 :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf", type=Path)
    parser.add_argument("--max-bytes", type=int, default=80, help="at most this many bytes after each prompt")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    longest = max(len(p.encode("utf-8")) for p in PROMPTS)
    llm = load_llama(args.gguf, 1 + longest + args.max_bytes, args.threads)  # EOS + prompt + completion
    for prompt in PROMPTS:
        print(repr(prompt), "->", repr(complete(llm, prompt, args.max_bytes).decode("utf-8", "replace")))


if __name__ == "__main__":
    main()
