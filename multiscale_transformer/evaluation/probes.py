"""Generation probe: complete fixed Python function headers and check that the result parses.

A completion ends where the function does: at the first non-blank line that starts in column 0 (the
body dedented back to the header's level) or at EOS; that line is not part of the function. A function
"parses" when header + body is accepted by `ast.parse`. A completion that reaches the byte limit
before the function ends is parsed as it stands (usually cut mid-statement, so it fails) and counted
as unfinished. Each header is the start of a file (prompt `EOS header`, as the evaluator scores file
starts). All prompts run as one batch through the shared generation iterator (`stream`).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

import torch

from multiscale_transformer.generation.generate import decode
from multiscale_transformer.generation.row import CompletionOptions
from multiscale_transformer.generation.sampling import SamplingParams
from multiscale_transformer.model.config import GENERATION_DEFAULTS
from multiscale_transformer.model.model import MultiScaleTransformer
from multiscale_transformer.model.vocab import EOS_ID

HEADERS: tuple[str, ...] = (
    "def add(a, b):\n",
    "def fibonacci(n):\n",
    "def is_prime(n):\n",
    "def reverse_string(s):\n",
    "def factorial(n):\n",
    "def read_lines(path):\n",
    "def flatten(items):\n",
    "def count_words(text):\n",
    "def clamp(value, low, high):\n",
    "def merge_dicts(a, b):\n",
    "def _check_name(name):\n",
    "def __repr__(self):\n",
)

MODES: dict[str, SamplingParams] = {
    "greedy": SamplingParams(temperature=0.0, top_k=None, top_p=None, repetition_penalty=1.0),
    "sampled": SamplingParams(),  # the published defaults (model/io.py GENERATION_DEFAULTS)
}


@dataclass(frozen=True)
class Completion:
    header: str
    body: bytes
    finished: bool  # the function ended (dedent or EOS) within the byte limit

    @property
    def parses(self) -> bool:
        return function_parses(self.header, self.body)


@dataclass(frozen=True)
class ProbeResult:
    mode: str
    completions: list[Completion]

    @property
    def parse_rate(self) -> float:
        return sum(c.parses for c in self.completions) / len(self.completions)

    @property
    def finished_rate(self) -> float:
        return sum(c.finished for c in self.completions) / len(self.completions)

    @property
    def mean_length(self) -> float:
        """Mean bytes of function body generated (up to the function's end or the limit)."""
        return sum(len(c.body) for c in self.completions) / len(self.completions)

    def to_json(self) -> dict[str, object]:
        return {
            "parse_rate": self.parse_rate,
            "finished_rate": self.finished_rate,
            "mean_completion_bytes": self.mean_length,
            "completions": [
                {"header": c.header, "body": c.body.decode("utf-8", "replace"), "parses": c.parses}
                for c in self.completions
            ],
        }


def function_parses(header: str, body: bytes) -> bool:
    try:
        ast.parse(header + body.decode("utf-8"))
    except (SyntaxError, ValueError, UnicodeDecodeError):  # ValueError: null bytes in the source
        return False
    return True


def function_end(text: bytes | bytearray) -> int | None:
    """Length of the function body in `text` (generated after a header ending in a newline), or None
    while it may still continue: it ends before the first non-blank line that starts in column 0."""
    for p in range(len(text)):
        if (p == 0 or text[p - 1] == ord("\n")) and text[p] not in b" \t\r\n":
            return p
    return None


def run_probe(
    model: MultiScaleTransformer,
    mode: str,
    max_new_tokens: int = GENERATION_DEFAULTS["max_new_tokens"],
    seed: int = 0,
    headers: tuple[str, ...] = HEADERS,
) -> ProbeResult:
    # Each header is read as the start of a file (after EOS, as training saw file starts, see
    # `with_file_start`): a small model has never seen a window that opens exactly on "def".
    prompts = [list(h.encode("utf-8")) for h in headers]
    options = CompletionOptions(max_new_tokens, MODES[mode])
    generator = torch.Generator().manual_seed(seed)
    done: list[bool] = [False] * len(headers)
    outs: list[bytes] = [b""] * len(headers)
    for steps in decode(model, prompts, [options] * len(headers), [generator] * len(headers)):
        for step in steps:
            end = function_end(step.state.out)
            if end is not None:  # the body ended: the probe's own stop rule
                step.state.end("stop")
            done[step.row] = end is not None or step.token == EOS_ID
            outs[step.row] = bytes(step.state.out[:end])
    completions = [Completion(h, out, d) for h, out, d in zip(headers, outs, done, strict=True)]
    return ProbeResult(mode, completions)
