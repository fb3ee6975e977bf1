"""MultiScaleTransformer: three byte-level encoder stacks (1x, 2x, 4x), cross-scale attention, gated fusion."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from multiscale_transformer.errors import UserError
from multiscale_transformer.model import step
from multiscale_transformer.model.attention import Attention
from multiscale_transformer.model.cache import CacheView, PassCaches, StepCaches
from multiscale_transformer.model.config import GENERATION_DEFAULTS, ModelConfig, memory_bytes
from multiscale_transformer.model.io import load_weights, read_pretrained, save_model
from multiscale_transformer.model.layers import RMSNorm, SwiGLU, rope_tables
from multiscale_transformer.model.scales import Downsample, Upsample, cross_mask, n_tokens, span_ends

if TYPE_CHECKING:
    from collections.abc import Sequence

Rope = torch.Tensor  # complex rotations (T, hd/2), see layers.apply_rope


class ScaleTrace(NamedTuple):
    """A forward pass with its intermediate scale states (`forward_with_scales`)."""

    logits: torch.Tensor  # (B, T, V)
    gates: torch.Tensor  # (B, T, n_scales): the fusion's weights
    fine: torch.Tensor  # (B, T, d): the fine stack's output, before any cross-scale block
    upsampled: list[torch.Tensor]  # every scale's final states at byte resolution, (B, T, d) each


class Block(nn.Module):
    """Pre-norm transformer layer of one scale's stack: causal self-attention, then SwiGLU."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg.d_model, cfg.n_heads, cfg.bias, cfg.dropout)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.ffn = SwiGLU(cfg.d_model, cfg.d_ff, cfg.bias, cfg.dropout)

    def forward(self, x: torch.Tensor, rope: Rope, cache: CacheView | None = None) -> torch.Tensor:
        """Causal self-attention over all of x (training, the decoder's prefill, which keeps the
        keys and values in `cache`); decoding steps run step.block_step instead."""
        h = self.attn_norm(x)
        x = x + self.attn(h, h, rope, rope, causal=True, cache=cache)
        return x + self.ffn(self.ffn_norm(x))


class CrossBlock(nn.Module):
    """One directed cross-scale block: the target scale attends to a source scale, then its own FFN."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.query_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.source_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.attn = Attention(cfg.d_model, cfg.n_heads, cfg.bias, cfg.dropout)
        self.ffn_norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.ffn = SwiGLU(cfg.d_model, cfg.d_ff, cfg.bias, cfg.dropout)

    def forward(
        self, x: torch.Tensor, src: torch.Tensor, rope_q: Rope, rope_k: Rope, mask: torch.Tensor
    ) -> torch.Tensor:
        return self.attend(x, *self.source_kv(src, rope_k), rope_q, mask)

    def source_kv(self, src: torch.Tensor, rope_k: Rope) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the source scale's tokens: what the decoder caches per directed pair."""
        return self.attn.project_kv(self.source_norm(src), rope_k)

    def attend(
        self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rope_q: Rope, mask: torch.Tensor
    ) -> torch.Tensor:
        x = x + self.attn.attend(self.query_norm(x), k, v, rope_q, mask=mask)
        return x + self.ffn(self.ffn_norm(x))


class MultiScaleTransformer(nn.Module):
    """The AXL multi-scale byte transformer; forward(idx) returns logits (B, T, vocab_size).

    Strictly causal: logits at byte t depend on bytes 0..t only (see scales.py for the rule).
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
        self.down = nn.ModuleList(nn.Identity() if k == 1 else Downsample(cfg.d_model, k, cfg.bias) for k in factors)
        self.stacks = nn.ModuleList(nn.ModuleList(Block(cfg) for _ in range(n)) for n in cfg.scale_depths)
        # Directed (source, target) scale pairs with a cross block (ModelConfig.cross_pairs), in a fixed order.
        self.pairs = cfg.directed_pairs
        self.cross = nn.ModuleList(
            nn.ModuleList(CrossBlock(cfg) for _ in self.pairs) for _ in range(cfg.n_cross_attn_layers)
        )
        self.up = nn.ModuleList(nn.Identity() if k == 1 else Upsample(cfg.d_model, k, cfg.bias) for k in factors)
        self.fusion = nn.Linear(cfg.n_scales * cfg.d_model, cfg.n_scales, bias=cfg.bias) if cfg.n_scales > 1 else None
        self.post = nn.ModuleList(Block(cfg) for _ in range(cfg.post_fusion_layers))
        self.norm_f = RMSNorm(cfg.d_model, cfg.norm_eps)
        rotation = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_rotation", rotation, persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        std = self.config.init_std
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
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

    def rope(self, positions: torch.Tensor) -> Rope:
        return self.rope_rotation[positions]

    def _check_input(self, idx: torch.Tensor) -> None:
        if idx.dim() != 2:
            raise ValueError(f"idx must have shape (batch, time), got {tuple(idx.shape)}")
        T = idx.shape[1]
        if not 1 <= T <= self.config.max_seq_len:
            raise ValueError(f"sequence length {T} is outside 1..max_seq_len ({self.config.max_seq_len})")

    def forward(self, idx: torch.Tensor, fine_only: bool = False) -> torch.Tensor:
        """Logits (B, T, vocab) for byte ids idx (B, T).

        fine_only=True runs the byte embedding, the fine stack, the final norm and the tied head
        alone: exactly the path a llama-architecture GGUF export computes.
        """
        self._check_input(idx)
        x = self.emb_dropout(self.tok_emb(idx))  # (B, T, d)
        if fine_only:
            return self.head(self._encode(0, x))
        return self.head(self._multiscale(x, self._encode(0, x)))

    def forward_with_fine(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(full logits, fine-only logits) sharing one pass of the fine stack: for an auxiliary loss
        that trains the fine path, the part a GGUF export carries, as a model of its own."""
        self._check_input(idx)
        x = self.emb_dropout(self.tok_emb(idx))  # (B, T, d)
        fine = self._encode(0, x)
        return self.head(self._multiscale(x, fine)), self.head(fine)

    def forward_with_gates(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, T, V), the fusion gate (B, T, n_scales)): the forward pass, and at every
        position the fusion's weight of each scale (a single-scale model: all 1)."""
        trace = self.forward_with_scales(idx)
        return trace.logits, trace.gates

    def forward_with_scales(self, idx: torch.Tensor) -> ScaleTrace:
        """The forward pass with what inspection shows of the scales (evaluation/inspect.py)."""
        self._check_input(idx)
        x = self.emb_dropout(self.tok_emb(idx))
        fine = self._encode(0, x)
        ups = self.upsampled(self.scale_states(x, fine), x.shape[1])
        gates = self.gates(ups)
        return ScaleTrace(self.head(self.post_fusion(self._mix(gates, ups))), gates, fine, ups)

    def _multiscale(self, x: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        """Coarser stacks, cross-scale blocks, fusion and post-fusion layers on top of the fine
        stack's output: (B, T, d), what the head reads."""
        return self.post_fusion(self.fuse(self.upsampled(self.scale_states(x, fine), x.shape[1])))

    def upsampled(self, hs: Sequence[torch.Tensor], n_bytes: int) -> list[torch.Tensor]:
        """Every scale's token states (`scale_states`) at byte resolution, (B, T, d) each, finest first."""
        factors = self.config.downsample_factors
        return [up(h, n_bytes) if k > 1 else h for up, h, k in zip(self.up, hs, factors, strict=True)]

    def post_fusion(self, h: torch.Tensor, caches: PassCaches | None = None) -> torch.Tensor:
        """The post-fusion layers over the fused byte states (B, T, d); their caches are those of
        stack index n_scales, so the decoder's prefill keeps them like any scale's."""
        return self._run(self.post, self.config.n_scales, h, caches)

    def scale_states(
        self, x: torch.Tensor, fine: torch.Tensor | None = None, caches: PassCaches | None = None
    ) -> list[torch.Tensor]:
        """Every scale's token states (B, n_s, d) after its own stack and the cross-scale blocks.

        The one description of the multi-scale wiring: the forward pass uses it, and so does the
        cached decoder's prefill, which passes `caches` to keep every key and value it computes.
        x: byte embeddings (B, T, d); fine: the fine stack's output when the caller already has it.
        """
        T = x.shape[1]
        factors = self.config.downsample_factors
        hs = [fine if fine is not None else self._encode(0, x, caches)]  # the fine scale reads the bytes as they are
        pooled = self._pooled(x, hs[0])
        if caches is not None:
            caches.keep_pooled(pooled)
        hs += [self._encode(i, self.down[i](pooled), caches) for i in range(1, len(factors))]
        ends = [span_ends(n_tokens(T, k), k, x.device) for k in factors]
        for li, layer in enumerate(self.cross):
            snapshot = list(hs)
            for pi, ((s, t), block) in enumerate(zip(self.pairs, layer, strict=True)):
                k, v = block.source_kv(snapshot[s], self.rope(ends[s]))
                if caches is not None:
                    k, v = caches.cross_view(li, pi, snapshot[s].shape[1]).update(k, v)
                mask = cross_mask(ends[t], ends[s])  # (n_t, n_s)
                hs[t] = block.attend(hs[t], k, v, self.rope(ends[t]), mask)
        return hs

    def step_states(
        self, x: torch.Tensor, positions: list[int], caches: StepCaches, w: step.StepWeights
    ) -> dict[int, tuple[list[int], torch.Tensor]]:
        """`scale_states` for one new byte per row: the KV-cached decoder's step.

        x: the new bytes' embeddings (R, d), at byte positions `positions` of their rows. The same
        wiring token by token: a row forms a token of scale k when its new byte's position is
        divisible by k (that byte ends the token's span, scales.py); the new tokens run through their
        stacks, then through the cross blocks, where they attend to every cached source token (all
        of which end no later). Returns {scale: (the rows that formed a token, their states (R_s, d))}.
        Which rows form tokens, and where, is Python-int bookkeeping; the blocks run as step.py's
        one-token implementations on w, this model's `step.step_weights`, and one row takes
        unmasked attention.
        """
        factors = self.config.downsample_factors
        new: dict[int, tuple[list[int], torch.Tensor]] = {}
        for s, k in enumerate(factors):
            rows = [i for i, pos in enumerate(positions) if pos % k == 0]
            if not rows:
                continue
            down = w.down[s]
            h = x if down is None else step.linear(caches.byte_window(rows, k).flatten(1), down)  # pool k bytes
            j = [positions[i] // k for i in rows]  # token index = its position in this scale's stack
            h = self._step_stack(w.stacks[s], s, h, rows, j, caches)
            new[s] = (rows, h)
            if s == 0:  # before any coarser scale pools its window, which ends at this byte
                caches.keep_pooled(self._pooled(x, h))
        for li, layer in enumerate(w.cross):
            snapshot = dict(new)
            for pi, ((s, t), block) in enumerate(zip(self.pairs, layer, strict=True)):
                k = factors[s]
                if s in snapshot:  # this step's source tokens join the pair's cache
                    rows_s, src = snapshot[s]
                    j_s = [positions[i] // k for i in rows_s]
                    keys = step.cross_source(block, src, self.row_rope([j * k for j in j_s]))  # rope at span ends
                    caches.cross_view(li, pi, rows_s, j_s, 0).write(*keys)
                if t not in new:
                    continue
                rows_t, h = new[t]
                count = [positions[i] // k + 1 for i in rows_t]  # source tokens so far, all ending by now
                view = caches.cross_view(li, pi, rows_t, [c - 1 for c in count], max(count))
                rope_q = self.row_rope([positions[i] for i in rows_t])
                h = step.cross_attend(block, h, *view.read(), rope_q, lengths_mask(count, x.device))
                new[t] = (rows_t, h)
        return new

    def _pooled(self, x: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        """What the coarser scales pool: the byte embeddings x or the fine stack's output (before the
        cross blocks), by ModelConfig.coarse_input. Both are causal: position t depends on bytes <= t."""
        return fine if self.config.coarse_input == "fine" else x

    def token_slots(self, scale: int, h: torch.Tensor, w: step.StepWeights) -> torch.Tensor:
        """A coarse token's final states h (R, d) upsampled to the k bytes it serves: (R, k, d)."""
        up = w.up[scale]
        assert up is not None, "the finest scale has no upsampling"
        return step.linear(h, up).view(h.shape[0], self.config.downsample_factors[scale], -1)

    def byte_logits(
        self,
        fine: torch.Tensor,
        coarse: Sequence[torch.Tensor],
        positions: list[int],
        caches: StepCaches,
        w: step.StepWeights,
    ) -> torch.Tensor:
        """Logits (R, V) of one byte per row, at byte `positions`, from its fine state (R, d) and, per
        coarser scale, the upsampling slot (R, d) its offset reads: the fusion, the post-fusion layers
        (against stack n_scales's caches) and the head of the forward pass."""
        h = step.fuse(w, [fine, *coarse])
        h = self._step_stack(w.stacks[-1], self.config.n_scales, h, list(range(len(positions))), positions, caches)
        return step.head(w, h)

    def _step_stack(
        self,
        stack: list[step.BlockWeights],
        index: int,
        h: torch.Tensor,
        rows: list[int],
        j: list[int],
        caches: StepCaches,
    ) -> torch.Tensor:
        """One new token per row in `rows` (R, d), at token index j, through stack `index`'s layers."""
        if not stack:
            return h
        rope, mask = self.row_rope(j), lengths_mask([i + 1 for i in j], h.device)
        for layer, block in enumerate(stack):
            h = step.block_step(block, h, rope, caches.self_view(index, layer, rows, j, max(j) + 1), mask)
        return h

    def row_rope(self, positions: list[int]) -> Rope:
        """Per-row rotations (R, 1, hd/2) that broadcast over heads (step.rotate)."""
        if len(positions) == 1:
            return self.rope_rotation[positions[0]].view(1, 1, -1)
        return self.rope_rotation[torch.tensor(positions, device=self.rope_rotation.device)][:, None]

    def _encode(self, scale: int, x: torch.Tensor, caches: PassCaches | None = None) -> torch.Tensor:
        """One scale's self-attention stack over its tokens (positions = token index)."""
        return self._run(self.stacks[scale], scale, x, caches)

    def _run(self, stack: nn.ModuleList, index: int, x: torch.Tensor, caches: PassCaches | None) -> torch.Tensor:
        """Self-attention stack `index` (a scale's, or n_scales: the post-fusion layers) over all of x."""
        if not len(stack):
            return x
        rope = self.rope(torch.arange(x.shape[1], device=x.device))
        for layer, block in enumerate(stack):
            x = block(x, rope, cache=caches.self_view(index, layer, x.shape[1]) if caches is not None else None)
        return x

    def fuse(self, ups: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-byte softmax gate over the scales, all at byte resolution: (B, T, d)."""
        return self._mix(self.gates(ups), ups)

    def gates(self, ups: Sequence[torch.Tensor]) -> torch.Tensor:
        """The fusion's per-byte weights of the scales (B, T, n_scales), summing to 1."""
        if self.fusion is None:
            return ups[0].new_ones(*ups[0].shape[:-1], 1)
        return torch.softmax(self.fusion(torch.cat(list(ups), dim=-1)), dim=-1)

    @staticmethod
    def _mix(gates: torch.Tensor, ups: Sequence[torch.Tensor]) -> torch.Tensor:
        if len(ups) == 1:  # one scale: nothing to weigh
            return ups[0]
        return torch.einsum("bts,sbtd->btd", gates, torch.stack(list(ups)))

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """The final norm and the LM head: logits (..., V) from hidden states (..., d)."""
        return F.linear(self.norm_f(h), self.tok_emb.weight)  # tied with the byte embedding

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int = GENERATION_DEFAULTS["max_new_tokens"],
        temperature: float = GENERATION_DEFAULTS["temperature"],
        top_k: int | None = GENERATION_DEFAULTS["top_k"],
        top_p: float | None = GENERATION_DEFAULTS["top_p"],
        repetition_penalty: float = GENERATION_DEFAULTS["repetition_penalty"],
        seed: int | None = None,
        generator: torch.Generator | None = None,
        stop_at_eos: bool = True,
    ) -> torch.Tensor:
        """Prompt plus continuation, (B, T + new). temperature 0 means greedy.

        Sequences that reach EOS are padded with EOS until every sequence has stopped.
        """
        from multiscale_transformer.generation.generate import generate as _generate

        return _generate(
            self,
            idx,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            seed=seed,
            generator=generator,
            stop_at_eos=stop_at_eos,
        )

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


def lengths_mask(lengths: list[int], device: torch.device) -> torch.Tensor | None:
    """(R, 1, 1, L) mask for one query per row that may see its first lengths[r] keys; None for one
    row (it reads exactly its own keys), which takes SDPA's faster unmasked path."""
    if len(lengths) == 1:
        return None
    n = torch.tensor(lengths, device=device)
    return (torch.arange(max(lengths), device=device)[None] < n[:, None])[:, None, None]


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
