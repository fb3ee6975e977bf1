"""Fill-in-the-middle at inference: one (prefix, suffix) path for the Python API, the CLI and the server.

A request names its prefix and suffix in one of the ways editors and their tools do (an explicit
`suffix`, Mistral's and llama.cpp's fields, or FIM marker text inside the prompt); every way ends
in `Infill`, and `infill_prompt` lays it out in one of training's two orders (training/fim.py), SPM:
`EOS <PRE> <SUF> suffix <MID> prefix`, after which the model writes the middle and then EOS. SPM
keeps the prefix right before the middle it continues; measured on the bundled model (100 hidden
lines and 100 blocks of the stdlib validation split, docs/editors.md), PSM made the middle cost
more bits than the prefix alone did, SPM fewer.
Both sides are cut to fit the context with room to generate: the prefix from the left, the
suffix from the right, each at a line boundary when one is near (so that typing seldom moves a
cut: prompt reuse), else on a UTF-8 character boundary. Chunks of other files (llama.cpp's
`input_extra`) come first, each read as a file of its own: `EOS chunk EOS chunk EOS <PRE> ...`.

How the context is shared follows llama.cpp's server (`format_infill`, tools/server): it gives
prefix + suffix a fixed budget (n_batch: 3/4 of it to the prefix, 1/4 less the middle's start to
the suffix) and the other files the rest of the context but twice n_predict, keeping their most
recent tokens. A byte model has no n_batch, so here the infilling's budget is whatever the context
leaves after the other files and the room to generate, split 3:1 the same way (a side shorter than
its share leaves the rest to the other, so the whole context is used), and the other files get at
most a fixed share of the context (`max_extra_bytes`): fixed, so that their cut moves neither with
the prefix's length (an editor sends one more byte per keystroke) nor with n_predict (llama.vim's
warm-up asks for 0), and the next request finds them in a row's cache (llama.cpp's cache_prompt).
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
# The infilling keeps at least this much of the context (or half of it, when that is more) for its
# prefix, suffix and room to generate before other files get any: at 256 bytes, about eight lines of
# Python, the code around the cursor predicts the middle better than any other file can.
INFILL_FLOOR = 256


@dataclass(frozen=True)
class Infill:
    """Text before the cursor, after it, and (llama.cpp's `prompt` of /infill) the middle's start."""

    prefix: bytes
    suffix: bytes
    start: bytes = b""
    extra: tuple[bytes, ...] = ()  # other files' chunks (`extra_chunk`), oldest first


def extra_chunk(filename: str, text: str) -> bytes:
    """One chunk of another file as the model reads it. llama.cpp writes `<FIM_SEP>filename\\n text` for
    a model with a file separator token; ours is the EOS that ends every file in training (`pack_extra`
    writes it), and the name becomes a comment line, which is still Python."""
    return text_bytes(f"# {filename}\n{text}" if filename else text)


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


class Fitted(NamedTuple):
    """What `fit` keeps of an Infill."""

    extra: list[int]  # the other files' chunks that fit, each followed by EOS (`pack_extra`)
    prefix: bytes  # the end of the prefix
    suffix: bytes  # the start of the suffix


def infill_prompt(infill: Infill, window: int, room: int) -> list[int]:
    """The prompt ids for `infill` in a context of `window` bytes, leaving `room` bytes to generate."""
    extra, prefix, suffix = fit(infill, window, room)
    return [EOS_ID, *extra, FIM_PREFIX_ID, FIM_SUFFIX_ID, *suffix, FIM_MIDDLE_ID, *prefix, *infill.start]


def fit(infill: Infill, window: int, room: int) -> Fitted:
    """What `infill_prompt` keeps (see the module docstring for the rule): the other files' most
    recent bytes, up to `max_extra_bytes`; then of the budget left, 3/4 for the prefix's end and 1/4,
    less the middle's start, for the suffix's start, a side shorter than its share leaving the rest to
    the other; each cut on a line boundary near it, else on a character boundary."""
    sides = window - room - SENTINEL_BYTES - len(infill.start)  # bytes for extra, prefix and suffix
    extra = pack_extra(infill.extra, min(max_extra_bytes(window), max(0, sides - 2)))
    sides -= len(extra)
    if sides < 2:
        raise UserError(f"the context ({window} bytes) leaves no room for a prefix and a suffix")
    budget = sides + len(infill.start)  # llama.cpp's n_batch: prefix, suffix and the middle's start
    suffix_share = max(0, budget // 4 - len(infill.start))
    keep_suffix = min(len(infill.suffix), max(suffix_share, sides - len(infill.prefix)))
    keep_prefix = min(len(infill.prefix), sides - keep_suffix)
    slack = window // 64  # up to 128 bytes at 8,192 (a line or three), 4 at 256
    prefix = _keep_end(infill.prefix, keep_prefix, slack)
    return Fitted(extra, prefix, _keep_start(infill.suffix, keep_suffix, slack))


def pack_extra(chunks: Sequence[bytes], budget: int) -> list[int]:
    """The chunks, each followed by EOS, in at most `budget` ids: the most recent (last) kept, as
    llama.cpp keeps the last tokens of its extra context. The oldest chunk that fits only in part
    keeps its end from a line start (a byte model would read a cut line as code of its own)."""
    kept: list[list[int]] = []
    left = budget
    for chunk in reversed(chunks):
        if len(chunk) + 1 <= left:
            kept.append([*chunk, EOS_ID])
            left -= len(chunk) + 1
            continue
        tail = _keep_end(chunk, left - 1, len(chunk)) if left > 1 else b""
        if tail:
            kept.append([*tail, EOS_ID])
        break
    return [i for chunk in reversed(kept) for i in chunk]


def max_extra_bytes(window: int) -> int:
    """The most bytes other files' chunks take of a context of `window` bytes: what is left once the
    infilling keeps half of it, and at least INFILL_FLOOR (none at 256 bytes, 4,096 at 8,192). Fixed
    per model, so that the chunks are cut the same way by every request (cache reuse)."""
    return window - max(window // 2, min(window, INFILL_FLOOR))


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
    """Whether `infill_prompt` had to cut the prefix, the suffix or the other files to fit (ids: its prompt)."""
    kept = len(ids) - SENTINEL_BYTES - len(infill.start)
    extra = sum(len(chunk) + 1 for chunk in infill.extra)  # each chunk and its EOS
    return kept < len(infill.prefix) + len(infill.suffix) + extra


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
    stream = TextStream(model, p.ids, p.max_tokens, params, list(p.stop), seed, stop_repeated_lines=True)
    out = b"".join(stream)
    return out.decode("utf-8", "replace")


def _whole_chars_from_left(data: bytes) -> bytes:
    """data without the continuation bytes a cut left at its start."""
    i = 0
    while i < len(data) and 0x80 <= data[i] < 0xC0:
        i += 1
    return data[i:]


def _keep_end(data: bytes, keep: int, slack: int) -> bytes:
    """At most the last `keep` bytes of data: from a line start when one lies within `slack` bytes after
    the cut, else from the first whole character. A cut at a line start stays put while the user
    types at the end of a long prefix (one byte more per request), so the next request finds the
    whole prompt but its new bytes in a row's cache; a cut that moved with every byte would make it
    prefill the whole kept prefix again."""
    cut = len(data) - keep
    if cut <= 0 or data[cut - 1 : cut] == b"\n":
        return data[max(0, cut) :]
    newline = data.find(b"\n", cut, cut + slack)
    return data[newline + 1 :] if newline >= 0 else _whole_chars_from_left(data[cut:])


def _keep_start(data: bytes, keep: int, slack: int) -> bytes:
    """At most the first `keep` bytes of data: through a line's end when one lies within `slack` bytes
    before the cut, else up to the last whole character (the suffix's cut, as `_keep_end`'s)."""
    if keep >= len(data):
        return data
    newline = data.rfind(b"\n", max(0, keep - slack), keep)
    return data[: newline + 1] if newline >= 0 else _whole_chars_from_right(data[:keep])


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
