"""Training throughput: bytes/s and achieved GFLOP/s against this machine's fp32 matmul peak, for the
multi-scale model and its equal-parameter single-scale baseline (`ModelConfig.flat()`), in one run.

    python bench/train.py                       # tiny and micro
    python bench/train.py --presets tiny,micro,reasoning --steps 3
    python bench/train.py --presets tiny --compile   # also time torch.compile
    python bench/train.py --presets mini-post20 --contexts 256,8192 --window 512   # long context's cost per byte

FLOPs are counted by torch.utils.flop_counter on one forward+backward (matmuls and attention), so
the multi-scale model is credited only for the positions its coarse stacks really see.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from multiscale_transformer.model.config import ModelConfig
from multiscale_transformer.model.model import MultiScaleTransformer
from multiscale_transformer.training.optim import build_optimizer


def matmul_peak_gflops(n: int = 1024, repeats: int = 20) -> float:
    """Best-of fp32 matmul rate: the ceiling a training step could reach on this CPU."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def step_fn(model: torch.nn.Module, batch: int, T: int, compiled: bool) -> tuple[Callable[[], None], float]:
    """One training step (forward, backward, Lion update) and its FLOPs."""
    x = torch.randint(0, 256, (batch, T + 1))
    opt = build_optimizer(model, "lion")

    def loss(m: torch.nn.Module) -> torch.Tensor:
        return F.cross_entropy(m(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())

    counter = FlopCounterMode(display=False)
    with counter:  # counted on the eager model: compilation changes the kernels, not the arithmetic
        loss(model).backward()
    opt.zero_grad(set_to_none=True)
    fwd = torch.compile(model) if compiled else model

    def step() -> None:
        loss(fwd).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, counter.get_total_flops()


def measure(config: ModelConfig, batch: int, steps: int, compiled: bool) -> dict[str, float]:
    torch.manual_seed(0)
    model = MultiScaleTransformer(config).train()
    T = config.max_seq_len
    step, flops = step_fn(model, batch, T, compiled)
    step()  # warm-up (and compilation)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    seconds = sorted(times)[len(times) // 2]  # median: robust to other processes on a shared machine
    return {
        "params": model.num_parameters(),
        "bytes_per_s": batch * T / seconds,
        "gflops": flops / seconds / 1e9,
        "ms": seconds * 1000,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="tiny,micro", help="comma-separated preset names")
    p.add_argument("--batch", type=int, default=8, help="windows per step (of max_seq_len bytes)")
    p.add_argument("--steps", type=int, default=5, help="timed steps per model (median reported)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd models")
    p.add_argument("--contexts", default="", help="comma-separated max_seq_len values (default: the preset's);"
                   " the batch shrinks so that every context trains the same bytes per step")  # fmt: skip
    p.add_argument("--window", type=int, default=0, help="attention_window for contexts longer than it")
    p.add_argument("--coarse-window", type=int, default=0, help="coarse_window for contexts longer than it")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    peak = matmul_peak_gflops()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; fp32 matmul peak {peak:.1f} GFLOP/s")
    header = f"{'model':<18}{'params':>12}{'ms/step':>10}{'bytes/s':>10}{'GFLOP/s':>9}{'% peak':>8}"
    print(header + f"{'vs flat':>10}")
    modes = [False, True] if args.compile else [False]
    for name in args.presets.split(","):
        contexts = [int(c) for c in args.contexts.split(",") if c] or [ModelConfig.from_name(name).max_seq_len]
        first: float | None = None
        for ctx in contexts:
            windows = {"attention_window": args.window if ctx > args.window else 0}
            windows["coarse_window"] = args.coarse_window if ctx > args.coarse_window else 0
            base = ModelConfig.from_name(name, max_seq_len=ctx, **windows)
            batch = max(1, args.batch * contexts[0] // ctx)
            for compiled in modes:
                tag = ("+compile" if compiled else "") + (f"@{ctx}" if args.contexts else "")
                ms = measure(base, batch, args.steps, compiled)
                flat = measure(base.flat(), batch, args.steps, compiled)
                for label, r, ratio in (
                    (name + tag, ms, ms["bytes_per_s"] / flat["bytes_per_s"]),
                    (f"{name}.flat{tag}", flat, 1.0),
                ):
                    print(
                        f"{label:<18}{r['params']:>12,}{r['ms']:>10.0f}{r['bytes_per_s']:>10.0f}{r['gflops']:>9.1f}"
                        f"{100 * r['gflops'] / peak:>7.0f}%{ratio:>9.2f}x"
                    )
                first = first or ms["bytes_per_s"]
                if len(contexts) > 1:
                    print(f"  context {ctx}: cost per byte {first / ms['bytes_per_s']:.2f}x the first context's")


if __name__ == "__main__":
    main()
