"""Decode N greedy bytes of MODEL after a 48-byte prompt, for counting the work of a decoding step.

Wall-clock rates on these shared machines swing by 1.5x between identical runs; instruction counts do
not. Run under cachegrind for N = 16 and N = 208 and divide the difference by 192: the instructions
of one KV-cached decoded byte, free of loading and prefill (a 256-byte window does not slide before
byte 208). PYTHONHASHSEED=0 keeps the runs' fixed part alike (±0.1 M per byte otherwise).

    PYTHONHASHSEED=0 valgrind --tool=cachegrind --cache-sim=no python bench/decode_work.py MODEL 16
    PYTHONHASHSEED=0 valgrind --tool=cachegrind --cache-sim=no python bench/decode_work.py MODEL 208
"""

from __future__ import annotations

import argparse

import torch
from generate import GREEDY, prompt_for  # bench/generate.py, beside this script

from multiscale_transformer.generation.generate import new_decoder, stream
from multiscale_transformer.model.model import MultiScaleTransformer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model directory")
    parser.add_argument("n", type=int, help="bytes to decode")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = MultiScaleTransformer.from_pretrained(args.model).eval()
    prompt = prompt_for(model.config.max_seq_len, 208)  # 48 bytes in a 256-byte window
    list(stream(model, [prompt], args.n, GREEDY, decoder=new_decoder(model, 1, cached=True)))


if __name__ == "__main__":
    main()
