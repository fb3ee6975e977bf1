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
    penalty,
    set_threads,
)
from multiscale_transformer.errors import UserError
from multiscale_transformer.model.config import GENERATION_DEFAULTS
from multiscale_transformer.model.vocab import EOS_ID
from multiscale_transformer.text import text_bytes


def logit_bias(text: str) -> tuple[int, float]:
    """ID=BIAS, as the server's logit_bias {"ID": BIAS}; the ranges are CompletionOptions' to check."""
    token, sep, value = text.partition("=")
    try:
        if sep:
            return int(token), float(value)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"expected ID=BIAS, e.g. {EOS_ID}=-100, got {text!r}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_arguments(p)
    p.add_argument("prompt", help="the text to complete, e.g. 'def fibonacci(n):'")
    d = GENERATION_DEFAULTS
    p.add_argument("--max-new-tokens", type=non_negative_int, default=d["max_new_tokens"], help="bytes to generate")
    p.add_argument("--temperature", type=non_negative_float, default=d["temperature"], help="0 = greedy")
    p.add_argument("--top-k", type=non_negative_int, default=d["top_k"], help="0 = off")
    p.add_argument("--top-p", type=non_negative_float, default=d["top_p"], help="nucleus mass")
    p.add_argument("--repetition-penalty", type=non_negative_float, default=d["repetition_penalty"], help="1 = off")
    p.add_argument("--frequency-penalty", type=penalty, default=0.0, help="OpenAI's, in [-2, 2] (default 0)")
    p.add_argument("--presence-penalty", type=penalty, default=0.0, help="OpenAI's, in [-2, 2] (default 0)")
    p.add_argument(
        "--logit-bias",
        type=logit_bias,
        action="append",
        default=[],
        metavar="ID=BIAS",
        help=f"add BIAS (-100..100) to byte id ID's logit, e.g. {EOS_ID}=-100 never ends (repeatable)",
    )
    p.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
    p.add_argument("--stop", action="append", default=[], help="stop sequence (repeatable)")
    p.add_argument(
        "--suffix",
        help="text after the cursor: fill in the middle between the prompt and it (a FIM-trained model)",
    )
    p.add_argument("--no-echo", action="store_true", help="print only the completion, not the prompt")
    add_threads_argument(p, default="1, the fastest for decoding on a small CPU; see README")


def run(args: argparse.Namespace) -> int:
    from multiscale_transformer.generation.generate import TextStream
    from multiscale_transformer.generation.sampling import SamplingParams
    from multiscale_transformer.model.vocab import ByteTokenizer

    if not args.prompt:
        raise UserError("the prompt is empty: give at least one character")
    set_threads(args.threads or DECODE_THREADS)
    prompt_ids = ByteTokenizer().encode(args.prompt)
    params = SamplingParams(args.temperature, args.top_k, args.top_p, args.repetition_penalty)
    model = load_model_from_args(args)
    max_new_tokens = args.max_new_tokens
    if args.suffix:  # the server's infilling path: the same prompt layout and length limits
        from multiscale_transformer.generation import fim

        infill = fim.Infill(text_bytes(args.prompt), text_bytes(args.suffix))
        plan = fim.plan(model.config, infill, max_new_tokens, [text_bytes(s) for s in args.stop])
        prompt_ids, max_new_tokens, stops = plan.ids, plan.max_tokens, list(plan.stop)
    else:
        stops = [text_bytes(s) for s in args.stop]
    completion = TextStream(
        model,
        prompt_ids,
        max_new_tokens,
        params,
        stops,
        args.seed,
        frequency_penalty=args.frequency_penalty,
        presence_penalty=args.presence_penalty,
        logit_bias=dict(args.logit_bias),
        stop_repeated_lines=bool(args.suffix),  # as the server ends an infilling
    )
    out = sys.stdout
    if not args.no_echo:
        out.write(args.prompt)
        out.flush()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for chunk in completion:
        out.write(decoder.decode(chunk))
        out.flush()
    out.write(decoder.decode(b"", final=True))
    if args.suffix and not args.no_echo:
        out.write(args.suffix)
    out.write("\n")
    out.flush()
    return 0
