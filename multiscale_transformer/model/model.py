"""MultiScaleTransformer: three byte-level encoder stacks (1x, 2x, 4x), cross-scale attention, gated fusion."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from multiscale_transformer.errors import UserError
from multiscale_transformer.model.attention import CAUSAL, Local, Mask
from multiscale_transformer.model.blocks import Block, CrossBlock
from multiscale_transformer.model.cache import CacheView, Rows, stretch
from multiscale_transformer.model.config import ModelConfig, memory_bytes
from multiscale_transformer.model.io import load_weights, read_pretrained, save_model
from multiscale_transformer.model.layers import Dense, RMSNorm, inv_rms, normed, packed, rope_at, rope_tables
from multiscale_transformer.model.scales import Downsample, Span, Upsample, visible


class ScaleTrace(NamedTuple):
    """A forward pass with its intermediate scale states (`forward_with_scales`)."""

    logits: torch.Tensor  # (B, T, V)
    gates: torch.Tensor  # (B, T, n_scales): the fusion's weights
    fine: torch.Tensor  # (B, T, d): the fine stack's output, before any cross-scale block
    upsampled: list[torch.Tensor]  # every scale's final states at byte resolution, (B, T, d) each


class Pass(NamedTuple):
    """What one call of the model computes at its bytes, before the head."""

    hidden: torch.Tensor  # (R, T, d): what the head reads
    fine: torch.Tensor  # (R, T, d): the fine stack's output
    gates: torch.Tensor  # (R, T, n_scales)
    upsampled: list[torch.Tensor]  # every scale at byte resolution, (R, T, d) each


class MultiScaleTransformer(nn.Module):
    """The AXL multi-scale byte transformer; forward(idx) returns logits (B, T, vocab_size).

    Strictly causal: logits at byte t depend on bytes 0..t only (see scales.py for the rule).
    One forward serves training, prefill and decoding: given rows of a ModelCache and where each
    row's new bytes start, it runs only the new bytes against everything the cache holds
    (`forward(idx, at=cache.at(rows, start))`).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"MultiScaleTransformer takes a ModelConfig, not {type(config).__name__}")
        _check_memory(config)
        self.config = cfg = config
        factors = cfg.downsample_factors
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.emb_dropout = nn.Dropout(cfg.dropout)
        self.down = nn.ModuleList(nn.Identity() if k == 1 else Downsample(cfg.d_model, k) for k in factors)
        self.stacks = nn.ModuleList(nn.ModuleList(Block(cfg) for _ in range(n)) for n in cfg.scale_depths)
        # Directed (source, target) scale pairs with a cross block (ModelConfig.cross_pairs), in a fixed order.
        self.pairs = cfg.directed_pairs
        self.cross = nn.ModuleList(
            nn.ModuleList(CrossBlock(cfg) for _ in self.pairs) for _ in range(cfg.n_cross_attn_layers)
        )
        self.up = nn.ModuleList(nn.Identity() if k == 1 else Upsample(cfg.d_model, k) for k in factors)
        self.fusion = nn.Linear(cfg.n_scales * cfg.d_model, cfg.n_scales, bias=False) if cfg.n_scales > 1 else None
        self.post = nn.ModuleList(Block(cfg) for _ in range(cfg.post_fusion_layers))
        self.norm_f = RMSNorm(cfg.d_model, cfg.norm_eps)
        rotation = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_rotation", rotation, persistent=False)
        self._rope_recent: dict[int, torch.Tensor] = {}  # rotations past the table (_rope_one)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
        # GPT-2 style: shrink the projections that write into the residual stream with depth.
        depth = max(self.config.scale_depths) + self.config.n_cross_attn_layers + self.config.post_fusion_layers
        for name, p in self.named_parameters():
            if name.endswith(("wo.weight", "w2.weight")):
                nn.init.normal_(p, 0.0, std / math.sqrt(2 * depth))
        if self.fusion is not None:
            nn.init.zeros_(self.fusion.weight)  # every scale weighted equally at the start

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx: torch.Tensor, fine_only: bool = False, at: Rows | None = None) -> torch.Tensor:
        """Logits (B, T, vocab) for byte ids idx (B, T).

        Without `at`, idx is whole sequences from byte 0 (training, evaluation). With
        `at = cache.at(rows, start)`, idx holds the new bytes of those rows of a ModelCache, row i's
        first at byte start[i]; their keys and values join the cache. The rows either all start at
        the same position (a prefill, or the rest of a prompt) or bring one byte each (a decoding step).
        fine_only=True runs the byte embedding, the fine stack, the final norm and the tied head
        alone: exactly the path a llama-architecture GGUF export computes.
        """
        self._check(idx, at)
        if fine_only:
            start = at.start if at is not None else [0] * len(idx)
            return self.head(self._stack(0, self._embed(idx), Span.of(start, idx.shape[1], 1), at))
        return self.head(self.run(idx, at).hidden)

    def hidden(self, idx: torch.Tensor, at: Rows | None = None) -> torch.Tensor:
        """`forward` without the head: what it reads, (B, T, d); a decoder heads only the last byte."""
        self._check(idx, at)
        return self.run(idx, at).hidden

    def forward_with_fine(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(full logits, fine-only logits) sharing one pass of the fine stack: for an auxiliary loss
        that trains the fine path, the part a GGUF export carries, as a model of its own."""
        self._check(idx, None)
        out = self.run(idx, None)
        return self.head(out.hidden), self.head(out.fine)

    def forward_with_gates(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, T, V), the fusion gate (B, T, n_scales)): the forward pass, and at every
        position the fusion's weight of each scale (a single-scale model: all 1)."""
        trace = self.forward_with_scales(idx)
        return trace.logits, trace.gates

    def forward_with_scales(self, idx: torch.Tensor) -> ScaleTrace:
        """The forward pass with what inspection shows of the scales (evaluation/inspect.py)."""
        self._check(idx, None)
        out = self.run(idx, None)
        return ScaleTrace(self.head(out.hidden), out.gates, out.fine, out.upsampled)

    def _check(self, idx: torch.Tensor, at: Rows | None) -> None:
        """A call's input in one line of error: its shape, and its bytes inside the context."""
        if idx.dim() != 2:
            raise ValueError(f"idx must have shape (batch, time), got {tuple(idx.shape)}")
        R, T = idx.shape
        start = [0] * R if at is None else at.start
        cfg = self.config
        room = cfg.max_seq_len - max(start) if len(start) == R and start else 0
        if cfg.rolling and room < T:
            # Every attention is windowed: a whole sequence may be any length; past the context a
            # cached call's keys must not overwrite, in the ring, the window it reads (model/cache.py).
            room = T if at is None else cfg.max_seq_len + max(cfg.downsample_factors) - cfg.widest_window
        if len(start) != R or min(start) < 0 or not 1 <= T <= room:
            raise ValueError(f"sequence length {T} at positions {start[:4]} is outside max_seq_len ({cfg.max_seq_len})")

    def run(self, idx: torch.Tensor, at: Rows | None) -> Pass:
        """The multi-scale wiring, written once: the fine stack over the bytes, the coarser stacks
        over the tokens whose spans end among them, the cross-scale blocks, the upsampling to bytes,
        the fusion and the post-fusion layers. With `at`, every layer reads and extends the cache."""
        R, T = idx.shape
        start = at.start if at is not None else [0] * R
        factors = self.config.downsample_factors
        x = self._embed(idx)  # (R, T, d)
        spans = [Span.of(start, T, k) for k in factors]
        fine = self._stack(0, x, spans[0], at)  # the fine scale reads the bytes as they are
        pooled = fine if self.config.coarse_input == "fine" else x  # both causal: byte t from bytes <= t
        new: dict[int, torch.Tensor] = {0: fine}
        for s in range(1, len(factors)):
            span = spans[s]
            if span is None:
                continue
            sub = _pick(pooled, span.rows)
            before = (
                None if at is None else at.cache.before(_sub(at.rows, span.rows), _sub(start, span.rows), span.k - 1)
            )
            new[s] = self._stack(s, self.down[s](sub, before, span), span, at)
        if at is not None:
            at.cache.keep_pooled(at.rows, start, pooled)
        for li, layer in enumerate(self.cross):
            snapshot = dict(new)
            for pi, ((s, t), block) in enumerate(zip(self.pairs, layer, strict=True)):
                if t in new:  # sources as they were before this layer, the target as it is now
                    new[t] = self._cross(li, pi, block, snapshot, new[t], spans, at)
                elif s in snapshot and at is not None:  # this call's source tokens still join the cache
                    self._cross(li, pi, block, snapshot, None, spans, at)
        ups = [new[0]] + [self._upsampled(s, new.get(s), spans[s], start, T, at) for s in range(1, len(factors))]
        fused, gates = self._fuse(ups)
        hidden = self._stack(len(factors), fused, spans[0], at)
        return Pass(hidden, fine, gates, ups)

    def _embed(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok_emb(idx)
        return self.emb_dropout(x) if self.training else x  # a module call less per decoded byte

    def _stack(self, index: int, h: torch.Tensor, span: Span | None, at: Rows | None) -> torch.Tensor:
        """Self-attention stack `index` (a scale's, or n_scales: the post-fusion layers) over the
        span's new tokens h (R_s, n, d), at token positions span.first.."""
        stack = self.post if index == self.config.n_scales else self.stacks[index]
        if not len(stack):
            return h
        assert span is not None
        rotation = self._rotation(span, 1)
        window = self._window(span.k) // span.k  # in this stack's token positions
        if at is None:
            mask, views = self._mask(span, 1, 1, span.n, window), [None] * len(stack)
        else:
            length = max(span.first) + span.n  # keys read back: the furthest row's tokens so far,
            lo = max(0, min(span.first) - window + 1) if window else 0  # from the nearest row's window
            mask, rows = self._mask(span, 1, 1, length, window, lo), _sub(at.rows, span.rows)
            kv = at.cache.self_kv[index]
            views = [CacheView.of(kv[i], rows, span.first, span.n, length, lo) for i in range(len(stack))]
        R, n, d = h.shape
        flat = h.reshape(R * n, d)  # the blocks pass flat rows along: no reshaping between layers
        for block, view in zip(stack, views, strict=True):
            flat = block(flat, R, rotation, mask, view)
        return flat.view(R, n, d)

    def _cross(
        self,
        layer: int,
        pair: int,
        block: CrossBlock,
        snapshot: dict[int, torch.Tensor],
        target_states: torch.Tensor | None,
        spans: list[Span | None],
        at: Rows | None,
    ) -> torch.Tensor | None:
        """One directed cross block: this call's source tokens (if any) give keys and values, which
        join the pair's cache; the target's new tokens (target_states; None: the target has none in
        this call, only the cache is written) attend to every source token ending no later."""
        s, t = self.pairs[pair]
        k_s = self.config.downsample_factors[s]
        src = spans[s]
        keys = None
        if s in snapshot:
            assert src is not None
            keys = block.source_kv(snapshot[s], self._rotation(src, k_s))  # rotated to their span ends
        target = spans[t]
        if at is not None:
            kv = at.cache.cross_kv[layer][pair]
            if keys is not None:
                assert src is not None
                CacheView.of(kv, _sub(at.rows, src.rows), src.first, src.n, 0).write(*keys)
            if target_states is None:
                return None
            assert target is not None
            k_t, window = target.k, self._window(target.k)
            length = max((f + target.n - 1) * k_t for f in target.first) // k_s + 1  # sources ending by then
            lo = max(0, (min(target.first) * k_t - window) // k_s + 1) if window else 0  # and in a window
            lo -= lo % (k_t // math.gcd(k_t, k_s))  # a key ending where a target token could: `_mask`'s blocks
            keys = CacheView.reader(kv, _sub(at.rows, target.rows), length, lo).read()
        else:
            lo = 0
        assert keys is not None and target is not None and target_states is not None
        mask = self._mask(target, target.k, k_s, keys[0].shape[2] + lo, self._window(target.k), lo)
        return block(target_states, *keys, self._rotation(target, target.k), mask)

    def _upsampled(
        self, s: int, h: torch.Tensor | None, span: Span | None, start: list[int], T: int, at: Rows | None
    ) -> torch.Tensor:
        """Scale s at the call's bytes (R, T, d): byte t reads slot t % k of token t // k, which may
        have ended in an earlier call. With a cache, every token's slots are kept at the bytes they
        serve (ModelCache.slots), so a call can start anywhere a cached prefix ends."""
        k = self.config.downsample_factors[s]
        slots = None if h is None else self.up[s](h)  # (R_s, n*k, d): bytes first*k .. (first+n)*k - 1
        if at is None:
            assert slots is not None
            return slots[:, :T]  # from byte 0, the new tokens serve every byte
        cached = at.cache.slots[s]  # (B, capacity, d), a ring (model/cache.py)
        size = cached.shape[1]
        if slots is not None and span is not None:
            rows = _sub(at.rows, span.rows)
            n = slots.shape[1]
            one = stretch(span.first[0] * k, n, size) if len(set(span.first)) == 1 else None
            if one is not None:  # one place for every row: a slice
                cached[rows[0] if len(rows) == 1 else _index(rows), one] = slots.squeeze(0)
            else:  # rows at different positions, or the ring wraps
                pos = torch.tensor(span.first)[:, None] * k + torch.arange(n)  # (R_s, n*k)
                cached[_index(rows)[:, None].expand_as(pos), pos % size] = slots
        one = stretch(start[0], T, size) if len(set(start)) == 1 else None
        if one is not None:
            if len(at.rows) == 1:
                return cached[at.rows[0], one][None]
            return cached[_index(at.rows), one]
        pos = torch.tensor(start)[:, None] + torch.arange(T)  # (R, T)
        return cached[_index(at.rows)[:, None].expand_as(pos), pos % size]

    def _rotation(self, span: Span, unit: int) -> torch.Tensor:
        """RoPE rotations (R_s or 1, n, 1, hd/2) of the span's tokens at their positions in the stack
        (unit 1) or at the bytes where their spans end (unit k, cross-scale attention)."""
        table = self.rope_rotation
        last = (max(span.first) + span.n - 1) * unit
        if span.n == 1 and len(set(span.first)) == 1:
            p = span.first[0] * unit
            return (table[p] if p < len(table) else self._rope_one(p)).view(1, 1, 1, -1)
        positions = span.positions(table.device) * unit
        return (table[positions] if last < len(table) else self._rope(positions))[:, :, None]

    def _rope(self, positions: torch.Tensor) -> torch.Tensor:
        """Rotations past the table: rolling decoding (model/cache.py) goes on past the context."""
        cfg = self.config
        return rope_at(positions, cfg.head_dim, cfg.rope_theta).to(self.rope_rotation.device)

    def _rope_one(self, position: int) -> torch.Tensor:
        """One position's rotation past the table. A decoding step asks for the same few positions
        once per stack and cross block; computing one costs more than the attention it feeds, so the
        last few are kept (a bounded dict, so memory stays flat however long generation runs)."""
        cache = self._rope_recent
        rotation = cache.get(position)
        if rotation is None:
            if len(cache) >= 64:
                cache.clear()
            rotation = cache[position] = self._rope(torch.tensor(position))
        return rotation

    @staticmethod
    def _mask(span: Span, unit: int, key_step: int, length: int, window: int, lo: int = 0) -> Mask:
        """Attention of the span's tokens (ending at (first + i) * unit) over keys lo .. length - 1,
        key j ending at j * key_step, within `window` (0: none; scales.may_read). None when one query
        reads exactly its visible keys, CAUSAL for square self-attention from position 0, Local for a
        window over tokens that start at one position in every row (no n x m mask; a call that extends
        a cached prefix too, or its mask would grow with its length times the keys it reads)."""
        if window and (max(span.first) + span.n - 1) * unit < window:
            window = 0  # every query's window reaches back to position 0: the same as none
        if window and span.n > 1 and len(set(span.first)) == 1 and lo * key_step % unit == 0:
            # key lo ends at byte lo * key_step: the queries sit `offset` of their steps after it
            return Local(window, unit, key_step, span.first[0] - lo * key_step // unit)
        if span.n == 1 and len(span.rows) == 1:
            end = span.first[0] * unit
            first_visible = max(0, (end - window) // key_step + 1) if window else 0
            if (first_visible, end // key_step + 1) == (lo, length):
                return None
        if not window and unit == key_step and not any(span.first) and length == span.n:
            return CAUSAL
        return visible(span.positions(None) * unit, key_step, length - lo, window, lo)

    def _window(self, k: int) -> int:
        """Bytes back that queries of a scale of factor k attend (ModelConfig's windows; 0: all)."""
        return self.config.attention_window if k == 1 else self.config.coarse_window

    def gates(self, ups: Sequence[torch.Tensor], stacked: torch.Tensor | None = None) -> torch.Tensor:
        """The fusion's per-byte weights of the scales (R, T, n_scales), summing to 1; `stacked`:
        the scales side by side (R, T, S*d), when the caller has them."""
        if self.fusion is None:  # one scale: nothing to weigh
            return ups[0].new_ones(*ups[0].shape[:-1], 1)
        return torch.softmax(self.fusion(torch.cat(list(ups), -1) if stacked is None else stacked), -1)

    def _fuse(self, ups: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-byte softmax gate over the scales, all at byte resolution: (fused (R, T, d), gates)."""
        if self.fusion is None:
            return ups[0], self.gates(ups)
        stacked = torch.cat(list(ups), -1)  # (R, T, S*d): the scales side by side, also their (S, d) stack
        gates = self.gates(ups, stacked)  # (R, T, S)
        R, T, S = gates.shape
        # weighted sum over the scales (a bmm of R T (1, S) x (S, d) products ran 2x slower at prefill)
        fused = (gates.reshape(R * T, S, 1) * stacked.view(R * T, S, -1)).sum(1)  # (R T, d)
        return fused.view(R, T, -1), gates

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """The final norm and the LM head, tied with the byte embedding: logits (..., V) from (..., d)."""
        w = packed(
            self.norm_f,
            lambda: Dense(
                (self.tok_emb.weight * self.norm_f.weight).t(), self.tok_emb.weight.new_zeros(self.config.vocab_size)
            ),
            params=[self.tok_emb.weight, self.norm_f.weight],
        )
        flat = h.reshape(-1, h.shape[-1])
        return normed(flat, inv_rms(flat, self.norm_f.eps), w).view(*h.shape[:-1], -1)

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, **options: Any) -> torch.Tensor:
        """Prompt plus continuation, (B, T + new): `generation.generate.generate(self, idx, **options)`,
        whose keywords are the AXL card's (max_new_tokens, temperature (0: greedy), top_k, top_p,
        repetition_penalty, seed, generator, stop_at_eos; defaults from GENERATION_DEFAULTS).

        Sequences that reach EOS are padded with EOS until every sequence has stopped.
        """
        from multiscale_transformer.generation.generate import generate  # generation/ builds on model/

        return generate(self, idx, **options)

    @classmethod
    def from_pretrained(cls, path: str | Path, map_location: str | torch.device = "cpu") -> MultiScaleTransformer:
        """Load a model directory (config.json + model.safetensors) or a `.pt` checkpoint."""
        config, state, source = read_pretrained(path, map_location)
        model = cls(config)
        load_weights(model, state, source)
        return model.eval()

    def save_pretrained(self, directory: str | Path, **extra: Any) -> Path:
        """Write config.json, generation_config.json, model.safetensors and model.pt into directory."""
        return save_model(self, directory, **extra)


def _sub(values: Sequence[int], picks: list[int]) -> list[int]:
    return [values[i] for i in picks]


def _pick(x: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """Rows `rows` (ascending) of x; x itself when that is all of them."""
    return x if len(rows) == x.shape[0] else x[_index(rows)]


def _index(values: list[int]) -> torch.Tensor:
    return torch.tensor(values)


def _check_memory(cfg: ModelConfig) -> None:
    """Refuse, in one line, a config whose weights alone would not fit in this machine's memory."""
    need = memory_bytes(cfg)
    try:
        have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system: let the allocator decide
        return
    if need > have:
        raise UserError(
            f"config: this model needs {need / 1e9:.1f} GB for its weights and RoPE table "
            f"(d_model {cfg.d_model}, d_ff {cfg.d_ff}, max_seq_len {cfg.max_seq_len}); "
            f"this machine has {have / 1e9:.1f} GB"
        )
