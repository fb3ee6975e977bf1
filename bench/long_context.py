"""Latency and memory at long context, on 1 thread (issue 27's targets), in one process:

1. time to the first byte of an 8 KB prompt (prefill + the first sampled byte; aim: at most 250 ms);
2. a request that appends 16 bytes to the cached 8 KB prompt (prompt reuse; aim: at most 50 ms);
3. decoding at the full context: bytes/s of greedy steps from the context's end on (aim: >= 500),
   beside the 256-byte bundled model's decoding measured in the same run;
4. memory while generating `--generate` bytes past the context (aim: flat): the process's resident
   memory after every tenth of them.

    python bench/long_context.py                       # mini-post20 at 8,192 bytes, windows 256 / 1,024
    python bench/long_context.py --model ~/axl-runs/long/ctx8192 --generate 100000

Speed does not depend on what the weights learned, so the default is the bundled layout at the
issue's context with random weights; `--model` measures a trained one.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import torch

from multiscale_transformer.generation.cached import CachedDecoder
from multiscale_transformer.model.config import ModelConfig
from multiscale_transformer.model.model import MultiScaleTransformer

BUNDLED = Path(__file__).resolve().parents[1] / "multiscale_transformer" / "pretrained" / "axl-mini"
SOURCE = Path(torch.__file__).parent.joinpath("nn", "modules", "module.py").read_bytes()


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def first_byte_ms(decoder: CachedDecoder, prompt: list[int], row: int = 0) -> float:
    start = time.perf_counter()
    logits = decoder.prefill_rows([row], [prompt])
    int(logits[0].argmax())
    return (time.perf_counter() - start) * 1000


def decode_rate(decoder: CachedDecoder, prompt: list[int], n: int) -> float:
    """Greedy bytes/s of n steps after `prompt` (the steps run where the prompt ends)."""
    logits = decoder.prefill_rows([0], [prompt])[0]
    active = torch.tensor([True])
    start = time.perf_counter()
    for _ in range(n):
        logits = decoder.step(logits.argmax().view(1), active)[0]
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="a trained long-context model (default: random weights, below)")
    p.add_argument("--preset", default="mini-post20")
    p.add_argument("--context", type=int, default=8192)
    p.add_argument("--window", type=int, default=256)
    p.add_argument("--coarse-window", type=int, default=1024)
    p.add_argument("--steps", type=int, default=512, help="decoding steps per speed measurement")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--generate", type=int, default=100_000, help="bytes generated for the memory check")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if args.model:
        model = MultiScaleTransformer.from_pretrained(args.model)
    else:
        cfg = ModelConfig.from_name(
            args.preset,
            max_seq_len=args.context,
            attention_window=args.window,
            coarse_window=args.coarse_window,
        )
        model = MultiScaleTransformer(cfg).eval()
    short = MultiScaleTransformer.from_pretrained(BUNDLED)
    cfg = model.config
    C = cfg.max_seq_len
    text = list((SOURCE * (1 + 2 * C // len(SOURCE)))[: 2 * C])
    prompt = text[:C]
    print(
        f"model: {args.model or args.preset} context {C}, windows {cfg.attention_window} / {cfg.coarse_window}, "
        f"rolling {cfg.rolling}, {model.num_parameters():,} parameters; 1 thread"
    )

    ttfb, append = [], []
    for _ in range(args.rounds):
        decoder = CachedDecoder(model)
        ttfb.append(first_byte_ms(decoder, prompt[:-16]))
        append.append(first_byte_ms(decoder, prompt))  # the same row: its first C-16 bytes are cached
    print(f"1. first byte of a {C - 16:,}-byte prompt: median {statistics.median(ttfb):.0f} ms (aim <= 250)")
    print(f"2. the same prompt + 16 bytes, cached start: median {statistics.median(append):.1f} ms (aim <= 50)")

    rates, short_rates = [], []
    for _ in range(args.rounds):  # interleaved, so both see the same machine
        rates.append(decode_rate(CachedDecoder(model), prompt[-C + 64 :], args.steps))
        short_rates.append(decode_rate(CachedDecoder(short), prompt[-short.config.max_seq_len :], args.steps))
    rate, short_rate = statistics.median(rates), statistics.median(short_rates)
    print(
        f"3. decoding at the full context: median {rate:.0f} bytes/s (aim >= 500); the bundled 256-byte model "
        f"{short_rate:.0f} bytes/s; ratio {rate / short_rate:.2f}"
    )

    decoder = CachedDecoder(model)
    logits = decoder.prefill_rows([0], [prompt])[0]
    active, marks = torch.tensor([True]), []
    start = time.perf_counter()
    for i in range(args.generate):
        logits = decoder.step(torch.multinomial(torch.softmax(logits, -1), 1), active)[0]
        if (i + 1) % max(1, args.generate // 10) == 0:
            marks.append(resident_mb())
    seconds = time.perf_counter() - start
    print(
        f"4. {args.generate:,} bytes generated past a full context in {seconds:.0f} s ({args.generate / seconds:.0f} "
        f"bytes/s): resident memory after each tenth {', '.join(f'{m:.0f}' for m in marks)} MB "
        f"(growth {marks[-1] - marks[0]:+.1f} MB)"
    )


if __name__ == "__main__":
    main()
