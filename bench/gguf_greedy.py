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

from multiscale_transformer.export.runtime import load_llama
from multiscale_transformer.model.vocab import EOS_ID

PROMPTS = ("def add(a, b):\n    return", "class Stack:\n    def __init__(self", "def fibonacci(n):\n")


def complete(llm: Any, prompt: str, max_bytes: int) -> bytes:
    llm.reset()
    llm.eval([EOS_ID, *prompt.encode("utf-8")])
    out = bytearray()
    for _ in range(max_bytes):
        nxt = int(np.argmax(np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float32)))
        if nxt == EOS_ID:
            break
        out.append(nxt)
        llm.eval([nxt])
    return bytes(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf", type=Path)
    parser.add_argument("--max-bytes", type=int, default=80, help="prompt + these must fit the context")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    llm = load_llama(args.gguf, 256, args.threads)
    for prompt in PROMPTS:
        print(repr(prompt), "->", repr(complete(llm, prompt, args.max_bytes).decode("utf-8", "replace")))


if __name__ == "__main__":
    main()
