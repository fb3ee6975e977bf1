"""Running an exported file in llama.cpp (llama-cpp-python): loading, log-probabilities, bits per byte.

The export command uses it to measure what it wrote; the tests use it to check that llama.cpp
computes what our fine-only forward computes.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from multiscale_transformer.errors import UserError


def import_llama_cpp(purpose: str) -> ModuleType:
    try:
        import llama_cpp
    except ImportError:
        raise UserError(
            f"{purpose} needs llama.cpp's Python bindings: pip install llama-cpp-python "
            "(it compiles llama.cpp, ~20 minutes on 2 cores, once per machine)"
        ) from None
    return llama_cpp


@contextlib.contextmanager
def quiet_native_output() -> Iterator[None]:
    """Silence what C code writes to stdout/stderr (llama.cpp's loader and quantizer logs)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)


def load_llama(path: Path, n_ctx: int, threads: int = 1) -> Any:
    """A llama_cpp.Llama for `path` that keeps the logits of every position."""
    llama_cpp = import_llama_cpp("running a GGUF file")
    with quiet_native_output():
        return llama_cpp.Llama(
            model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, logits_all=True, n_threads=threads, verbose=False
        )


def llama_logits(llm: Any, ids: Sequence[int]) -> np.ndarray:
    """Logits (T, vocab) that llama.cpp computes for ids, as one fresh sequence."""
    llm.reset()
    llm.eval(list(ids))
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def windows(data: bytes, length: int, limit: int) -> list[list[int]]:
    """Consecutive windows of `length` + 1 bytes (inputs and their next bytes) covering up to `limit` targets."""
    out = []
    for start in range(0, len(data) - length, length):
        if len(out) * length >= limit:
            break
        out.append(list(data[start : start + length + 1]))
    return out


def bits_per_byte(logprobs: Sequence[np.ndarray], windows_: Sequence[Sequence[int]]) -> float:
    """Mean -log2 p(next byte) over all windows; logprobs[i] is (T, vocab) for windows_[i][:-1]."""
    total, count = 0.0, 0
    for lp, w in zip(logprobs, windows_, strict=True):
        targets = np.asarray(w[1:])
        total -= float(lp[np.arange(len(targets)), targets].sum())
        count += len(targets)
    return total / count / math.log(2)


def gguf_bits_per_byte(path: Path, data: bytes, n_ctx: int, limit: int, threads: int = 1) -> float:
    """Bits per byte of the GGUF at `path` on `data`, in windows of n_ctx bytes, through llama.cpp."""
    llm = load_llama(path, n_ctx, threads)
    ws = windows(data, n_ctx, limit)
    if not ws:
        raise UserError(f"evaluation text is too short: need more than {n_ctx} bytes")
    return bits_per_byte([log_softmax(llama_logits(llm, w[:-1])) for w in ws], ws)


def torch_bits_per_byte(model: Any, data: bytes, n_ctx: int, limit: int, fine_only: bool) -> float:
    """The same measurement with our PyTorch model (full or fine-only path)."""
    import torch

    ws = windows(data, n_ctx, limit)
    if not ws:
        raise UserError(f"evaluation text is too short: need more than {n_ctx} bytes")
    with torch.no_grad():
        x = torch.tensor([w[:-1] for w in ws])  # (N, T)
        lp = torch.log_softmax(model(x, fine_only=fine_only).double(), dim=-1).numpy()  # (N, T, V)
    return bits_per_byte(list(lp), ws)
