import pytest

from multiscale_transformer.errors import UserError
from multiscale_transformer.training.tokenizer import ByteTokenizer

tok = ByteTokenizer()


def test_round_trip_unicode_and_specials() -> None:
    text = "def héllo():\n    return '🐍'\n"
    ids = tok.encode(text, add_bos=True, add_eos=True)
    assert ids[0] == 256 and ids[-1] == 257
    assert ids[1:-1] == list(text.encode("utf-8"))
    assert tok.decode(ids) == text
    assert tok.vocab_size == 258


def test_bytes_input_and_decode_bytes() -> None:
    assert tok.encode(b"\x00\xff") == [0, 255]
    assert tok.decode_bytes([0, 256, 255, 257]) == b"\x00\xff"


def test_invalid_utf8_is_replaced_not_raised() -> None:
    assert tok.decode([0xE2, 0x82]) == "\ufffd"  # a euro sign cut in half
    assert tok.decode(list(range(258))).endswith("\ufffd")


def test_out_of_range_id_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="258"):
        tok.decode([65, 258])
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([-1])


def test_lone_surrogate_is_a_clear_error() -> None:
    with pytest.raises(UserError, match="UTF-8"):
        tok.encode("a\ud800b")
