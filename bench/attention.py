"""Local (windowed) attention's layouts side by side: why a prefill reads bands of 64 queries as views.

For the shapes of the bundled model's longest calls (a continued prefill of 3,878 bytes: the fine
stack's window of 256 bytes, the 2x scale's 512 tokens; and a training sequence of 8,192 bytes), it
times model/attention.py `attend` with a Local window, interleaved, best of several passes:
- without autograd (prefill): bands as overlapping views in blocks of 64 queries (what runs), as
  views one block a window, and as the copies autograd's path makes (forward only);
- with autograd (training), forward and backward: the copies, one block a window (what runs).
Not a test; the ratios are what to read (this machine is noisy).

    python bench/attention.py [--threads 1] [--passes 15]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

from multiscale_transformer.model.attention import QUERY_BLOCK, Local, attend

HEADS, HEAD_DIM = 2, 48
# (what, queries, keys before them, window in tokens)
CALLS = [("fine stack, continued prefill", 3878, 255, 256), ("2x stack, continued prefill", 1939, 511, 512)]


def best(run: Callable[[], object], passes: int) -> float:
    run()
    times = []
    for _ in range(passes):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def prefill(what: str, n: int, before: int, window: int, gen: torch.Generator, passes: int) -> None:
    q = torch.randn(1, HEADS, n, HEAD_DIM, generator=gen)
    k, v = (torch.randn(1, HEADS, before + n, HEAD_DIM, generator=gen) for _ in range(2))
    small, whole = Local(window, 1, 1, before), Local(window, 1, 1, before, block=window)
    qg = q.clone().requires_grad_()
    with torch.no_grad():
        views = best(lambda: attend(q, k, v, small), passes)
        views_whole = best(lambda: attend(q, k, v, whole), passes)
    copies = best(lambda: attend(qg, k, v, whole), passes)  # autograd's layout, forward only
    print(f"{what} ({n} queries, window {window}): views in blocks of {QUERY_BLOCK} {views:.1f}, "
          f"views one block a window {views_whole:.1f} ({views_whole / views:.2f}x), "
          f"copies one block a window {copies:.1f} ({copies / views:.2f}x)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--passes", type=int, default=15)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    print(f"{args.threads} thread(s), best of {args.passes}, ms per call")
    for what, n, before, window in CALLS:
        prefill(what, n, before, window, gen, args.passes)
    n, window = 8192, 256
    q, k, v = (torch.randn(1, HEADS, n, HEAD_DIM, generator=gen, requires_grad=True) for _ in range(3))
    train = best(lambda: attend(q, k, v, Local(window, 1, 1)).sum().backward(), max(3, args.passes // 3))
    print(f"training, {n} bytes, window {window}, forward and backward (copies one block a window): {train:.1f}")


if __name__ == "__main__":
    main()
