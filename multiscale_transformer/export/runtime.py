"""Running an exported file in llama.cpp (llama-cpp-python): loading, logits, bits per byte.

The export command uses it to measure what it wrote, by the same sliding-window protocol as
`axl eval`; the tests use it to check that llama.cpp computes what our fine-only forward computes.
"""

from __future__ import annotations

import contextlib
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


def load_llama(path: Path, n_ctx: int, threads: int = 1, f32_cache: bool = False) -> Any:
    """A llama_cpp.Llama for `path` that keeps the logits of every position.

    llama.cpp keeps its KV cache in F16 by default (what users run, so what the export measures); that
    alone moves an F32 file's log-probs by ~1.6e-4 from ours. `f32_cache` keeps keys and values in F32,
    so that llama.cpp computes what our forward computes (4e-7 apart; tests/test_gguf_llama.py)."""
    llama_cpp = import_llama_cpp("running a GGUF file")
    cache = {"type_k": llama_cpp.GGML_TYPE_F32, "type_v": llama_cpp.GGML_TYPE_F32} if f32_cache else {}
    with quiet_native_output():
        return llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=n_ctx,
            logits_all=True,
            n_threads=threads,
            verbose=False,
            **cache,
        )


def llama_logits(llm: Any, ids: Sequence[int]) -> np.ndarray:
    """Logits (T, vocab) that llama.cpp computes for ids, as one fresh sequence."""
    llm.reset()
    llm.eval(list(ids))
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def _eval_documents(data: bytes, limit: int) -> list[Any]:
    from multiscale_transformer.training.data import Document

    if not data[:limit]:
        raise UserError("the evaluation text is empty")
    return [Document("eval-text", data[:limit])]


def gguf_bits_per_byte(path: Path, data: bytes, n_ctx: int, limit: int, threads: int = 1) -> float:
    """Bits per byte of the GGUF at `path` on the first `limit` bytes of `data`, through llama.cpp,
    by the sliding-window protocol of `axl eval` (evaluation/bpb.py): each byte scored once, after EOS."""
    import torch

    from multiscale_transformer.evaluation.bpb import score_documents

    llm = load_llama(path, n_ctx, threads)

    def forward(ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, V), one llama.cpp sequence per row
        return torch.from_numpy(np.stack([llama_logits(llm, row) for row in ids.tolist()]))

    return score_documents(forward, n_ctx, _eval_documents(data, limit), batch_size=1).bits_per_byte


def torch_bits_per_byte(model: Any, data: bytes, limit: int, fine_only: bool) -> float:
    """The same measurement with our PyTorch model (full or fine-only path)."""
    from multiscale_transformer.evaluation.bpb import evaluate_documents

    return evaluate_documents(model, _eval_documents(data, limit), fine_only=fine_only).bits_per_byte
