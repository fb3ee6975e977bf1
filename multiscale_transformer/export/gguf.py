"""The fine-scale path as a llama-architecture GGUF file: tensor-name table, tensor types, writer calls.

Byte embedding -> fine stack -> final RMSNorm -> head tied to the embedding is a plain llama model:
pre-norm RMSNorm blocks, bias-free attention with RoPE on adjacent pairs (llama.cpp's layout, so
q/k need no permutation) and a SwiGLU feed-forward. The output tensor is left out, which llama.cpp
reads as "tied to token_embd".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from multiscale_transformer.atomic import atomic_path
from multiscale_transformer.errors import UserError
from multiscale_transformer.export.vocab import byte_vocab
from multiscale_transformer.model.vocab import BOS_ID, EOS_ID, FIM_IDS

if TYPE_CHECKING:
    import torch

    from multiscale_transformer.model.config import ModelConfig
    from multiscale_transformer.model.model import MultiScaleTransformer

# What gguf-py writes itself; "q4_k_m" goes through llama.cpp's quantizer (export/quantize.py).
GGUF_PY_OUTTYPES = ("f32", "f16", "q8_0", "q4_0")
OUTTYPES = (*GGUF_PY_OUTTYPES, "q4_k_m")

# Our names inside stacks.0.<i>. -> llama.cpp's names inside blk.<i>. (SwiGLU: w1 up, w3 gate, w2 down).
BLOCK_TENSORS = {
    "attn_norm.weight": "attn_norm.weight",
    "attn.wq.weight": "attn_q.weight",
    "attn.wk.weight": "attn_k.weight",
    "attn.wv.weight": "attn_v.weight",
    "attn.wo.weight": "attn_output.weight",
    "ffn_norm.weight": "ffn_norm.weight",
    "ffn.w1.weight": "ffn_up.weight",
    "ffn.w3.weight": "ffn_gate.weight",
    "ffn.w2.weight": "ffn_down.weight",
}
TOP_TENSORS = {"tok_emb.weight": "token_embd.weight", "norm_f.weight": "output_norm.weight"}


@dataclass(frozen=True)
class WrittenTensor:
    name: str
    shape: tuple[int, ...]
    type_name: str  # GGML type, e.g. "Q4_0"


def exported_context(cfg: ModelConfig) -> int:
    """The context the GGUF states: the model's, or its byte-level attention window when it has one.
    The llama architecture has no sliding window, and within one window the fine path computes
    exactly what it computes in the full model."""
    return min(cfg.max_seq_len, cfg.attention_window or cfg.max_seq_len)


def fine_path_tensors(model: MultiScaleTransformer) -> Iterator[tuple[str, torch.Tensor]]:
    """(GGUF name, tensor) for every parameter the fine-only forward uses, in llama.cpp's order."""
    state = model.state_dict()
    yield TOP_TENSORS["tok_emb.weight"], state["tok_emb.weight"]
    for i in range(model.config.scale_depths[0]):  # the fine stack
        for ours, theirs in BLOCK_TENSORS.items():
            yield f"blk.{i}.{theirs}", state[f"stacks.0.{i}.{ours}"]
    yield TOP_TENSORS["norm_f.weight"], state["norm_f.weight"]


def tensor_type(name: str, shape: tuple[int, ...], outtype: str) -> str:
    """The GGML type a tensor is stored in for `outtype` (one of GGUF_PY_OUTTYPES)."""
    import gguf

    if outtype == "f32" or len(shape) == 1:
        return "F32"  # llama.cpp keeps norms (1-D) in F32 whatever the file type
    if outtype == "f16":
        return "F16"
    wanted = "Q8_0" if outtype == "q8_0" else "Q4_0"
    if name == "token_embd.weight":
        # Tied: this is also the output projection, which llama.cpp's own quantizer keeps at
        # higher precision than the body; Q8_0 is the closest type gguf-py can write.
        wanted = "Q8_0"
    block_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[wanted]][0]
    # Block quants pack whole rows of `block_size` values; rows of another length stay F16.
    return wanted if shape[-1] % block_size == 0 else "F16"


def _encode_tensor(array: np.ndarray, type_name: str) -> tuple[np.ndarray, object]:
    """The bytes gguf-py stores and the raw GGML type to pass along (None for plain F32/F16)."""
    import gguf

    if type_name == "F32":
        return array.astype(np.float32), None
    if type_name == "F16":
        return array.astype(np.float16), None
    qtype = gguf.GGMLQuantizationType[type_name]
    return gguf.quants.quantize(array.astype(np.float32), qtype), qtype


def _file_type(outtype: str) -> int:
    import gguf

    return {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
        "q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
    }[outtype]


def import_gguf() -> None:
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise UserError('GGUF export needs the gguf package: pip install "multiscale-transformer[gguf]"') from None


def write_gguf(model: MultiScaleTransformer, path: Path, outtype: str, name: str) -> list[WrittenTensor]:
    """Write the fine path to `path` (atomically) in F32, F16, Q8_0 or Q4_0; returns what was written."""
    import_gguf()
    import gguf

    if outtype not in GGUF_PY_OUTTYPES:
        raise UserError(f"gguf-py writes {', '.join(GGUF_PY_OUTTYPES)}; got {outtype!r}")
    cfg = model.config
    written: list[WrittenTensor] = []
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(tmp, "llama")
        writer.add_name(name)
        writer.add_context_length(exported_context(cfg))
        writer.add_embedding_length(cfg.d_model)
        writer.add_block_count(cfg.scale_depths[0])
        writer.add_feed_forward_length(cfg.d_ff)
        writer.add_head_count(cfg.n_heads)
        writer.add_head_count_kv(cfg.n_heads)
        writer.add_layer_norm_rms_eps(cfg.norm_eps)
        writer.add_rope_freq_base(cfg.rope_theta)
        writer.add_rope_dimension_count(cfg.head_dim)
        writer.add_vocab_size(cfg.vocab_size)
        writer.add_file_type(_file_type(outtype))
        vocab = byte_vocab(cfg.vocab_size, cfg.fim)
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre("default")
        writer.add_token_list(vocab.tokens)
        writer.add_token_types(vocab.types)
        writer.add_token_merges(vocab.merges)
        writer.add_bos_token_id(BOS_ID)
        writer.add_eos_token_id(EOS_ID)
        if cfg.fim:  # llama.cpp's /infill and FIM templates find the sentinels by these keys
            for key, token in zip(("pre", "suf", "mid"), FIM_IDS, strict=True):
                writer.add_uint32(f"tokenizer.ggml.fim_{key}_token_id", token)
        # Our prompts carry no BOS (axl generate and the server encode plain bytes); keep llama.cpp the same.
        writer.add_add_bos_token(False)
        writer.add_add_eos_token(False)
        for tensor_name, tensor in fine_path_tensors(model):
            array = tensor.detach().to("cpu").float().numpy()
            type_name = tensor_type(tensor_name, array.shape, outtype)
            data, raw_dtype = _encode_tensor(array, type_name)
            writer.add_tensor(tensor_name, data, raw_dtype=raw_dtype)
            written.append(WrittenTensor(tensor_name, tuple(array.shape), type_name))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return written


def file_tensor_types(path: Path) -> str:
    """The tensor types a GGUF file holds, e.g. "Q4_0 x14, F32 x5, Q8_0 x1", read back from the file."""
    import gguf

    counts = Counter(t.tensor_type.name for t in gguf.GGUFReader(path).tensors)
    return ", ".join(f"{k} x{v}" for k, v in counts.most_common())
