"""Generation speed on this machine: KV-cached vs full recomputation, and optional variants.

Prints, from one run: bytes/s and time to first byte at batch 1 for each preset, cached vs full
recomputation as a ratio, the effect of int8 dynamic quantization (and torch.compile with
--compile), and, with --gguf, the same model's fine-scale GGUF in llama.cpp at the same threads.
Weights are random (speed does not depend on them). Not a test: these machines are noisy.

    python bench/generate.py                      # micro and reasoning, 256-byte window
    python bench/generate.py --presets micro --new 128 --threads 2
"""

from __future__ import annotations

import argparse
import time

import torch

from multiscale_transformer.generation.generate import new_decoder, stream
from multiscale_transformer.generation.sampling import SamplingParams
from multiscale_transformer.model.config import ModelConfig
from multiscale_transformer.model.model import MultiScaleTransformer

GREEDY = SamplingParams(0.0, None, None, 1.0)
PROMPT = list(b"def fibonacci(n):\n    ")


def measure(model: MultiScaleTransformer, new: int, cached: bool) -> tuple[float, float]:
    """(bytes/s over the decode steps, seconds to the first byte) for one greedy generation."""
    decoder = new_decoder(model, 1, cached=cached)
    start = time.perf_counter()
    first = 0.0
    for i, _ in enumerate(stream(model, [PROMPT], new, GREEDY, decoder=decoder)):
        if i == 0:
            first = time.perf_counter() - start
    total = time.perf_counter() - start
    return (new - 1) / max(total - first, 1e-9), first


def row(label: str, rate: float, ttfb: float, base: float | None) -> None:
    ratio = f"{rate / base:6.1f}x" if base else "      "
    print(f"  {label:<34} {rate:9.1f} bytes/s   first byte {ttfb * 1000:7.1f} ms   {ratio}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["micro", "reasoning"])
    parser.add_argument("--new", type=int, default=256 - len(PROMPT), help="bytes to generate (fills the window)")
    parser.add_argument("--full-new", type=int, default=24, help="bytes for the slow full-recompute run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also try torch.compile on the cached path")
    parser.add_argument("--gguf", action="store_true", help="also run the fine-scale GGUF in llama.cpp")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, prompt {len(PROMPT)} bytes, {args.new} new bytes, batch 1, fp32, greedy")
    for name in args.presets:
        torch.manual_seed(0)
        model = MultiScaleTransformer(ModelConfig.from_name(name)).eval()
        print(f"{name} ({model.num_parameters():,} parameters)")
        measure(model, 8, cached=True)  # warm-up
        full_rate, full_ttfb = measure(model, args.full_new, cached=False)
        row("full recomputation", full_rate, full_ttfb, None)
        rate, ttfb = measure(model, args.new, cached=True)
        row("KV-cached", rate, ttfb, full_rate)
        quantized = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        q_rate, q_ttfb = measure(quantized, args.new, cached=True)
        row("KV-cached + int8 dynamic quant", q_rate, q_ttfb, full_rate)
        if args.compile:
            compiled = torch.compile(model, dynamic=True)
            c_rate, c_ttfb = measure(compiled, args.new, cached=True)  # type: ignore[arg-type]
            row("KV-cached + torch.compile", c_rate, c_ttfb, full_rate)
        if args.gguf:
            from bench.gguf_speed import llama_cpp_rate  # lands with the GGUF export

            g_rate, g_ttfb = llama_cpp_rate(model, args.new, args.threads)
            row("llama.cpp fine-scale GGUF (F32)", g_rate, g_ttfb, full_rate)
            print(f"  cached AXL / llama.cpp fine-only: {rate / g_rate:.2f}")


if __name__ == "__main__":
    main()
