"""Where an infilling ends besides EOS: llama.cpp's n_indent and t_max_predict_ms and a repeated line
(generation/row.py), single-line mode and the start of the suffix (generation/fim.py `editor_stops`), and
whether the prompt had to be cut."""

from __future__ import annotations

import pytest

from multiscale_transformer.generation.fim import Infill, editor_stops, infill_prompt, truncated
from multiscale_transformer.generation.row import (
    CompletionOptions,
    RowState,
    dedent,
    open_line,
    open_repeat,
    repeated_line,
)


def feed(text: bytes, **options: object) -> tuple[bytes, list[bytes], RowState]:
    """Accept `text` byte by byte: (all text released, what each byte released, the final state)."""
    state = RowState([1], CompletionOptions(max_tokens=len(text) + 10, **options), None, 258)  # type: ignore[arg-type]
    pieces = []
    for b in text:
        accepted = state.accept(b)
        pieces.append(accepted.text)
        if accepted.finish_reason is not None:
            break
    return b"".join(pieces), pieces, state


def test_a_dedented_line_ends_the_completion_before_it() -> None:
    out, pieces, state = feed(b"x = 1\n        y = 2\n    z = 3\nw", min_indent=8)
    assert out == b"x = 1\n        y = 2"
    assert (state.finish_reason, state.stopped_by) == ("stop", "indent")
    assert b"z" not in b"".join(pieces)  # the dedented line's text was never released


def test_the_cursor_line_and_blank_lines_are_not_judged() -> None:
    out, _, state = feed(b"x\n\n        y\n", min_indent=8)  # first line unindented, then a blank line
    assert state.finish_reason is None and out == b"x\n\n        y"  # the last newline waits for its line
    assert dedent(bytearray(b"x"), 4) is None and dedent(bytearray(b"x\n  \t"), 4) is None
    assert dedent(bytearray(b"x\n  y"), 4) == 1 and dedent(bytearray(b"x\n    y"), 4) is None
    assert open_line(bytearray(b"a\n   ")) == 4 and open_line(bytearray(b"a\n  b")) == 0


def test_without_n_indent_nothing_is_held_or_cut() -> None:
    out, pieces, state = feed(b"x\ny\n")
    assert out == b"x\ny\n" and pieces == [b"x", b"\n", b"y", b"\n"] and state.finish_reason is None


def test_past_the_time_budget_the_completion_ends_at_the_next_newline() -> None:
    out, _, state = feed(b"a = 1\nb = 2\n", max_predict_s=0.0)
    assert out == b"a = 1" and (state.finish_reason, state.stopped_by) == ("length", "time")
    out, _, state = feed(b"a = 1\nb = 2\n", max_predict_s=60.0)
    assert out == b"a = 1\nb = 2\n" and state.finish_reason is None


@pytest.mark.parametrize(
    ("suffix", "stops"),
    [
        (b")\n    return y\n", (b"\n",)),  # text after the cursor on its line: single-line mode
        (b"\n    return y\n", (b"\n    return y",)),  # the next line with text
        (b"\n\n\ndef g():\n", (b"\ndef g():",)),  # blank lines skipped
        (b"   \n\tpass  \n", (b"\n\tpass",)),  # only blanks after the cursor: not single-line
        (b"\n)\n", ()),  # a lone bracket would end every completion that closes one
        (b"", ()),
    ],
)
def test_editor_stops(suffix: bytes, stops: tuple[bytes, ...]) -> None:
    assert editor_stops(Infill(b"def f(x):\n    ", suffix)) == stops


def test_a_completion_that_reaches_the_suffix_stops_there() -> None:
    stops = editor_stops(Infill(b"def f(x):\n    ", b"\n    return y\n"))
    out, _, state = feed(b"y = x * 2\n    return y\n", stop=stops)
    assert out == b"y = x * 2" and state.stopped_by == "word"


def test_truncated_says_whether_the_prompt_kept_everything() -> None:
    short = Infill(b"ab", b"cd")
    assert not truncated(short, infill_prompt(short, window=128, room=32))
    long = Infill(b"x" * 300, b"cd", b"s")
    assert truncated(long, infill_prompt(long, window=128, room=32))
    assert truncated(Infill(b"ab", b"y" * 300), infill_prompt(Infill(b"ab", b"y" * 300), window=128, room=32))


def test_negative_n_indent_is_refused() -> None:
    with pytest.raises(Exception, match="n_indent"):
        CompletionOptions(max_tokens=1, min_indent=-1)


def test_a_line_that_repeats_the_one_before_ends_the_completion_before_it() -> None:
    """Continue's stopAtRepeatingLines, as a server can apply it: a model that loops ends after the first
    copy, and the copy's bytes are never released (a line that only starts like the one before is)."""
    loop = b'"iterator",\n    "iterator",\n    "iterator",\n    "iterator",\n'
    out, pieces, state = feed(loop, stop_repeated_lines=True)
    assert out == b'"iterator",\n    "iterator",' and (state.finish_reason, state.stopped_by) == ("stop", "repeat")
    assert b"".join(pieces).count(b"iterator") == 2
    out, _, state = feed(b"    x = 1\n    x = 2\n    x = 1\n", stop_repeated_lines=True)  # starts alike, differs
    assert out == b"    x = 1\n    x = 2\n    x = 1" and state.finish_reason is None  # last newline waits
    out, _, state = feed(b"a\n\n\n\nb\n", stop_repeated_lines=True)  # blank lines are not a loop
    assert out == b"a\n\n\n\nb" and state.finish_reason is None
    assert feed(loop)[0] == loop  # off unless asked for (every infilling asks: serving/request.py)
    assert repeated_line(bytearray(b"x\ny\ny\n")) == 3 and repeated_line(bytearray(b"y\ny")) is None
    assert open_repeat(bytearray(b"ab\na")) == 2 and open_repeat(bytearray(b"ab\nac")) == 0
