"""One-row matmul bandwidth for the two weight layouts: why decoding multiplies by packed (in, out) copies.

For each shape a decoder multiplies one row by, it streams ~48 MB of distinct weights (more than
the L3 cache, as decoding micro does) once in PyTorch's nn.Linear layout (out, in) with F.linear,
and once stored input-major (in, out) with x @ W, interleaved, best of several passes. Not a test.

    python bench/matvec_layout.py
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch
import torch.nn.functional as F

SHAPES = [(256, 256), (768, 256), (1376, 256), (256, 688), (1376, 512), (512, 1376)]  # (out, in)


def seconds(x: torch.Tensor, weights: list[torch.Tensor], input_major: bool) -> float:
    start = time.perf_counter()
    for w in weights:
        if input_major:
            x @ w
        else:
            F.linear(x, w)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--passes", type=int, default=15)
    parser.add_argument("--megabytes", type=float, default=48.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}; GB/s streamed by one-row products, best of {args.passes} interleaved passes")
    print(f"  {'(out, in)':<14}{'F.linear (out, in)':>20}{'x @ W (in, out)':>18}{'ratio':>8}")
    for out_features, in_features in SHAPES:
        count = max(1, int(args.megabytes * 1e6 / 4 / (out_features * in_features)))
        rows = [torch.randn(out_features, in_features) for _ in range(count)]
        cols = [w.t().contiguous() for w in rows]
        x = torch.randn(1, 1, in_features)
        best_rows = best_cols = float("inf")
        for _ in range(args.passes):
            best_rows = min(best_rows, seconds(x, rows, input_major=False))
            best_cols = min(best_cols, seconds(x, cols, input_major=True))
        gb = count * out_features * in_features * 4 / 1e9
        shape = f"({out_features}, {in_features})"
        print(f"  {shape:<14}{gb / best_rows:>20.1f}{gb / best_cols:>18.1f}{best_rows / best_cols:>7.2f}x")


if __name__ == "__main__":
    main()
