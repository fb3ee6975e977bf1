"""Text to the bytes the model reads: one rule for the server, the CLI and fill-in-the-middle."""

from __future__ import annotations


def text_bytes(text: str) -> bytes:
    """`text` as UTF-8, where a lone surrogate keeps its 3-byte form (Python's "surrogatepass").

    Why this rule: a JSON string may carry an unpaired escape such as "\\ud800". It is valid JSON
    and a valid Python str, but has no UTF-8 form. Refusing it ("strict") would fail a request over
    one stray escape, and replacing or dropping it would change the prompt's bytes and length. The
    model reads any bytes, so the surrogate is written as the three bytes of its code point, and
    decoding with "surrogatepass" gives the same text back. Every text of a request goes through
    here (prompt, suffix, stop sequences, FIM markers, chat templates, /tokenize, /v1/inspect), so
    a stop sequence written with the same escape as the text still matches it.
    """
    return text.encode("utf-8", "surrogatepass")
