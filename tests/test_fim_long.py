"""How an infilling shares a long context (generation/fim.py): prefix and suffix split 3:1 as llama.cpp's
server splits its batch, other files' chunks (input_extra) in a fixed share with the most recent kept,
and never more than the context leaves after the room to generate."""

from __future__ import annotations

import itertools
import random

import pytest

from multiscale_transformer.generation.fim import (
    SENTINEL_BYTES,
    Infill,
    extra_chunk,
    fit,
    infill_prompt,
    max_extra_bytes,
    truncated,
)
from multiscale_transformer.model.vocab import EOS_ID, FIM_MIDDLE_ID, FIM_PREFIX_ID, FIM_SUFFIX_ID


def code(n: int, seed: int = 0) -> bytes:
    """n bytes of Python-shaped lines, different for each seed."""
    lines = (f"    value_{seed}_{i} = compute({i}, {seed})\n".encode() for i in range(n))
    return b"".join(lines)[:n]


def sides(ids: list[int]) -> tuple[list[int], bytes, bytes]:
    """(the extra ids between the first EOS and <PRE>, the suffix kept, the prefix kept) of an SPM prompt."""
    pre = ids.index(FIM_PREFIX_ID)
    assert ids[0] == EOS_ID and ids[pre + 1] == FIM_SUFFIX_ID
    mid = ids.index(FIM_MIDDLE_ID)
    return ids[1:pre], bytes(ids[pre + 2 : mid]), bytes(ids[mid + 1 :])


def test_at_8k_a_multi_kb_prefix_and_suffix_are_both_kept() -> None:
    window, room = 8192, 128
    prefix, suffix = code(6000, 1), code(2000, 2)
    _, kept_suffix, kept_prefix = sides(infill_prompt(Infill(prefix, suffix), window, room))
    assert (kept_prefix, kept_suffix) == (prefix, suffix)  # both whole: 8,000 bytes of 8,192 read
    # A longer suffix takes what the prefix leaves (more than its quarter), cut from the right.
    _, kept_suffix, kept_prefix = sides(infill_prompt(Infill(prefix, code(5000, 2)), window, room))
    assert kept_prefix == prefix and len(kept_suffix) == window - room - SENTINEL_BYTES - len(prefix)


@pytest.mark.parametrize("start", [b"", b"x = "])
def test_long_sides_split_three_to_one_as_llama_cpp_splits_its_batch(start: bytes) -> None:
    window, room = 8192, 64
    infill = Infill(code(20_000, 1), code(20_000, 2), start)
    _, kept_prefix, kept_suffix = fit(infill, window, room)
    budget = window - room - SENTINEL_BYTES  # llama.cpp's n_batch: prefix, suffix and the middle's start
    # llama.cpp: n_prefix_take = 3 * (n_batch / 4), n_suffix_take = n_batch / 4 - (prompt); its 2 sentinel
    # tokens are counted in SENTINEL_BYTES here. Each cut then moves to the nearest line boundary inside.
    line = max(len(x) for x in infill.prefix.split(b"\n")) + 1
    assert budget // 4 - len(start) - line < len(kept_suffix) <= budget // 4 - len(start)
    assert budget - budget // 4 - line < len(kept_prefix) <= budget - budget // 4
    assert kept_suffix.endswith(b"\n") and infill.prefix[-len(kept_prefix) - 1 :].startswith(b"\n")
    assert infill.prefix.endswith(kept_prefix) and infill.suffix.startswith(kept_suffix)


def test_typing_at_the_end_of_a_long_prefix_seldom_moves_its_cut() -> None:
    """Each keystroke sends the prefix one byte longer; a cut that moved with it would make the server
    prefill the whole kept prefix again (prompt reuse finds only what comes before it). At a line start
    the cut moves once a line, so most requests find all but their new bytes in a row's cache."""
    text, suffix = code(12_000, 1), code(3000, 2)
    prompts = [infill_prompt(Infill(text[: 9000 + k], suffix), 8192, 64) for k in range(200)]
    moved = sum(new[: len(old) - 1] != old[:-1] for old, new in itertools.pairwise(prompts))
    assert moved <= 200 // 30  # lines of about 36 bytes here: a move every 36 keystrokes or so


def test_input_extra_is_packed_most_recent_first_in_its_share() -> None:
    window, room = 8192, 128
    chunks = tuple(extra_chunk(f"pkg/m{i}.py", code(1000, 10 + i).decode()) for i in range(16))
    infill = Infill(code(6000, 1), code(3000, 2), b"", chunks)
    ids = infill_prompt(infill, window, room)
    extra, kept_suffix, kept_prefix = sides(ids)
    assert len(ids) <= window - room and truncated(infill, ids)
    assert len(extra) <= max_extra_bytes(window) == 4096
    # Each chunk is read as a file of its own (EOS after each), the most recent whole, in their order.
    files = bytes(i for i in extra if i != EOS_ID).split(b"# pkg/")
    assert extra[-1] == EOS_ID and extra.count(EOS_ID) == 5
    assert [f.split(b"\n")[0] for f in files[1:]] == [b"m12.py", b"m13.py", b"m14.py", b"m15.py"]
    oldest = bytes(extra[: extra.index(EOS_ID)])  # what fits of m11.py: its end, from a line start
    assert oldest and chunks[11].endswith(oldest) and chunks[11][-len(oldest) - 1 : -len(oldest)] == b"\n"
    # The infilling has the rest of the context (but for its cuts' line boundaries), split as without other files.
    left = window - room - SENTINEL_BYTES - len(extra)
    assert left - 2 * (window // 64) <= len(kept_prefix) + len(kept_suffix) <= left
    assert infill.prefix.endswith(kept_prefix) and infill.suffix.startswith(kept_suffix)


def test_the_chunks_are_cut_the_same_whatever_the_prefix_or_the_room() -> None:
    """An editor sends one byte more on every keystroke, and llama.vim warms the cache with n_predict 0:
    the chunks' bytes must not move, or no request would find them in a row's cache."""
    chunks = tuple(extra_chunk(f"m{i}.py", code(900, i).decode()) for i in range(8))
    packed = {
        tuple(sides(infill_prompt(Infill(code(n, 1), code(s, 2), b"", chunks), 8192, room))[0])
        for n in (0, 10, 3000, 3001, 9000)
        for s in (0, 500, 5000)
        for room in (1, 64, 2048)
    }
    assert len(packed) == 1


def test_at_256_bytes_the_infilling_keeps_the_whole_context() -> None:
    assert max_extra_bytes(256) == 0 and max_extra_bytes(128) == 0 and max_extra_bytes(512) == 256
    infill = Infill(b"def f(x):\n    ", b"\n    return y\n")
    with_extra = Infill(infill.prefix, infill.suffix, b"", (extra_chunk("a.py", "X = 1\n"),))
    assert infill_prompt(with_extra, 256, 64) == infill_prompt(infill, 256, 64)
    assert truncated(with_extra, infill_prompt(with_extra, 256, 64)) and not truncated(
        infill, infill_prompt(infill, 256, 64)
    )
    # Where the chunks fit, they come first and nothing is cut.
    ids = infill_prompt(with_extra, 1024, 64)
    assert ids[: ids.index(FIM_PREFIX_ID)] == [EOS_ID, *b"# a.py\nX = 1\n", EOS_ID] and not truncated(with_extra, ids)


@pytest.mark.parametrize("seed", range(5))
def test_a_prompt_never_takes_the_room_to_generate(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(200):
        window = rng.choice([128, 256, 300, 1024, 2048, 8192])
        room = rng.randint(1, window // 4)
        start = code(rng.randint(0, 8), 3)
        chunks = tuple(code(rng.randint(0, 3000), 4 + i) for i in range(rng.randint(0, 5)))
        infill = Infill(code(rng.randint(0, 12_000), 1), code(rng.randint(0, 12_000), 2), start, chunks)
        ids = infill_prompt(infill, window, room)
        extra, kept_suffix, kept_prefix = sides(ids)
        assert len(ids) <= window - room
        assert len(extra) <= max_extra_bytes(window)
        assert kept_prefix.endswith(start) and infill.prefix.endswith(kept_prefix[: len(kept_prefix) - len(start)])
        assert infill.suffix.startswith(kept_suffix)
        budget = window - room - SENTINEL_BYTES - len(extra)
        # each side keeps its share, or all it has, but for the bytes its cut moved to a line boundary
        slack = window // 64
        assert len(kept_suffix) >= min(len(infill.suffix), budget // 4 - len(start)) - slack
        assert len(kept_prefix) - len(start) >= min(len(infill.prefix), budget - budget // 4) - slack
