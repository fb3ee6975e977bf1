"""The KV-cached decoder must equal the full forward pass: logits within 1e-5, greedy bytes identical."""

import pytest
import torch

from multiscale_transformer.generation.cached import CachedDecoder
from multiscale_transformer.generation.decoder import FullDecoder, keep_after_overflow
from multiscale_transformer.generation.generate import stream
from multiscale_transformer.generation.sampling import SamplingParams
from multiscale_transformer.model import attention
from multiscale_transformer.model.config import PRESETS

from .conftest import FEATURES, OPTIONS, make_model

GREEDY = SamplingParams(0.0, None, None, 1.0)


def assert_decoders_agree(model, prompt: list[int], continuation: list[int], row: int = 0, batch: int = 1) -> None:
    cached, full = CachedDecoder(model, batch), FullDecoder(model, batch)
    torch.testing.assert_close(cached.prefill_row(row, prompt), full.prefill_row(row, prompt), rtol=0, atol=1e-5)
    active = torch.zeros(batch, dtype=torch.bool)
    active[row] = True
    for byte in continuation:
        ids = torch.zeros(batch, dtype=torch.long)
        ids[row] = byte
        torch.testing.assert_close(cached.step(ids, active)[row], full.step(ids, active)[row], rtol=0, atol=1e-5)


@pytest.mark.parametrize("length", range(1, 14))
def test_every_prompt_length_around_span_boundaries(length: int) -> None:
    model = make_model("tiny")
    data = torch.randint(0, 256, (length + 11,), generator=torch.Generator().manual_seed(length)).tolist()
    assert_decoders_agree(model, data[:length], data[length:], row=1, batch=2)


def test_every_shape_feature() -> None:
    model = make_model("tiny", seed=2, **FEATURES)
    data = list(b"def fibonacci(n):\n    if n < 2:\n        return n\n")
    for length in (1, 4, 6, 9):
        assert_decoders_agree(model, data[:length], data[length : length + 9])


@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_every_architecture_option(option: str) -> None:
    model = make_model("tiny", seed=2, **OPTIONS[option])
    data = list(b"def fibonacci(n):\n    if n < 2:\n        return n\n")
    for length in (1, 4, 6, 9):
        assert_decoders_agree(model, data[:length], data[length : length + 9], row=1, batch=2)
    many = torch.randint(0, 256, (90,), generator=torch.Generator().manual_seed(7)).tolist()
    assert_decoders_agree(model, many[:50], many[50:90])  # past the context (64): the window slides
    assert_rows_at_different_positions_agree(model, data)


def assert_rows_at_different_positions_agree(model, data: list[int]) -> None:
    """Rows at different positions step together: each forms tokens of different scales."""
    prompts = [data[:1], data[:6], data[:11]]
    cached, full = CachedDecoder(model, 3), FullDecoder(model, 3)
    for row, prompt in enumerate(prompts):
        torch.testing.assert_close(cached.prefill_row(row, prompt), full.prefill_row(row, prompt), rtol=0, atol=1e-5)
    active = torch.ones(3, dtype=torch.bool)
    for byte in data[20:29]:
        ids = torch.full((3,), byte)
        torch.testing.assert_close(cached.step(ids, active), full.step(ids, active), rtol=0, atol=1e-5)


def test_other_downsample_factors() -> None:
    model = make_model("tiny", seed=3, downsample_factors=[1, 3, 8], max_seq_len=48)
    data = list(range(40, 80))
    assert_decoders_agree(model, data[:5], data[5:30])


# Every published preset's shape (heads, layers, d_ff ratio); the two 300M-class ones at reduced width.
SHAPES = {name: {} for name in PRESETS if name not in ("300m", "code-1b")}
SHAPES["300m"] = {"d_model": 128, "d_ff": 352}
SHAPES["code-1b"] = {"d_model": 128, "d_ff": 344}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_preset_shapes(name: str) -> None:
    model = make_model(name, **SHAPES[name])
    data = list(b"import os\nclass A:\n    pass\n")
    assert_decoders_agree(model, data[:6], data[6:13])


def test_sliding_past_the_context_matches_the_full_pass_on_the_same_window() -> None:
    model = make_model("tiny")  # context 128
    data = torch.randint(0, 256, (200,), generator=torch.Generator().manual_seed(5)).tolist()
    assert_decoders_agree(model, data[:120], data[120:200])
    cached = CachedDecoder(model)
    cached.prefill_row(0, data[:128])
    logits = cached.step(torch.tensor([data[128]]), torch.tensor([True]))[0]
    window = data[:129][-keep_after_overflow(128) :]
    torch.testing.assert_close(logits, model(torch.tensor([window]))[0, -1], rtol=0, atol=1e-5)


def _greedy(model, prompts: list[list[int]], n: int, cached: bool) -> list[list[int]]:
    from multiscale_transformer.generation.generate import new_decoder

    decoder = new_decoder(model, len(prompts), cached=cached)
    steps = list(stream(model, prompts, n, GREEDY, decoder=decoder))
    return torch.stack([s.ids for s in steps], dim=1).tolist()


def test_greedy_bytes_identical_to_full_recomputation() -> None:
    model = make_model("tiny", seed=7)
    for length in (1, 3, 4, 5, 10):
        prompt = [list(b"def add(a, b):\n    return a + b\n")[:length]]
        assert _greedy(model, prompt, 24, cached=True) == _greedy(model, prompt, 24, cached=False)


def test_batch_of_different_lengths_equals_each_alone() -> None:
    model = make_model("tiny", seed=8)
    prompts = [list(b"x"), list(b"import sys\n"), list(b"for i in range(10):\n  ")]
    together = _greedy(model, prompts, 25, cached=True)
    for prompt, out in zip(prompts, together, strict=True):
        assert _greedy(model, [prompt], 25, cached=True) == [out]


def test_released_row_takes_a_new_prompt() -> None:
    model = make_model("tiny")
    decoder = CachedDecoder(model, 2)
    decoder.prefill_row(0, list(b"first prompt that is long"))
    decoder.step(torch.tensor([65, 0]), torch.tensor([True, False]))
    decoder.release(0)
    fresh = CachedDecoder(model, 1).prefill_row(0, list(b"ab"))
    torch.testing.assert_close(decoder.prefill_row(0, list(b"ab")), fresh, rtol=0, atol=1e-5)


def test_batched_prefill_equals_one_row_at_a_time() -> None:
    model = make_model("tiny", seed=9)
    prompts = [list(b"abc"), list(b"defgh"), list(b"xyz"), list(b"q")]
    together = CachedDecoder(model, 4).prefill_rows([3, 1, 0, 2], prompts)
    for i, prompt in enumerate(prompts):
        torch.testing.assert_close(together[i], FullDecoder(model).prefill_row(0, prompt), rtol=0, atol=1e-5)
    # every row in one call, not in row order (a server gives out free rows in any order)
    same_length = [list(b"abcdef"), list(b"uvwxyz")]
    together = CachedDecoder(model, 2).prefill_rows([1, 0], same_length)
    for i, prompt in enumerate(same_length):
        torch.testing.assert_close(together[i], FullDecoder(model).prefill_row(0, prompt), rtol=0, atol=1e-5)


@pytest.mark.parametrize("option", sorted({**OPTIONS, "published": FEATURES}))
def test_a_prompt_that_starts_like_the_cached_one_runs_only_the_rest(option: str) -> None:
    """Prompt reuse (llama.cpp's cache_prompt): a row that held a prompt, and the bytes generated
    after it, prefills a prompt that starts the same way from where they differ, and then gives
    exactly what a fresh decoder gives, at the prefill and at every step after it (with windows, the
    rest's queries run blocked from an offset: attention.Local)."""
    model = make_model("tiny", seed=5, **({**FEATURES, **OPTIONS[option]} if option in OPTIONS else FEATURES))
    data = list(b"def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1)\n")
    decoder = CachedDecoder(model, 2)
    decoder.prefill_row(1, data[:21])
    for byte in data[21:26]:  # the row's generated bytes are cached too
        decoder.step(torch.tensor([0, byte]), torch.tensor([False, True]))
    decoder.release(1)
    cases = [(data[:37], 26), (data[:26], 25), (data[:23] + list(b"xyz"), 23), (list(b"other"), 0)]
    for prompt, reused in cases:  # longer, the same, diverging after 23 bytes, unrelated
        assert decoder.reuse(1, prompt) == reused
        full = FullDecoder(model, 2)
        torch.testing.assert_close(decoder.prefill_row(1, prompt), full.prefill_row(1, prompt), rtol=0, atol=1e-5)
        for byte in data[40:47]:
            ids, active = torch.tensor([0, byte]), torch.tensor([False, True])
            torch.testing.assert_close(decoder.step(ids, active)[1], full.step(ids, active)[1], rtol=0, atol=1e-5)
        decoder.release(1)
        decoder.prefill_row(1, data[:26])  # back to the first prompt for the next case
        decoder.release(1)


# Every attention windowed (ModelConfig.rolling): decoding goes on past the context on ring caches.
ROLLING = OPTIONS["windows=8,16"]


def test_a_rolling_model_reads_whole_sequences_of_any_length() -> None:
    """Past its context (64) a rolling model's full pass is the one a longer-context twin computes
    (RoPE past the table, windows over the whole sequence)."""
    short = make_model("tiny", seed=4, **ROLLING)
    long = make_model("tiny", seed=4, **{**ROLLING, "max_seq_len": 512})
    data = torch.randint(0, 256, (1, 300), generator=torch.Generator().manual_seed(8))
    assert short.config.rolling and short.config.max_seq_len == 64
    torch.testing.assert_close(short(data), long(data), rtol=0, atol=1e-5)
    flat = make_model("tiny", seed=4, **{**FEATURES, "attention_window": 8})  # the coarse scales read everything
    assert not flat.config.rolling
    with pytest.raises(ValueError, match="max_seq_len"):
        flat(data)


def test_rolling_decoding_equals_the_full_pass_far_past_the_context() -> None:
    model = make_model("tiny", seed=5, **ROLLING)
    data = torch.randint(0, 256, (500,), generator=torch.Generator().manual_seed(9)).tolist()
    assert_decoders_agree(model, data[:40], data[40:400])  # 6x the context: the rings wrap many times
    assert_decoders_agree(model, data[:100], data[100:300], row=1, batch=2)  # a prompt longer than the context


def test_attention_in_blocks_smaller_than_a_window_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without autograd, windowed attention runs in blocks of at most attention.QUERY_BLOCK queries
    (the bundled model's 256-byte window in 4); this model's windows (8, 16) fit one block, so with
    blocks of 2 the full pass must not change, and the cached decoder (a prefill, a prefill continuing
    a cached one, decoding far past the context) must still equal it."""
    model = make_model("tiny", seed=5, **ROLLING)
    data = torch.randint(0, 256, (400,), generator=torch.Generator().manual_seed(11)).tolist()
    with torch.no_grad():
        whole = model(torch.tensor([data[:300]]))
        monkeypatch.setattr(attention, "QUERY_BLOCK", 2)
        torch.testing.assert_close(model(torch.tensor([data[:300]])), whole, rtol=0, atol=1e-5)
    assert_decoders_agree(model, data[:40], data[40:250])  # the rings wrap: past the context (64)
    decoder, full = CachedDecoder(model, 2), FullDecoder(model, 2)
    decoder.prefill_row(1, data[:23])
    assert decoder.reuse(1, data[:61]) == 23  # the rest runs from an offset (attention.Local)
    torch.testing.assert_close(decoder.prefill_row(1, data[:61]), full.prefill_row(1, data[:61]), rtol=0, atol=1e-5)


def test_rolling_rows_at_different_positions_step_together() -> None:
    model = make_model("tiny", seed=6, **ROLLING)
    data = torch.randint(0, 256, (400,), generator=torch.Generator().manual_seed(10)).tolist()
    cached, full = CachedDecoder(model, 3), FullDecoder(model, 3)
    for row, n in enumerate((3, 30, 61)):
        expected = full.prefill_row(row, data[:n])
        torch.testing.assert_close(cached.prefill_row(row, data[:n]), expected, rtol=0, atol=1e-5)
    active = torch.ones(3, dtype=torch.bool)
    for byte in data[100:250]:  # each row passes the context (and wraps its rings) at its own step
        ids = torch.full((3,), byte)
        torch.testing.assert_close(cached.step(ids, active), full.step(ids, active), rtol=0, atol=1e-5)
    assert min(cached.lengths) > 2 * model.config.max_seq_len


def test_rolling_caches_keep_their_memory_and_never_reprefill() -> None:
    """Memory set by the context however long generation runs, and no window computed twice."""
    model = make_model("tiny", seed=7, **ROLLING)
    decoder = CachedDecoder(model)
    buffers = [decoder.cache.pooled, *decoder.cache.slots.values()]
    buffers += [kv.k for stack in decoder.cache.self_kv for kv in stack]
    buffers += [kv.v for layer in decoder.cache.cross_kv for kv in layer]
    before = [(b.data_ptr(), b.shape) for b in buffers]
    decoder.prefill_row(0, list(b"def f(x):\n"))
    prefills = []
    decoder.prefill_row = lambda *a: prefills.append(a)  # type: ignore[method-assign]
    for byte in torch.randint(0, 256, (1000,), generator=torch.Generator().manual_seed(11)).tolist():
        decoder.step(torch.tensor([byte]), torch.tensor([True]))
    assert decoder.lengths[0] == 1010 and not prefills
    assert [(b.data_ptr(), b.shape) for b in buffers] == before
    assert decoder.reuse(0, list(b"def f(x):\n    return")) == 0  # positions past the context: nothing to reuse
