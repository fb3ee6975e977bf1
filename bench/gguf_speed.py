"""Decode speed of a model's fine-scale GGUF in llama.cpp (llama-cpp-python), for bench/generate.py."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from multiscale_transformer.export.gguf import write_gguf
from multiscale_transformer.export.runtime import import_llama_cpp, quiet_native_output
from multiscale_transformer.model.model import MultiScaleTransformer


def llama_cpp_rate(model: MultiScaleTransformer, prompt: list[int], new: int, threads: int) -> tuple[float, float]:
    """(bytes/s over the decode steps, seconds to the first byte), greedy, batch 1, F32 weights."""
    llama_cpp = import_llama_cpp("the llama.cpp comparison")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fine-f32.gguf"
        write_gguf(model, path, "f32", "bench")
        with quiet_native_output():
            llm = llama_cpp.Llama(
                model_path=str(path), n_ctx=model.config.max_seq_len, n_threads=threads, verbose=False
            )
        llm.eval(prompt)  # warm-up
        llm.reset()
        start = time.perf_counter()
        first = 0.0
        n = 0
        tokens = llm.generate(prompt, temp=0.0, top_k=1, repeat_penalty=1.0, reset=True)
        for n, _ in enumerate(tokens, start=1):
            if n == 1:
                first = time.perf_counter() - start
            if n >= new:
                break
        total = time.perf_counter() - start
    return (n - 1) / max(total - first, 1e-9), first
