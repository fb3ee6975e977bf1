"""Decoders: prefill a prompt into a batch row, then advance all active rows one byte at a time.

Rows are independent (each has its own length and position), so a server can put a new request
into a free row while the other rows keep decoding. `FullDecoder` recomputes the whole window for
every byte: slow, simple, and the reference that the cached decoder (generation/cached.py) must
equal. Both go past the context the same way: a full row keeps its last `keep_after_overflow`
bytes, so every logit is the full forward pass's on a window the caller can name; a rolling model
(every attention windowed) has no such seam, its cached decoder runs on (model/cache.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import torch
from torch import nn

from multiscale_transformer.model.cache import Rows
from multiscale_transformer.model.config import ModelConfig


class LanguageModel(Protocol):
    """What generation needs of a model (MultiScaleTransformer is one), named here so that
    generation/ never imports model.model, which reaches generation/ through `model.generate`."""

    config: ModelConfig

    def __call__(self, idx: torch.Tensor) -> torch.Tensor: ...

    def hidden(self, idx: torch.Tensor, at: Rows | None = None) -> torch.Tensor: ...

    def head(self, h: torch.Tensor) -> torch.Tensor: ...

    def parameters(self) -> Iterator[nn.Parameter]: ...


def keep_after_overflow(max_seq_len: int) -> int:
    """Bytes a full row keeps when the next byte would overflow the context: three quarters of it."""
    return max(1, (3 * max_seq_len) // 4)


class Decoder(Protocol):
    batch_size: int

    def prefill_row(self, row: int, ids: Sequence[int]) -> torch.Tensor:
        """Start row `row` with the prompt ids (the last max_seq_len are kept); logits (V,) for the next byte."""
        ...

    def prefill_rows(self, rows: Sequence[int], prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """prefill_row for several rows at once (batched where the decoder can): logits (R, V)."""
        ...

    def step(self, next_ids: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Append next_ids (B,) to the active rows (bool (B,)); logits (B, V). Inactive rows' logits are undefined."""
        ...

    def release(self, row: int) -> None:
        """Forget row `row` so that it can take a new prompt."""
        ...

    def reuse(self, row: int, ids: Sequence[int]) -> int:
        """How many of the first bytes of `ids` a prefill of row `row` would not need to run again."""
        ...


class FullDecoder:
    """Reference decoder: every step runs the model on each active row's bytes since its prompt's
    last max_seq_len. Past the context a rolling model (ModelConfig.rolling), which reads sequences
    of any length, keeps them all (slow, and growing: a reference); any other model's row slides to
    its last `keep_after_overflow` bytes, exactly as CachedDecoder does."""

    def __init__(self, model: LanguageModel, batch_size: int = 1) -> None:
        self.model = model
        self.batch_size = batch_size
        self.window = model.config.max_seq_len
        self.rows: list[list[int]] = [[] for _ in range(batch_size)]

    @torch.inference_mode()
    def _logits(self, row: int) -> torch.Tensor:
        ids = torch.tensor([self.rows[row]], dtype=torch.long)
        return self.model(ids)[0, -1]

    def prefill_row(self, row: int, ids: Sequence[int]) -> torch.Tensor:
        self.rows[row] = list(ids)[-self.window :]
        return self._logits(row)

    def prefill_rows(self, rows: Sequence[int], prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        return torch.stack([self.prefill_row(r, p) for r, p in zip(rows, prompts, strict=True)])

    def step(self, next_ids: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(self.batch_size, self.model.config.vocab_size)
        for row in range(self.batch_size):
            if bool(active[row]):
                self.rows[row].append(int(next_ids[row]))
                if len(self.rows[row]) > self.window and not self.model.config.rolling:
                    del self.rows[row][: -keep_after_overflow(self.window)]  # slide exactly as CachedDecoder does
                out[row] = self._logits(row)
        return out

    def release(self, row: int) -> None:
        self.rows[row] = []

    def reuse(self, row: int, ids: Sequence[int]) -> int:
        return 0  # the reference recomputes everything
