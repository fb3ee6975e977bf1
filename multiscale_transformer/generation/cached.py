"""KV-cached decoding across all scales, equal to the full forward pass.

The model's one forward does the work (`model(ids, at=cache.at(rows, start))`): a prefill
is a call with a row's whole window from byte 0, a step a call with one new byte per row at its
own position. This decoder keeps the per-row bookkeeping: the ModelCache, each row's length and
ids. Rows are independent, so prompts of different lengths and requests that start at different
times share one batch.

Beyond the context a rolling model (every attention windowed, ModelConfig.rolling) goes on
decoding one byte at a time: its caches are rings that hold every window a query reads, and its
logits are those of the full pass over everything since the prompt's window. Any other model
keeps the last `keep` bytes of the row and re-prefills them (the llama.cpp "context shift" idea,
without its approximation): every logit is then exactly what the full forward pass gives on that
same window. `FullDecoder` follows the same rules.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from multiscale_transformer.generation.decoder import LanguageModel, keep_after_overflow
from multiscale_transformer.model.cache import ModelCache
from multiscale_transformer.model.layers import forget_packed


class CachedDecoder:
    """Implements the Decoder protocol with a ModelCache of `batch_size` rows."""

    def __init__(self, model: LanguageModel, batch_size: int = 1) -> None:
        self.model = model
        self.batch_size = batch_size
        cfg = model.config
        self.window = cfg.max_seq_len
        self.keep = keep_after_overflow(cfg.max_seq_len)
        self.rolling = cfg.rolling
        # Weights changed through `.data` keep their version: fold the weights as they are now.
        forget_packed(model)
        self.cache = ModelCache(cfg, batch_size, next(model.parameters()).device)
        self.lengths = [0] * batch_size  # positions each active row has in the caches (0: free)
        # The ids whose keys and values each row's caches hold, at positions 0..len-1: the tail a
        # full row slides to, and what a later prompt that starts the same way reuses (released rows
        # keep theirs until overwritten).
        self.cached: list[list[int]] = [[] for _ in range(batch_size)]

    def release(self, row: int) -> None:
        self.lengths[row] = 0

    def reuse(self, row: int, ids: Sequence[int]) -> int:
        """How many of the first bytes of `ids` (the window a prefill would read) row `row` already
        holds: a prefill there runs only the rest (llama.cpp's cache_prompt). At least the last byte
        always runs, for its logits."""
        window, held = list(ids)[-self.window :], self.cached[row]
        n = 0
        for a, b in zip(held, window[:-1], strict=False):
            if a != b:
                break
            n += 1
        return n

    def prefill_row(self, row: int, ids: Sequence[int]) -> torch.Tensor:
        """Run the prompt's window through the model, filling row `row`'s caches: logits (V,)."""
        return self.prefill_rows([row], [ids])[0]

    @torch.inference_mode()
    def prefill_rows(self, rows: Sequence[int], prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """prefill_row for several rows at once, batching prompts of equal length: logits (R, V)."""
        windows = [list(p)[-self.window :] for p in prompts]
        out = torch.zeros(len(rows), self.model.config.vocab_size, device=self.cache.pooled.device)
        groups: dict[tuple[int, int], list[int]] = {}  # (bytes reused, window length) -> prompts
        for i, ids in enumerate(windows):
            groups.setdefault((self.reuse(rows[i], ids), len(ids)), []).append(i)
        for (kept, _), group in groups.items():
            row_list = [rows[i] for i in group]
            ids = torch.tensor([windows[i][kept:] for i in group], device=out.device)
            out[group] = self._last_logits(ids, row_list, [kept] * len(group))
            for i in group:
                self.lengths[rows[i]] = len(windows[i])
                self.cached[rows[i]] = list(windows[i])
        return out

    @torch.inference_mode()
    def step(self, next_ids: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Append one byte to each active row; logits (B, V) for the byte after it."""
        out = torch.zeros(self.batch_size, self.model.config.vocab_size, device=self.cache.pooled.device)
        incremental = []
        for row in active.nonzero().flatten().tolist():
            if self.lengths[row] < self.window:
                self.cached[row].append(int(next_ids[row]))
                incremental.append(row)
            elif self.rolling:  # past the context: the ring goes on; nothing here is a prompt's start any more
                self.cached[row].clear()
                incremental.append(row)
            else:  # full: slide to the last `keep` bytes
                self.cached[row].append(int(next_ids[row]))
                out[row] = self.prefill_row(row, self.cached[row][-self.keep :])
        if len(incremental) == 1:  # plain indexing for the common case: fewer operators per byte
            r = incremental[0]
            out[r] = self._last_logits(next_ids[r].view(1, 1).to(out.device), incremental, [self.lengths[r]])[0]
            self.lengths[r] += 1
        elif incremental:
            positions = [self.lengths[r] for r in incremental]
            ids = next_ids.to(out.device)[incremental][:, None]  # (R, 1)
            out[incremental] = self._last_logits(ids, incremental, positions)
            for r in incremental:
                self.lengths[r] += 1
        return out

    def _last_logits(self, ids: torch.Tensor, rows: list[int], positions: list[int]) -> torch.Tensor:
        """The model's forward over new bytes ids (R, T) of cache rows `rows`, first at `positions`:
        the logits after each row's last byte, (R, V)."""
        hidden = self.model.hidden(ids, self.cache.at(rows, positions))
        return self.model.head(hidden[:, -1])
