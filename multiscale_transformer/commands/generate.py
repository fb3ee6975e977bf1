"""`axl generate`: complete a prompt and print the bytes as they are produced."""

from __future__ import annotations

import argparse
import codecs
import sys

from multiscale_transformer.commands.common import (
    DECODE_THREADS,
    add_model_arguments,
    add_threads_argument,
    load_model_from_args,
    non_negative_float,
    non_negative_int,
    set_threads,
)
from multiscale_transformer.errors import UserError


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("prompt", help="the text to complete, e.g. 'def fibonacci(n):'")
    p.add_argument("--max-new-tokens", type=non_negative_int, default=256, help="bytes to generate (default 256)")
    p.add_argument("--temperature", type=non_negative_float, default=0.8, help="0 = greedy (default 0.8)")
    p.add_argument("--top-k", type=non_negative_int, default=40, help="0 = off (default 40)")
    p.add_argument("--top-p", type=non_negative_float, default=0.9, help="nucleus mass (default 0.9)")
    p.add_argument("--repetition-penalty", type=non_negative_float, default=1.1, help="default 1.1; 1 = off")
    p.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
    p.add_argument("--stop", action="append", default=[], help="stop sequence (repeatable)")
    p.add_argument("--no-echo", action="store_true", help="print only the completion, not the prompt")
    add_threads_argument(p, default="1, the fastest for decoding on a small CPU; see README")


def run(args: argparse.Namespace) -> int:
    from multiscale_transformer.generation.generate import TextStream
    from multiscale_transformer.generation.sampling import SamplingParams
    from multiscale_transformer.training.tokenizer import ByteTokenizer

    if not args.prompt:
        raise UserError("the prompt is empty: give at least one character")
    set_threads(args.threads or DECODE_THREADS)
    prompt_ids = ByteTokenizer().encode(args.prompt)
    params = SamplingParams(args.temperature, args.top_k, args.top_p, args.repetition_penalty)
    model = load_model_from_args(args)
    stops = [s.encode("utf-8", "surrogateescape") for s in args.stop]
    completion = TextStream(model, prompt_ids, args.max_new_tokens, params, stops, args.seed)
    out = sys.stdout
    if not args.no_echo:
        out.write(args.prompt)
        out.flush()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for chunk in completion:
        out.write(decoder.decode(chunk))
        out.flush()
    out.write(decoder.decode(b"", final=True) + "\n")
    out.flush()
    return 0
