"""KV-cached decoding across all scales, equal to the full forward pass.

The model owns both passes over the caches: `MultiScaleTransformer.scale_states` fills them
during a prefill and `step_states` advances them by one byte per row, so the scale wiring is
written once, in model/. This decoder keeps the per-row bookkeeping: the caches themselves, each
row's length and ids, the byte embeddings coarse tokens pool from, and the upsampled slots of each
coarser scale's latest token that the fusion reads. Rows are independent, so prompts of different
lengths and requests that start at different times share one batch.

Beyond the context window the decoder keeps the last `keep` bytes of the row and re-prefills them
(the llama.cpp "context shift" idea, without its approximation): every logit is then exactly what
the full forward pass gives on that same window. `FullDecoder` follows the same rule.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from multiscale_transformer.generation.decoder import keep_after_overflow
from multiscale_transformer.model.cache import CacheView, KVCache
from multiscale_transformer.model.scales import n_tokens
from multiscale_transformer.model.step import StepWeights, drop_step_weights, step_weights

if TYPE_CHECKING:
    from multiscale_transformer.model.model import MultiScaleTransformer


class CachedDecoder(nn.Module):
    """Implements the Decoder protocol with per-row, per-scale KV caches (`setup_caches` on creation)."""

    def __init__(self, model: MultiScaleTransformer, batch_size: int = 1) -> None:
        super().__init__()
        self.model = model
        self.batch_size = batch_size
        cfg = model.config
        self.window = cfg.max_seq_len
        self.keep = keep_after_overflow(cfg.max_seq_len)
        self.factors = cfg.downsample_factors
        # Weights changed through `.data` keep their version, and layers may have been swapped in:
        # this decoder packs the weights as they are now (and refuses, here, layers it cannot pack).
        drop_step_weights(model)
        step_weights(model)
        self.setup_caches(batch_size, cfg.max_seq_len)

    def setup_caches(self, batch: int, max_len: int) -> None:
        cfg, factors = self.model.config, self.factors
        device = self.model.tok_emb.weight.device
        # One cache per self-attention layer of each scale's stack, then of the post-fusion layers
        # (stack index n_scales, one token per byte).
        sizes = [n_tokens(max_len, k) for k in factors] + [max_len]
        depths = [*cfg.scale_depths, cfg.post_fusion_layers]

        def cache(n: int) -> KVCache:
            return KVCache(batch, cfg.n_heads, n, cfg.head_dim).to(device)

        self.self_caches = nn.ModuleList(
            nn.ModuleList(cache(sizes[s]) for _ in range(depth)) for s, depth in enumerate(depths)
        )
        self.cross_caches = nn.ModuleList(
            nn.ModuleList(cache(sizes[s]) for s, _ in self.model.pairs) for _ in range(cfg.n_cross_attn_layers)
        )
        # Per row and byte, what the coarser scales pool (ModelConfig.coarse_input), for byte_window.
        self.register_buffer("pooled", torch.zeros(batch, max_len, cfg.d_model, device=device), persistent=False)
        # Upsampled slots (B, k, d) of each coarser scale's latest token: computed once per token.
        self.slots = {s: torch.zeros(batch, k, cfg.d_model, device=device) for s, k in enumerate(factors) if k > 1}
        self.lengths = [0] * batch
        self.ids: list[list[int]] = [[] for _ in range(batch)]

    def clear(self) -> None:
        for module in self.modules():
            if isinstance(module, KVCache):
                module.clear()
        self.pooled.zero_()
        for slots in self.slots.values():
            slots.zero_()
        self.lengths = [0] * self.batch_size
        self.ids = [[] for _ in range(self.batch_size)]

    def release(self, row: int) -> None:
        self.lengths[row] = 0
        self.ids[row] = []

    def prefill_row(self, row: int, ids: Sequence[int]) -> torch.Tensor:
        """Run the prompt's window through every stack and cross block, filling row `row`'s caches."""
        return self.prefill_rows([row], [ids])[0]

    @torch.inference_mode()
    def prefill_rows(self, rows: Sequence[int], prompts: Sequence[Sequence[int]]) -> torch.Tensor:
        """prefill_row for several rows at once, batching prompts of equal length: logits (R, V)."""
        windows = [list(p)[-self.window :] for p in prompts]
        out = torch.zeros(len(rows), self.model.config.vocab_size, device=self.pooled.device)
        by_length: dict[int, list[int]] = {}
        for i, ids in enumerate(windows):
            by_length.setdefault(len(ids), []).append(i)
        for group in by_length.values():
            out[group] = self._prefill([rows[i] for i in group], [windows[i] for i in group])
        return out

    def _prefill(self, row_list: list[int], windows: list[list[int]]) -> torch.Tensor:
        """Prefill rows whose windows all have the same length T; logits (R, V) after byte T-1.

        The model's own multi-scale pass (`scale_states`) does the work, keeping its keys and values
        in these rows' caches, so the wiring of scales and cross blocks is written once.
        """
        model = self.model
        T = len(windows[0])
        device = self.pooled.device
        rows = torch.tensor(row_list, device=device)
        x = model.tok_emb(torch.tensor(windows, device=device))  # (R, T, d)
        views = _PrefillViews(self, rows)
        hs = model.scale_states(x, caches=views)
        w = step_weights(model)
        for s in range(1, len(hs)):
            self._store_slots(s, rows, hs[s][:, -1], w)
        for row, ids in zip(row_list, windows, strict=True):
            self.lengths[row] = T
            self.ids[row] = list(ids)
        # The post-fusion layers' caches need every byte's fused state, not only the last one's.
        return model.head(model.post_fusion(model.fuse(model.upsampled(hs, T)), views)[:, -1])

    @torch.inference_mode()
    def step(self, next_ids: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        """Append one byte to each active row; logits (B, V) for the byte after it."""
        out = torch.zeros(self.batch_size, self.model.config.vocab_size, device=self.pooled.device)
        incremental = []
        for row in active.nonzero().flatten().tolist():
            self.ids[row].append(int(next_ids[row]))
            if self.lengths[row] >= self.window:  # full: slide to the last `keep` bytes
                out[row] = self.prefill_row(row, self.ids[row][-self.keep :])
            else:
                incremental.append(row)
        if incremental:
            rows = torch.tensor(incremental, device=self.pooled.device)
            out[rows] = self._step_rows(incremental, next_ids.to(self.pooled.device)[rows])
        return out

    def _step_rows(self, row_list: list[int], ids: torch.Tensor) -> torch.Tensor:
        """Append byte ids (R,) to rows row_list: logits (R, V). The model's `step_states` does the
        work against these rows' caches; this decoder keeps what the coarser scales pool and, per coarser
        scale, the upsampled slots of each row's latest token."""
        model, device = self.model, self.pooled.device
        t_list = [self.lengths[r] for r in row_list]  # the new bytes' positions
        rows, t = torch.tensor(row_list, device=device), torch.tensor(t_list, device=device)
        w = step_weights(model)  # checked once per step: every layer's packed weights
        x = F.embedding(ids, w.embedding)  # (R, d)
        views = _StepViews(self, row_list, rows, t)
        new = model.step_states(x, t_list, views, w)
        for s, (sub, h) in new.items():
            if s > 0:
                self._store_slots(s, _picker(sub, len(row_list))(rows), h, w)
        for r in row_list:
            self.lengths[r] += 1
        # Byte t's logits read its fine state and slot t % k of each coarser scale's latest token.
        coarse = [self.slots[s][rows, t % self.factors[s]] for s in range(1, len(self.factors))]
        return model.byte_logits(new[0][1], coarse, t_list, views, w)

    def _store_slots(self, s: int, rows: torch.Tensor, h: torch.Tensor, w: StepWeights) -> None:
        """Final state h (R, d) of the new latest token of scale s, upsampled once to its k byte slots."""
        self.slots[s][rows] = self.model.token_slots(s, h, w)


def _picker(sub: list[int], n: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Selects entries `sub` of a per-row tensor's first dimension; no copy when that is all n."""
    if len(sub) == n:
        return lambda a: a
    index = torch.tensor(sub)
    return lambda a: a[index.to(a.device)]


def _view(kv: KVCache, rows: list[int], pos: list[int], length: int) -> CacheView:
    """Where rows write one new key each (at pos) and how many keys they read back."""
    if len(rows) == 1:
        return CacheView.one(kv, rows[0], pos[0], length)
    device = kv.k.device
    return CacheView(kv, torch.tensor(rows, device=device), torch.tensor(pos, device=device)[:, None], length)


class _StepViews:
    """StepCaches for one step of rows `row_list` (new bytes at positions t): their cache rows and bytes."""

    def __init__(self, decoder: CachedDecoder, row_list: list[int], rows: torch.Tensor, t: torch.Tensor) -> None:
        self.decoder, self.row_list, self.rows, self.t = decoder, row_list, rows, t

    def self_view(self, scale: int, layer: int, rows: list[int], pos: list[int], length: int) -> CacheView:
        return _view(self.decoder.self_caches[scale][layer], [self.row_list[i] for i in rows], pos, length)

    def cross_view(self, layer: int, pair: int, rows: list[int], pos: list[int], length: int) -> CacheView:
        return _view(self.decoder.cross_caches[layer][pair], [self.row_list[i] for i in rows], pos, length)

    def keep_pooled(self, h: torch.Tensor) -> None:
        self.decoder.pooled[self.rows, self.t] = h

    def byte_window(self, rows: list[int], k: int) -> torch.Tensor:
        """The k pooled vectors ending at each row's new byte (zeros before byte 0): (R_s, k, d)."""
        pick = _picker(rows, len(self.row_list))
        pos = pick(self.t)[:, None] + torch.arange(-k + 1, 1, device=self.t.device)  # (R_s, k)
        return self.decoder.pooled[pick(self.rows)[:, None], pos.clamp(min=0)] * (pos >= 0)[..., None]


class _PrefillViews:
    """PassCaches for a prefill: rows `rows` write every position 0..n-1 of each cache they fill."""

    def __init__(self, decoder: CachedDecoder, rows: torch.Tensor) -> None:
        self.decoder = decoder
        self.rows = rows

    def _view(self, kv: KVCache, n: int) -> CacheView:
        return CacheView(kv, self.rows, torch.arange(n, device=self.rows.device)[None], n)

    def keep_pooled(self, h: torch.Tensor) -> None:
        self.decoder.pooled[self.rows, : h.shape[1]] = h

    def self_view(self, scale: int, layer: int, n_tokens: int) -> CacheView:
        return self._view(self.decoder.self_caches[scale][layer], n_tokens)

    def cross_view(self, layer: int, pair: int, n_source: int) -> CacheView:
        return self._view(self.decoder.cross_caches[layer][pair], n_source)
