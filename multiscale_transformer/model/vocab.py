"""The vocabulary, defined once: 256 byte values plus BOS (256) and EOS (257), and ByteTokenizer.

Fill-in-the-middle sentinels reuse byte values that never occur in UTF-8 text (0xF8-0xFF cannot
start or continue a character; ByT5 reuses byte ids the same way), so the vocabulary stays at 258
ids and every checkpoint keeps AXL's shape. The training corpus holds only valid UTF-8 files
(training/data.py), so these ids mean a sentinel and nothing else there.

It lives in model/, the bottom layer, because every other layer (training, generation, serving,
export, evaluation) needs the ids; `multiscale_transformer.training.tokenizer` re-exports it for the
AXL card's import path.
"""

from __future__ import annotations

from collections.abc import Iterable

from multiscale_transformer.errors import UserError

N_BYTES = 256
BOS_ID = 256  # starts a sequence; never sampled
EOS_ID = 257  # ends a file; training reads every file after one
VOCAB_SIZE = 258
SPECIAL_IDS = (BOS_ID, EOS_ID)
FIM_PREFIX_ID = 0xF8  # <fim_prefix>: the text before the cursor follows
FIM_SUFFIX_ID = 0xF9  # <fim_suffix>: the text after the cursor follows
FIM_MIDDLE_ID = 0xFA  # <fim_middle>: the model writes the middle from here, then EOS
FIM_IDS = (FIM_PREFIX_ID, FIM_SUFFIX_ID, FIM_MIDDLE_ID)
NEVER_SAMPLED = (BOS_ID, *FIM_IDS)  # BOS only starts a sequence; sentinels are only ever written by the caller


class ByteTokenizer:
    """UTF-8 bytes as ids 0..255, with BOS and EOS as the two extra ids of AXL's 258-id vocabulary."""

    vocab_size = VOCAB_SIZE
    bos_id = BOS_ID
    eos_id = EOS_ID

    def encode(self, text: str | bytes, add_bos: bool = False, add_eos: bool = False) -> list[int]:
        if isinstance(text, str):
            try:
                data = text.encode("utf-8")
            except UnicodeEncodeError as exc:
                # Lone surrogates (e.g. from a bad decode with surrogateescape) have no UTF-8 form.
                raise UserError(f"text is not encodable as UTF-8 at character {exc.start}: {exc.reason}") from None
        elif isinstance(text, bytes | bytearray | memoryview):
            data = bytes(text)
        else:
            raise TypeError(f"encode() takes str or bytes, not {type(text).__name__}")
        ids = list(data)
        if add_bos:
            ids.insert(0, BOS_ID)
        if add_eos:
            ids.append(EOS_ID)
        return ids

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The raw bytes of the ids, with BOS/EOS skipped; ids outside 0..257 raise ValueError."""
        out = bytearray()
        for i in ids:
            i = int(i)
            if 0 <= i < N_BYTES:
                out.append(i)
            elif i not in SPECIAL_IDS:
                raise UserError(f"token id {i} is out of range; valid ids are 0..{VOCAB_SIZE - 1}")
        return bytes(out)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of the ids; invalid UTF-8 (e.g. a character cut in half) becomes U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")
