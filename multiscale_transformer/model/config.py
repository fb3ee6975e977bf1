"""ModelConfig: the AXL hyper-parameters, their validation and the named presets.

Two kinds of preset, told apart by name:

- A plain size name is AXL's layout at that size: the ModelConfig defaults (the coarse scales pool the
  byte embeddings, cross blocks between every pair of scales, the head reads the fusion, no FIM).
  `comment` ... `code-1b` are the AXL card's published models with the parameter counts it publishes
  (PUBLISHED_PARAMETERS; the card's spellings such as "AXL-Micro-Lion" name them too), so published
  checkpoints load unchanged. `tiny` (the tests' fixture) and `mini` (the bundled model's size) are
  ours, in the same layout.
- A size name with a layout suffix is a layout `axl train` trains, named after the docs/quality.md
  sweep that adopted it: `tiny-coarse20` (the coarse scales pool the fine stack's output, Hourglass-style;
  `axl train`'s default) and `mini-post20` (that plus cross blocks from the coarse scales into the
  bytes only, deeper coarse stacks and byte-level layers after the fusion: the bundled model's layout).
  Both are trained with fill-in-the-middle (`fim`), which sets `axl train --fim-rate`'s default.

`axl train --preset X`, `axl info --preset X`, bench/quality.py's `ms` arm and `ModelConfig.from_name(X)`
build the same model (tests/test_config.py). This module imports no torch so that the CLI can list
presets and validate flags cheaply.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from multiscale_transformer.errors import UserError
from multiscale_transformer.model.vocab import BOS_ID, EOS_ID, VOCAB_SIZE

# The published AXL generation_config.json: the one source of the sampling defaults, read by
# SamplingParams, model.generate, `axl generate`, the evaluator's probe, the server and the GGUF export.
GENERATION_DEFAULTS: dict[str, Any] = {
    "max_new_tokens": 256,
    "temperature": 0.8,
    "top_k": 40,
    "top_p": 0.9,
    "repetition_penalty": 1.1,
    "do_sample": True,
    "bos_token_id": BOS_ID,
    "eos_token_id": EOS_ID,
}
COARSE_INPUTS = ("embeddings", "fine")

# Keys that published AXL config.json files carry but that are not hyper-parameters.
_PUBLISHED_EXTRA_KEYS = {
    "model_type",
    "architectures",
    "num_parameters",
    "training_results",
    "torch_dtype",
    "transformers_version",
}


@dataclass
class ModelConfig:
    """Hyper-parameters of a multi-scale byte transformer (field names as in AXL's config.json)."""

    vocab_size: int = 258  # 256 bytes, BOS and EOS (model/vocab.py); the FIM sentinels reuse bytes 0xF8-0xFA
    d_model: int = 256  # width of every scale's token states
    n_heads: int = 4  # attention heads per layer; head_dim = d_model / n_heads, even for RoPE
    d_ff: int = 688  # SwiGLU hidden width
    n_layers_per_scale: int = 3  # self-attention layers of each scale's stack (unless layers_per_scale)
    n_cross_attn_layers: int = 1  # rounds of cross-scale blocks after the stacks
    max_seq_len: int = 256  # bytes of context: the longest input, the RoPE table's length
    dropout: float = 0.0  # on embeddings, attention and SwiGLU outputs while training
    rope_theta: float = 10000.0  # RoPE base frequency
    downsample_factors: list[int] = field(default_factory=lambda: [1, 2, 4])  # bytes per token of each scale
    norm_eps: float = 1e-5  # RMSNorm epsilon
    init_std: float = 0.02  # normal init of weights (projections into the residual stream shrink with depth)
    # What the coarser scales pool, bytes ending at each token's span end: "embeddings" (AXL) or "fine" (Hourglass).
    coarse_input: str = "embeddings"
    # Layers of each scale's stack, finest first, e.g. [2, 3, 3]: a coarse layer costs 1/k per byte. None: AXL's.
    layers_per_scale: list[int] | None = None
    # Byte-level layers after the fusion (Hourglass's after upsampling: every byte attends to the fused context).
    post_fusion_layers: int = 0
    # The (source, target) scale pairs with a cross block, e.g. [[1, 0], [2, 0]]; None: every pair (AXL).
    cross_pairs: list[list[int]] | None = None
    # Bytes back that byte-level queries attend (fine stack, cross blocks into it, post-fusion layers); 0: all.
    attention_window: int = 0
    # Bytes back that the coarser scales' queries attend (their stacks, cross blocks into them); 0: all.
    coarse_window: int = 0
    # Trained with the FIM sentinels (model/vocab.py): not architecture, but it says whether a server may infill.
    fim: bool = False

    def __post_init__(self) -> None:
        factors = self.downsample_factors
        if not isinstance(factors, list | tuple) or not all(_is_int(k) for k in factors):
            raise UserError(f"config: downsample_factors must be a list of integers such as [1, 2, 4], got {factors!r}")
        self.downsample_factors = [int(k) for k in factors]
        for name in ("dropout", "rope_theta", "norm_eps", "init_std"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise UserError(f"config: {name} must be a number, got {value!r}")
        for name in ("fim",):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"config: {name} must be true or false, got {getattr(self, name)!r}")
        ints = ("vocab_size", "d_model", "n_heads", "d_ff", "n_layers_per_scale", "max_seq_len")
        for name in ints:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"config: {name} must be a positive integer, got {value!r}")
        if self.vocab_size < VOCAB_SIZE:
            raise UserError(
                f"config: vocab_size must be at least {VOCAB_SIZE} (256 bytes + BOS + EOS), got {self.vocab_size}"
            )
        if self.d_model % self.n_heads:
            raise UserError(
                f"config: d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}); "
                f"try n_heads in {_divisors(self.d_model)}"
            )
        if self.head_dim % 2:
            raise UserError(
                f"config: head dimension d_model/n_heads = {self.head_dim} must be even for RoPE; "
                "change d_model or n_heads"
            )
        if not isinstance(self.n_cross_attn_layers, int) or self.n_cross_attn_layers < 0:
            raise UserError(f"config: n_cross_attn_layers must be an integer >= 0, got {self.n_cross_attn_layers!r}")
        factors = self.downsample_factors
        if not factors or factors[0] != 1:
            raise UserError(f"config: downsample_factors must start with 1 (the byte scale), got {factors}")
        if any(b <= a for a, b in itertools.pairwise(factors)):
            raise UserError(f"config: downsample_factors must be strictly increasing, got {factors}")
        if any(k > self.max_seq_len for k in factors):
            raise UserError(
                f"config: every downsample factor must be <= max_seq_len ({self.max_seq_len}), got {factors}"
            )
        depths = self.layers_per_scale
        if depths is not None:
            if (
                not isinstance(depths, list | tuple)
                or len(depths) != len(factors)
                or not all(_is_int(n) and n >= 1 for n in depths)
            ):
                wanted = f"one positive integer per scale ({len(factors)})"
                raise UserError(f"config: layers_per_scale must list {wanted}, got {depths!r}")
            self.layers_per_scale = [int(n) for n in depths]
        if not _is_int(self.post_fusion_layers) or self.post_fusion_layers < 0:
            raise UserError(f"config: post_fusion_layers must be an integer >= 0, got {self.post_fusion_layers!r}")
        self.post_fusion_layers = int(self.post_fusion_layers)
        if self.cross_pairs is not None:
            self.cross_pairs = _check_pairs(self.cross_pairs, len(factors))
        if self.coarse_input not in COARSE_INPUTS:
            raise UserError(f"config: coarse_input must be one of {COARSE_INPUTS}, got {self.coarse_input!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise UserError(f"config: dropout must be in [0, 1), got {self.dropout}")
        if not float(self.rope_theta) > 0:
            raise UserError(f"config: rope_theta must be positive, got {self.rope_theta}")
        for name in ("attention_window", "coarse_window"):
            value = getattr(self, name)
            step = max(factors)  # a window covers whole tokens of every scale (attention.Local's blocks)
            if not _is_int(value) or value < 0 or value % step:
                raise UserError(f"config: {name} must be 0 (no window) or a multiple of {step} bytes, got {value!r}")
            setattr(self, name, int(value))
        if not float(self.norm_eps) > 0:
            raise UserError(f"config: norm_eps must be positive, got {self.norm_eps}")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def n_scales(self) -> int:
        return len(self.downsample_factors)

    @property
    def rolling(self) -> bool:
        """Every attention is windowed, so each logit depends on a bounded stretch of bytes before
        it: decoding runs on past the context on rolling caches (model/cache.py) instead of sliding."""
        return bool(self.attention_window) and (self.n_scales == 1 or bool(self.coarse_window))

    @property
    def widest_window(self) -> int:
        """The most bytes back any query of the model attends, when `rolling`."""
        return max(self.attention_window, self.coarse_window if self.n_scales > 1 else 0)

    @property
    def scale_depths(self) -> list[int]:
        """Self-attention layers per scale, finest first."""
        return list(self.layers_per_scale or [self.n_layers_per_scale] * self.n_scales)

    @property
    def directed_pairs(self) -> list[tuple[int, int]]:
        """The (source, target) scale pairs with a cross block, in the order the model builds them."""
        if self.cross_pairs is not None:
            return [(s, t) for s, t in self.cross_pairs]
        return [(s, t) for t in range(self.n_scales) for s in range(self.n_scales) if s != t]

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> ModelConfig:
        """A preset by name (e.g. "mini-post20", "micro", "AXL-Micro-Lion"), with optional field overrides."""
        return cls.from_dict({**PRESETS[preset_key(name)], **overrides})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Build from a dict such as a published config.json; non-hyper-parameter keys are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        if data.get("bias", False) is not False:  # AXL's config.json says "bias": false; nothing else is built
            raise UserError(
                f"config: bias must be false (AXL's linear layers have no biases, nor has llama-architecture GGUF), "
                f"got {data['bias']!r}"
            )
        unknown = set(data) - known - _PUBLISHED_EXTRA_KEYS - {"bias"}
        if unknown:
            raise UserError(f"config: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> ModelConfig:
        """The single-scale baseline: same width, one byte-level stack sized to equal parameters."""
        target = estimate_parameters(self)
        per_layer = _layer_params(self.d_model, self.d_ff)
        one = dataclasses.replace(
            self,
            downsample_factors=[1],
            n_layers_per_scale=1,
            layers_per_scale=None,
            post_fusion_layers=0,
            cross_pairs=None,
        )
        layers = max(1, round((target - estimate_parameters(one)) / per_layer) + 1)
        return dataclasses.replace(one, n_cross_attn_layers=0, n_layers_per_scale=layers)


def preset_key(name: str) -> str:
    """The PRESETS key a name means: itself, or for a published model the card's spelling ("AXL-Micro-Lion")."""
    key = name.lower()
    card = key.removeprefix("axl-").removesuffix("-lion")
    if key not in PRESETS and card in PUBLISHED_PARAMETERS:
        key = card
    if key not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return key


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and (isinstance(value, int) or (isinstance(value, float) and value.is_integer()))


def _check_pairs(pairs: Any, n_scales: int) -> list[list[int]]:
    """cross_pairs as a list of distinct [source, target] pairs of different scales in range."""

    def valid(pair: Any) -> bool:
        in_range = isinstance(pair, list | tuple) and all(_is_int(i) and 0 <= i < n_scales for i in pair)
        return in_range and len(pair) == 2 and pair[0] != pair[1]

    ok = isinstance(pairs, list | tuple) and all(valid(p) for p in pairs)
    checked = [[int(s), int(t)] for s, t in pairs] if ok else []
    if not ok or len({tuple(p) for p in checked}) != len(checked):
        raise UserError(
            "config: cross_pairs must list distinct [source, target] pairs of different scales "
            f"0..{n_scales - 1}, such as [[1, 0], [2, 0]]; got {pairs!r}"
        )
    return checked


def memory_bytes(cfg: ModelConfig) -> int:
    """What building the model allocates: float32 weights and the RoPE table (complex64, per position)."""
    return 4 * estimate_parameters(cfg) + 8 * cfg.max_seq_len * (cfg.head_dim // 2)


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, min(n, 64) + 1) if n % k == 0 and (n // k) % 2 == 0]


def _layer_params(d: int, d_ff: int) -> int:
    # attention q, k, v, o + SwiGLU w1, w3, w2 + two RMSNorm weights (bias-free)
    return 4 * d * d + 3 * d * d_ff + 2 * d


def estimate_parameters(cfg: ModelConfig) -> int:
    """Parameter count of MultiScaleTransformer(cfg) without building it (bias-free configs).

    The model test checks this against the real module so that the two cannot drift apart.
    """
    d, s = cfg.d_model, cfg.n_scales
    total = cfg.vocab_size * d + d  # tied byte embedding, final norm
    total += (sum(cfg.scale_depths) + cfg.post_fusion_layers) * _layer_params(d, cfg.d_ff)
    for k in cfg.downsample_factors[1:]:
        total += 2 * k * d * d  # learned downsampling (k*d -> d) and upsampling (d -> k*d)
    pairs = len(cfg.directed_pairs)
    # each directed cross block: q, k, v, o, a SwiGLU FFN, and three norms (query, source, ffn)
    total += cfg.n_cross_attn_layers * pairs * (4 * d * d + 3 * d * cfg.d_ff + 3 * d)
    if s > 1:
        total += s * d * s  # fusion gate: Linear(s*d -> s)
    return total


def load_config(path: str | Path) -> ModelConfig:
    """Read a config.json as the AXL repositories publish it (extra keys are accepted)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable JSON config ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(data).__name__}")
    try:
        return ModelConfig.from_dict(data)
    except TypeError as exc:
        raise UserError(f"{path}: {exc}") from None
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None


def _axl(d_model: int, n_heads: int, d_ff: int, layers: int, max_seq_len: int = 256) -> dict[str, Any]:
    """AXL's layout at one size: every other field keeps its ModelConfig default."""
    return {
        "d_model": d_model,
        "n_heads": n_heads,
        "d_ff": d_ff,
        "n_layers_per_scale": layers,
        "n_cross_attn_layers": 1,
        "max_seq_len": max_seq_len,
    }


_TINY = _axl(64, 2, 176, 1, max_seq_len=128)
# Sized for about an hour of a 2-core CPU (docs/pretrained.md).
_MINI = _axl(96, 2, 256, 2)
# coarse20 (docs/quality.md): pooling the fine stack's output measured 0.12-0.24 bits/byte better at
# 20 CPU-minutes. The trained layouts all have it, and FIM, whose rate cost at most 0.012 bits/byte
# left to right (docs/editors.md) and buys infilling.
_TRAINED: dict[str, Any] = {"coarse_input": "fine", "fim": True}
_MINI_POST20: dict[str, Any] = {
    **_MINI,
    **_TRAINED,
    "cross_pairs": [[1, 0], [2, 0]],
    "layers_per_scale": [2, 3, 3],
    "post_fusion_layers": 2,
}

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": _TINY,
    "mini": _MINI,
    # The post20 rule below measured worse at one layer per scale (tiny10, docs/quality.md), so tiny
    # keeps AXL's cross blocks: `axl train`'s default.
    "tiny-coarse20": {**_TINY, **_TRAINED},
    # post20 (docs/quality.md): ahead of its equal-parameter flat twin by 0.06-0.11 bits/byte at 20
    # CPU-minutes. For n layers per scale: only the coarse scales attend into the bytes, their stacks
    # n + 1 deep (a layer there costs 1/k per byte), n byte-level layers after the fusion. The
    # bundled model's layout (multiscale_transformer/pretrained/axl-mini/config.json).
    "mini-post20": _MINI_POST20,
    # mini-post20 read 8,192 bytes back (docs/context.md): bytes attend 256 back, the coarse scales
    # 1,024, so every attention is windowed and decoding rolls past the context. The same weights as
    # mini-post20 (windows and context change none): a trained one extends with
    # `axl train --init-from MODEL --context 8192 --config '{"attention_window": 256, "coarse_window": 1024}'`.
    "mini-post20-8k": {**_MINI_POST20, "max_seq_len": 8192, "attention_window": 256, "coarse_window": 1024},
    # The AXL card's family (KoinicLabs).
    "comment": _axl(192, 3, 512, 3),
    "chat": _axl(224, 4, 608, 3),
    "docs": _axl(224, 4, 608, 3),
    "secure": _axl(224, 4, 608, 4),
    "micro": _axl(256, 4, 688, 3),
    "testgen": _axl(256, 4, 688, 4),
    "refactor": _axl(288, 4, 768, 4),
    "reasoning": _axl(512, 4, 1376, 5),
    "300m": _axl(1024, 8, 2816, 6),
    "code-1b": _axl(1024, 16, 2752, 6),
}

# The parameter counts the AXL card publishes; ours are within 1% of them (README, tests/test_config.py).
PUBLISHED_PARAMETERS: dict[str, int] = {
    "comment": 7_182_144,
    "chat": 9_870_112,
    "docs": 9_870_112,
    "secure": 11_700_000,
    "micro": 12_800_000,
    "testgen": 15_174_400,
    "refactor": 19_098_720,
    "reasoning": 70_000_000,
    "300m": 322_000_000,
    "code-1b": 317_590_528,
}
