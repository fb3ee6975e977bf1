"""Fill-in-the-middle at inference: one (prefix, suffix) path for the Python API, the CLI and the server.

A request names its prefix and suffix in one of the ways editors and their tools do (an explicit
`suffix`, Mistral's and llama.cpp's fields, or FIM marker text inside the prompt); every way ends
in `Infill`, and `infill_prompt` lays it out in one of training's two orders (training/fim.py), SPM:
`EOS <PRE> <SUF> suffix <MID> prefix`, after which the model writes the middle and then EOS. SPM
keeps the prefix right before the middle it continues; measured on the bundled model (100 hidden
lines and 100 blocks of the stdlib validation split, docs/editors.md), PSM made the middle cost
more bits than the prefix alone did, SPM fewer.
Both sides are cut to fit the context with room to generate: the prefix from the left, the
suffix from the right, each on a UTF-8 character boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from multiscale_transformer.errors import UserError
from multiscale_transformer.generation.decoder import LanguageModel
from multiscale_transformer.generation.generate import TextStream
from multiscale_transformer.model.vocab import EOS_ID, FIM_MIDDLE_ID, FIM_PREFIX_ID, FIM_SUFFIX_ID
from multiscale_transformer.text import text_bytes

if TYPE_CHECKING:
    from multiscale_transformer.generation.sampling import SamplingParams
    from multiscale_transformer.model.config import ModelConfig

# Marker text that editors' FIM templates write into a prompt, per model family:
# (prefix, suffix, middle, spaced). Code Llama's template puts one space after <PRE>, before <SUF>
# and before <MID> ("<PRE> {prefix} <SUF>{suffix} <MID>"): those spaces are template, not text.
MARKERS = (
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>", False),  # StarCoder: Continue's default template
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", False),  # Qwen2.5-Coder, CodeGemma
    ("<PRE>", "<SUF>", "<MID>", True),  # Code Llama
)
SENTINEL_BYTES = 4  # EOS and the three sentinels around prefix and suffix


@dataclass(frozen=True)
class Infill:
    """Text before the cursor, after it, and (llama.cpp's `prompt` of /infill) the middle's start."""

    prefix: bytes
    suffix: bytes
    start: bytes = b""


def check_fim(config: ModelConfig) -> None:
    """One clear refusal for a model that never saw the sentinels: its output would be prefix-only
    text passed off as infilling."""
    if not config.fim:
        raise UserError(
            'this model was not trained for fill-in-the-middle (its config.json has "fim": false), so it '
            "cannot complete between a prefix and a suffix; train one with `axl train --fim-rate 0.5`"
        )


def parse_markers(prompt: str) -> Infill | None:
    """The Infill that a client's FIM template in `prompt` describes; None for any other prompt.

    A prompt is a FIM template only in the shape clients send: it starts with one family's prefix
    marker, and that family's suffix and middle markers follow in that order (PSM, as Continue's,
    Qwen's and Code Llama's templates write it). The middle marker is its last occurrence and the
    suffix marker the last one before it, so a prefix (the user's code) may mention marker text.
    Anything else is plain text: an HTML `<PRE>`, source code that talks about FIM markers, a
    broken template. Text after the middle marker is the start of the middle.
    """
    for pre, suf, mid, spaced in MARKERS:
        if not prompt.startswith(pre):
            continue
        k = prompt.rfind(mid)
        j = prompt.rfind(suf, len(pre), k) if k > len(pre) else -1
        if j < 0:
            return None
        prefix, suffix, start = prompt[len(pre) : j], prompt[j + len(suf) : k], prompt[k + len(mid) :]
        if spaced:
            prefix = prefix.removeprefix(" ").removesuffix(" ")
            suffix = suffix.removesuffix(" ")
        return Infill(text_bytes(prefix), text_bytes(suffix), text_bytes(start))
    return None


def infill_prompt(infill: Infill, window: int, room: int) -> list[int]:
    """The prompt ids for `infill` in a context of `window` bytes, leaving `room` bytes to generate.

    The suffix keeps at least a quarter of the space when it is that long (the code right after
    the cursor matters most to what fits there); the prefix gets the rest.
    """
    prefix, suffix = fit(infill, window, room)
    return [EOS_ID, FIM_PREFIX_ID, FIM_SUFFIX_ID, *suffix, FIM_MIDDLE_ID, *prefix, *infill.start]


def fit(infill: Infill, window: int, room: int) -> tuple[bytes, bytes]:
    """The prefix (its end) and suffix (its start) that `infill_prompt` keeps, on character boundaries."""
    budget = window - room - SENTINEL_BYTES - len(infill.start)
    if budget < 2:
        raise UserError(f"the context ({window} bytes) leaves no room for a prefix and a suffix")
    keep_suffix = min(len(infill.suffix), max(budget // 4, budget - len(infill.prefix)))
    keep_prefix = min(len(infill.prefix), budget - keep_suffix)
    prefix = _whole_chars_from_left(infill.prefix[len(infill.prefix) - keep_prefix :])
    return prefix, _whole_chars_from_right(infill.suffix[:keep_suffix])


def max_infill_tokens(window: int) -> int:
    """The most bytes an infilling writes in a context of `window` bytes: a quarter of it, so that the
    prefix and suffix keep the rest (the playground and /props state it)."""
    return window // 4


class Plan(NamedTuple):
    """How to generate an infilling: every caller (CLI, server, evaluator) asks `plan` for one."""

    ids: list[int]  # the prompt, laid out as the model was trained
    max_tokens: int  # at most `max_infill_tokens`, and no further than the context ends
    stop: tuple[bytes, ...]  # the caller's stop sequences, then the editor's (`editor_stops`)


def plan(config: ModelConfig, infill: Infill, max_tokens: int, stop: Sequence[bytes] = ()) -> Plan:
    """The Plan of an infilling: the room to generate is at most `max_infill_tokens`, generation stops
    where the context ends (sliding past it would drop the sentinels) and where an editor's server
    would end it."""
    check_fim(config)
    window = config.max_seq_len
    ids = infill_prompt(infill, window, max(1, min(max_tokens, max_infill_tokens(window))))
    stops = (*stop, *(s for s in editor_stops(infill) if s not in stop))
    return Plan(ids, min(max_tokens, window - len(ids)), stops)


def truncated(infill: Infill, ids: list[int]) -> bool:
    """Whether `infill_prompt` had to cut the prefix or the suffix to fit (ids: its prompt)."""
    kept = len(ids) - SENTINEL_BYTES - len(infill.start)
    return kept < len(infill.prefix) + len(infill.suffix)


def editor_stops(infill: Infill) -> tuple[bytes, ...]:
    """Where an infilling ends besides EOS, as editor servers end one (stop sequences for CompletionOptions).

    Single-line mode: when the cursor's line has text after the cursor, the middle is the rest of one
    line, so it ends at the newline. And the suffix's first line with text, after a newline: a model
    that writes the code that already follows the cursor has finished the middle (the suffix line
    needs 3 bytes of text, so that a lone `)` or `]` does not end every completion that closes one).
    """
    first, _, rest = infill.suffix.partition(b"\n")
    if first.strip():
        return (b"\n",)
    line = next((line for line in rest.split(b"\n") if line.strip()), b"")
    return (b"\n" + line.rstrip(),) if len(line.strip()) >= 3 else ()


def infill(
    model: LanguageModel,
    prefix: str,
    suffix: str,
    max_new_tokens: int,
    params: SamplingParams,
    stop: list[bytes] | None = None,
    seed: int | None = None,
) -> str:
    """The model's middle between `prefix` and `suffix` (what the server's FIM endpoints return)."""
    wanted = Infill(text_bytes(prefix), text_bytes(suffix))
    p = plan(model.config, wanted, max_new_tokens, stop or ())
    out = b"".join(TextStream(model, p.ids, p.max_tokens, params, list(p.stop), seed))
    return out.decode("utf-8", "replace")


def _whole_chars_from_left(data: bytes) -> bytes:
    """data without the continuation bytes a cut left at its start."""
    i = 0
    while i < len(data) and 0x80 <= data[i] < 0xC0:
        i += 1
    return data[i:]


def _whole_chars_from_right(data: bytes) -> bytes:
    """data without a character the cut left incomplete at its end."""
    for back in range(1, min(4, len(data)) + 1):
        b = data[-back]
        if b < 0x80:
            return data  # ASCII: complete
        if b >= 0xC0:  # a lead byte: complete when its sequence fits
            need = 2 if b < 0xE0 else 3 if b < 0xF0 else 4
            return data if back >= need else data[:-back]
    return data
