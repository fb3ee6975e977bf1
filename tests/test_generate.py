import pytest
import torch

from multiscale_transformer.errors import UserError
from multiscale_transformer.generation.generate import TextStream, stream, with_file_start
from multiscale_transformer.generation.row import held_back
from multiscale_transformer.generation.sampling import SamplingParams

from .conftest import make_model

GREEDY = SamplingParams(0.0, None, None, 1.0)


def test_generate_returns_prompt_plus_continuation() -> None:
    model = make_model("tiny")
    ids = torch.tensor([list(b"def f():")])
    out = model.generate(ids, max_new_tokens=12, temperature=0)
    assert torch.equal(out[:, :8], ids)
    continuation = out[0, 8:].tolist()
    # 12 bytes, or fewer that end with the EOS that stopped it; never BOS.
    assert len(continuation) == 12 or (0 < len(continuation) < 12 and continuation[-1] == 257)
    assert 257 not in continuation[:-1] and 256 not in continuation
    text = b"".join(TextStream(model, list(b"def f():"), 12, GREEDY))
    assert bytes(t for t in continuation if t != 257) == text  # the CLI's greedy bytes


def test_seed_makes_sampling_reproducible() -> None:
    model = make_model("tiny")
    ids = torch.tensor([list(b"import os\n")])
    a = model.generate(ids, max_new_tokens=20, temperature=1.0, seed=3, stop_at_eos=False)
    b = model.generate(ids, max_new_tokens=20, temperature=1.0, seed=3, stop_at_eos=False)
    c = model.generate(ids, max_new_tokens=20, temperature=1.0, seed=4, stop_at_eos=False)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_long_prompt_keeps_last_bytes() -> None:
    model = make_model("tiny")  # max_seq_len 128
    long = torch.randint(0, 256, (1, 300))
    a = model.generate(long, max_new_tokens=5, temperature=0, stop_at_eos=False)
    b = model.generate(long[:, -128:], max_new_tokens=5, temperature=0, stop_at_eos=False)
    assert torch.equal(a[:, -5:], b[:, -5:])


def test_empty_and_out_of_range_prompts() -> None:
    model = make_model("tiny")
    with pytest.raises(UserError, match="empty"):
        model.generate(torch.zeros(1, 0, dtype=torch.long), max_new_tokens=3)
    with pytest.raises(UserError, match=r"0\.\.257"):
        model.generate(torch.tensor([[300]]), max_new_tokens=3)


def test_stop_sequences_are_never_emitted() -> None:
    model = make_model("tiny")
    prompt = list(b"x = 1\n")
    free = b"".join(TextStream(model, prompt, 40, GREEDY))
    assert len(free) >= 6
    stop = free[3:6]  # a multi-byte stop string that greedy decoding is known to produce
    chunks = list(TextStream(model, prompt, 40, GREEDY, stop=[stop]))
    text = b"".join(chunks)
    assert text == free[: free.find(stop)]
    assert stop not in text


def test_held_back_tail() -> None:
    assert held_back(bytearray(b"abc\n\nd"), [b"\n\nde"]) == 3
    assert held_back(bytearray(b"abc"), [b"xyz"]) == 0


def test_a_prompt_is_read_as_the_start_of_a_file() -> None:
    model = make_model("tiny")
    prompt = list(b"def f():")

    def logprobs(ids: list[int]) -> torch.Tensor:
        return torch.log_softmax(model(torch.tensor([ids]))[0, -1], -1)  # the model's, as every logprob

    first = next(stream(model, [prompt], 1, GREEDY)).logprobs[0]
    torch.testing.assert_close(first, logprobs([257, *prompt]), rtol=0, atol=1e-5)
    bare = next(stream(model, [prompt], 1, GREEDY, file_start=False)).logprobs[0]
    torch.testing.assert_close(bare, logprobs(prompt), rtol=0, atol=1e-5)
    assert with_file_start([257, 1], 128) == [257, 1]  # already marked
    assert with_file_start(list(range(128)), 128) == list(range(128))  # fills the context: a file's middle
