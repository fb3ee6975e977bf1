"""How bytes appear as tokens in logprobs: ASCII as itself, other bytes as "bytes:\\xNN".

A byte >= 0x80 is only part of a character, so it has no text of its own; OpenAI's API writes such
tokens as "bytes:\\xNN" and gives the raw values in a `bytes` field, which we follow.
"""

from __future__ import annotations

from multiscale_transformer.model.vocab import BOS_ID, EOS_ID

SPECIAL = {BOS_ID: "<|bos|>", EOS_ID: "<|endoftext|>"}


def token_text(token: int) -> str:
    if token in SPECIAL:
        return SPECIAL[token]
    return chr(token) if token < 0x80 else f"bytes:\\x{token:02x}"


def token_bytes(token: int) -> list[int] | None:
    return None if token in SPECIAL else [token]
