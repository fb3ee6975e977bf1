"""GGUF export without llama.cpp: the byte vocabulary, the tensor table read back, types, Modelfile, CLI errors.

test_gguf_llama.py runs the exported files in llama.cpp itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest

from multiscale_transformer.cli import main
from multiscale_transformer.errors import UserError
from multiscale_transformer.export.card import Measurement, fine_path_warning
from multiscale_transformer.export.gguf import fine_path_tensors, tensor_type, write_gguf
from multiscale_transformer.export.modelfile import CHAT_TEMPLATE, render_modelfile
from multiscale_transformer.export.vocab import BOS_TEXT, CONTROL, EOS_TEXT, byte_to_unicode, byte_vocab

from .conftest import make_model
from .modelfile import check_modelfile, parse_modelfile


def axl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "multiscale_transformer", *args], capture_output=True, text=True, timeout=300
    )


def _field(reader: gguf.GGUFReader, key: str) -> object:
    return reader.fields[key].contents()


def test_byte_table_is_gpt2s_and_reversible() -> None:
    table = byte_to_unicode()
    assert len(set(table.values())) == 256 and list(table) == list(range(256))
    assert not any(c.isspace() for c in table.values())
    reference = getattr(gguf.vocab, "bytes_to_unicode", None)  # gguf >= 0.17 ships the same table
    if reference is not None:
        assert table == reference()


def test_vocab_specials_and_a_merge_that_never_applies() -> None:
    vocab = byte_vocab(260)
    assert len(vocab.tokens) == len(vocab.types) == 260
    assert vocab.tokens[256:258] == [BOS_TEXT, EOS_TEXT] and vocab.types[256:258] == [CONTROL, CONTROL]
    (merge,) = vocab.merges
    left, right = merge.split(" ")
    inverse = {c: b for b, c in byte_to_unicode().items()}
    # Neither byte of the merge can occur in UTF-8 text, so the pair never occurs.
    for byte in (inverse[left], inverse[right]):
        assert all(byte not in chr(cp).encode() for cp in range(0x110000) if not 0xD800 <= cp < 0xE000)


@pytest.mark.parametrize(
    ("overrides", "fine_layers"), [({"n_layers_per_scale": 2}, 2), ({"layers_per_scale": [3, 1, 1]}, 3)]
)
def test_every_fine_path_parameter_is_exported_once(overrides: dict, fine_layers: int) -> None:
    model = make_model("tiny", **overrides)
    names = [name for name, _ in fine_path_tensors(model)]
    assert len(names) == len(set(names)) == 2 + 9 * fine_layers
    fine_params = [n for n, _ in model.named_parameters() if n.startswith(("tok_emb", "stacks.0.", "norm_f"))]
    assert len(fine_params) == len(names)
    exported = {t.data_ptr() for _, t in fine_path_tensors(model)}
    assert exported == {p.data_ptr() for n, p in model.named_parameters() if n in fine_params}


def test_f32_file_reads_back_exactly(tmp_path: Path) -> None:
    model = make_model("tiny", n_layers_per_scale=2, d_ff=192)
    path = tmp_path / "m.gguf"
    write_gguf(model, path, "f32", "m")
    reader = gguf.GGUFReader(path)
    cfg = model.config
    # Every key the export writes, each with the value the model needs (a wrong epsilon or RoPE base
    # loads fine in llama.cpp and only shifts the logits).
    expected = {
        "general.architecture": "llama",
        "general.name": "m",
        "general.file_type": gguf.LlamaFileType.ALL_F32,
        "llama.context_length": cfg.max_seq_len,
        "llama.embedding_length": cfg.d_model,
        "llama.block_count": 2,
        "llama.feed_forward_length": cfg.d_ff,
        "llama.attention.head_count": cfg.n_heads,
        "llama.attention.head_count_kv": cfg.n_heads,
        "llama.rope.dimension_count": cfg.head_dim,
        "llama.vocab_size": 258,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "default",
        "tokenizer.ggml.bos_token_id": 256,
        "tokenizer.ggml.eos_token_id": 257,
        "tokenizer.ggml.add_bos_token": False,
        "tokenizer.ggml.add_eos_token": False,
    }
    assert {k: _field(reader, k) for k in expected} == expected
    assert _field(reader, "llama.attention.layer_norm_rms_epsilon") == pytest.approx(cfg.norm_eps, rel=1e-6)
    assert _field(reader, "llama.rope.freq_base") == pytest.approx(cfg.rope_theta, rel=1e-6)
    vocab = byte_vocab(258)
    assert _field(reader, "tokenizer.ggml.tokens") == vocab.tokens
    assert _field(reader, "tokenizer.ggml.token_type") == vocab.types
    assert _field(reader, "tokenizer.ggml.merges") == vocab.merges
    written = set(expected) | {f"tokenizer.ggml.{k}" for k in ("tokens", "token_type", "merges")}
    written |= {"llama.attention.layer_norm_rms_epsilon", "llama.rope.freq_base"}
    assert {k for k in reader.fields if not k.startswith("GGUF.")} == written  # nothing unchecked
    assert "output.weight" not in {t.name for t in reader.tensors}  # tied to token_embd
    state = model.state_dict()
    stored = {t.name: np.asarray(t.data) for t in reader.tensors}
    np.testing.assert_array_equal(stored["blk.1.ffn_up.weight"], state["stacks.0.1.ffn.w1.weight"].numpy())
    np.testing.assert_array_equal(stored["blk.1.ffn_gate.weight"], state["stacks.0.1.ffn.w3.weight"].numpy())
    np.testing.assert_array_equal(stored["blk.0.attn_output.weight"], state["stacks.0.0.attn.wo.weight"].numpy())
    np.testing.assert_array_equal(stored["token_embd.weight"], state["tok_emb.weight"].numpy())


def test_quantized_types_and_row_size_fallback(tmp_path: Path) -> None:
    # tiny's d_ff = 176 is not a multiple of the 32-value blocks: ffn_down (rows of d_ff) stays F16.
    model = make_model("tiny")
    write_gguf(model, tmp_path / "q.gguf", "q8_0", "q")
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(tmp_path / "q.gguf").tensors}
    assert types["blk.0.ffn_down.weight"] == "F16"
    assert types["blk.0.ffn_up.weight"] == types["blk.0.attn_q.weight"] == "Q8_0"
    assert types["blk.0.attn_norm.weight"] == types["output_norm.weight"] == "F32"
    assert tensor_type("token_embd.weight", (258, 64), "q4_0") == "Q8_0"  # the tied head keeps 8 bits
    assert tensor_type("blk.0.attn_q.weight", (64, 64), "q4_0") == "Q4_0"


def test_q8_0_weights_dequantize_close(tmp_path: Path) -> None:
    model = make_model("tiny", d_ff=192)
    write_gguf(model, tmp_path / "q.gguf", "q8_0", "q")
    tensor = next(t for t in gguf.GGUFReader(tmp_path / "q.gguf").tensors if t.name == "blk.0.ffn_down.weight")
    restored = gguf.quants.dequantize(np.asarray(tensor.data), tensor.tensor_type)
    original = model.state_dict()["stacks.0.0.ffn.w2.weight"].numpy()
    assert np.abs(restored - original).max() < np.abs(original).max() / 100


def test_modelfile_is_well_formed(tmp_path: Path) -> None:
    (tmp_path / "m-q4_0.gguf").write_bytes(b"GGUF")
    text = render_modelfile("m-q4_0.gguf", 256, EOS_TEXT, {"temperature": 0.8, "top_k": 40})
    (tmp_path / "Modelfile").write_text(text)
    parsed = check_modelfile(tmp_path / "Modelfile")
    assert parsed.from_ == "./m-q4_0.gguf"
    assert parsed.template == CHAT_TEMPLATE
    assert parsed.parameters == {"temperature": [0.8], "top_k": [40], "num_ctx": [256], "stop": [EOS_TEXT, "User:"]}
    (tmp_path / "Modelfile").write_text(render_modelfile("m-q4_0.gguf", 256, EOS_TEXT, {}, fim=True))
    template = check_modelfile(tmp_path / "Modelfile").template
    assert "{{ .Suffix }}" in template and template.endswith(CHAT_TEMPLATE + "{{ end }}")
    (tmp_path / "m-q4_0.gguf").unlink()
    with pytest.raises(UserError, match="does not exist"):
        check_modelfile(tmp_path / "Modelfile")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("PARAMETER top_k 40\n", "no FROM"),
        ("FROM ./x.gguf\nPARAMETER top_k forty\n", "needs a int"),
        ("FROM ./x.gguf\nPARAMETER nope 1\n", "unknown parameter"),
        ("FROM ./x.gguf\nFORM y\n", "unknown instruction"),
        ('FROM ./x.gguf\nTEMPLATE """{{ if .System }}x"""\n', "without its"),
        ('FROM ./x.gguf\nTEMPLATE """{{ .Prompt }\n', "unterminated"),
    ],
)
def test_modelfile_parser_rejects_mistakes(text: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        parse_modelfile(text)


def test_cli_writes_gguf_modelfile_and_readme(tmp_path: Path) -> None:
    make_model("tiny").save_pretrained(tmp_path / "model")
    result = axl("export-gguf", "--model", str(tmp_path / "model"), "--outtype", "q4_0", "--out", str(tmp_path / "o"))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "o"
    assert (out / "model-fine-q4_0.gguf").is_file()
    assert check_modelfile(out / "Modelfile").parameters["num_ctx"] == [128]
    assert "model-fine-q4_0.gguf" in (out / "README.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "/does/not/exist"], "no such model"),
        (["--outtype", "q3_k"], "unsupported --outtype"),
        (["--out", "/proc/no/such/dir"], "cannot write"),
        (["--bias"], "bias must be false"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    make_model("tiny").save_pretrained(tmp_path / "model")
    if args == ["--bias"]:  # a config that asks for biases no layer has
        config = tmp_path / "model" / "config.json"
        config.write_text(json.dumps({**json.loads(config.read_text()), "bias": True}))
        args = []
    result = axl("export-gguf", "--model", str(tmp_path / "model"), "--out", str(tmp_path / "o"), *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr


def test_readme_warns_when_the_fine_path_was_not_trained() -> None:
    assert fine_path_warning(Measurement("t", full=2.0, fine=4.1, gguf=4.1)) is not None
    assert fine_path_warning(Measurement("t", full=2.0, fine=2.1, gguf=2.1)) is None
    assert fine_path_warning(Measurement("t", full=None, fine=4.1, gguf=None)) is None


def test_a_windowed_model_states_its_window_as_the_context(tmp_path: Path) -> None:
    """llama's architecture has no sliding window; within one window the fine path is exact."""
    model = make_model("tiny", max_seq_len=64, attention_window=16)
    write_gguf(model, tmp_path / "w.gguf", "f32", "w")
    field = gguf.GGUFReader(tmp_path / "w.gguf").fields["llama.context_length"]
    assert int(field.parts[field.data[0]][0]) == 16


def test_a_windowed_models_modelfile_and_readme_state_the_files_context(tmp_path: Path) -> None:
    """Ollama reads `num_ctx` bytes with full attention: past the window it would read what the
    weights never learned to, so the Modelfile states the window, as the file does."""
    make_model("tiny", max_seq_len=64, attention_window=16).save_pretrained(tmp_path / "m")
    argv = ["export-gguf", "--model", str(tmp_path / "m"), "--outtype", "f32", "--out", str(tmp_path / "o")]
    assert main([*argv, "--name", "w"]) == 0
    assert "PARAMETER num_ctx 16\n" in (tmp_path / "o" / "Modelfile").read_text()
    assert "Context: 16 bytes." in (tmp_path / "o" / "README.md").read_text()
