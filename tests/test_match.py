"""The repository match model (evaluation/match.py): what it predicts, that it reads only earlier bytes, and
that mixing it in follows the leader on earlier bytes only."""

from __future__ import annotations

import math

import numpy as np

from multiscale_transformer.evaluation.match import MIN_MATCH, WEIGHTS, find_matches, mix


def test_it_predicts_what_followed_the_last_earlier_occurrence() -> None:
    first, second = b"def alpha(x):\n    return x\n", b"y = 1\ndef alpha(x):\n    return y\n"
    matches = find_matches([first, second])
    assert (matches[0].predicted == -1).all()  # nothing came before the first file's repeats
    start = second.index(b"alpha") + MIN_MATCH - 4  # "def a": MIN_MATCH bytes of a line seen before
    predicted = matches[1].predicted
    assert bytes(predicted[start : start + 4].astype(np.uint8)) == second[start : start + 4]
    wrong = second.index(b"return ") + len(b"return ")
    assert predicted[wrong] == ord("x") and second[wrong] == ord("y")  # what followed before, not now
    assert predicted[wrong + 1] == -1  # a wrong guess ends the match
    assert list(matches[1].length[start : start + 3]) == [MIN_MATCH, MIN_MATCH + 1, MIN_MATCH + 2]


def test_it_reads_no_byte_at_or_after_the_one_it_predicts() -> None:
    files = [b"abcdefgh abcdefgh abcdefgh\n", b"abcdefgh abcdefgh\n"]
    base = find_matches(files)
    for t in range(len(files[1])):
        changed = [files[0], files[1][:t] + b"#" + files[1][t + 1 :]]
        after = find_matches(changed)
        assert np.array_equal(after[0].predicted, base[0].predicted)
        assert np.array_equal(after[1].predicted[: t + 1], base[1].predicted[: t + 1])


def test_mixing_starts_from_the_network_and_follows_the_weight_that_was_best_before() -> None:
    data = b"abcdefgh" * 40
    matches = find_matches([data])
    nats = [np.full(len(data), math.log(256.0))]  # a network that knows nothing: 8 bits a byte
    mixed = mix(nats, [data], matches)[0]
    first = int(np.flatnonzero(matches[0].predicted >= 0)[0])
    assert mixed[first] == nats[0][first]  # no earlier byte of its length: weight 0, the network alone
    assert mixed[-1] < 0.05 and mixed.sum() < nats[0].sum() / 5  # an always-right match takes over
    never = mix(nats, [data], [type(matches[0])(np.where(matches[0].predicted >= 0, 0, -1), matches[0].length)])
    assert np.allclose(never[0], nats[0], atol=math.log(1 / (1 - WEIGHTS[1])) + 1e-9)  # an always-wrong one: ~none


def test_a_mixed_bit_depends_on_no_later_byte_or_bit() -> None:
    data = b"abcdefgh abcdefgh abcxefgh abcdefgh\n" * 3
    matches = find_matches([data])
    rng = np.random.default_rng(0)
    nats = rng.uniform(0.1, 6.0, len(data))
    base = mix([nats], [data], matches)[0]
    for t in (20, 47, 80):
        later = nats.copy()
        later[t:] = rng.uniform(0.1, 6.0, len(data) - t)
        changed = data[:t] + bytes(reversed(data[t:]))
        again = mix([later], [changed], find_matches([changed]))[0]
        assert np.array_equal(again[:t], base[:t]) and not np.array_equal(again[t:], base[t:])
