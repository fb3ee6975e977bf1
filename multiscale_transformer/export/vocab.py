"""The byte vocabulary as a GGUF "gpt2" tokenizer that llama.cpp maps onto exactly our byte ids.

llama.cpp's byte-level BPE first maps each UTF-8 byte to a printable character (GPT-2's
byte-to-unicode table), then applies merges. With tokens 0..255 being those characters in byte
order and a merge list that can never fire, any text tokenizes to its raw bytes, and detokenizing
maps the characters back. The "llama" (SentencePiece) model with <0xXX> tokens does not work:
it turns spaces into U+2581.
"""

from __future__ import annotations

from dataclasses import dataclass

from multiscale_transformer.model.vocab import BOS_ID, EOS_ID, FIM_MIDDLE_ID, FIM_PREFIX_ID, FIM_SUFFIX_ID

BOS_TEXT = "<|bos|>"
EOS_TEXT = "<|eos|>"  # written literally in modelfile.FIM_TEMPLATE
# A FIM-trained model's sentinel bytes (never in UTF-8 text, so no text tokenizes to them) become
# control tokens with StarCoder's names, which Ollama and llama.cpp templates can write.
FIM_TEXTS = {FIM_PREFIX_ID: "<fim_prefix>", FIM_SUFFIX_ID: "<fim_suffix>", FIM_MIDDLE_ID: "<fim_middle>"}
# Token types as llama.cpp reads them (gguf.TokenType): normal, control, unused.
NORMAL, CONTROL, UNUSED = 1, 3, 5


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> character table.

    Bytes that are printable Latin-1 characters ('!'..'~', '¡'..'¬', '®'..'ÿ') stand for
    themselves; the other 68 bytes (controls, space, soft hyphen...) take the characters U+0100
    onwards in byte order, so no token text contains whitespace or control characters.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = (b for b in range(256) if b not in table)
    for n, b in enumerate(extra):
        table[b] = chr(256 + n)
    return dict(sorted(table.items()))


@dataclass(frozen=True)
class GGUFVocab:
    tokens: list[str]
    types: list[int]
    merges: list[str]


def byte_vocab(vocab_size: int, fim: bool = False) -> GGUFVocab:
    """Tokens for ids 0..vocab_size-1: the 256 bytes, BOS, EOS, then unused padding ids if any; with
    `fim`, the three sentinel bytes are control tokens named as in FIM_TEXTS."""
    table = byte_to_unicode()
    tokens = [FIM_TEXTS.get(b, table[b]) if fim else table[b] for b in range(256)]
    types = [CONTROL if fim and b in FIM_TEXTS else NORMAL for b in range(256)]
    specials = {BOS_ID: BOS_TEXT, EOS_ID: EOS_TEXT}
    for i in range(256, vocab_size):
        tokens.append(specials.get(i, f"<|unused_{i}|>"))
        types.append(CONTROL if i in specials else UNUSED)
    # gguf-py refuses an empty merge list and llama.cpp refuses a missing one. Bytes 0xC0 and 0xC1
    # never occur in UTF-8, so this one merge never applies and every byte stays its own token.
    merges = [f"{table[0xC0]} {table[0xC1]}"]
    return GGUFVocab(tokens, types, merges)
