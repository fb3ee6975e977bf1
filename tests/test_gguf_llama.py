"""The exported GGUF run by llama.cpp itself (llama-cpp-python): vocabulary, logits, quantization cost.

llama-cpp-python is a [test] dependency, so a missing install fails here loudly instead of skipping
the only tests that prove the export works. Every call into llama.cpp (loading, decoding, its
quantizer) runs in a child process (tests/isolated.py): a crash in its native code, such as the AMX
kernels' segfault on some Intel Xeons, fails the test that hit it and the run goes on.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from multiscale_transformer.commands.export_gguf import export
from multiscale_transformer.export.gguf import OUTTYPES
from multiscale_transformer.export.runtime import gguf_bits_per_byte, llama_logits, load_llama, torch_bits_per_byte
from multiscale_transformer.model.model import MultiScaleTransformer

from .conftest import make_model
from .isolated import isolated

try:
    import llama_cpp  # noqa: F401
except ImportError as exc:  # pragma: no cover - the [test] extra installs it
    raise ImportError('llama.cpp tests need llama-cpp-python: pip install -e ".[test]"') from exc

CTX = 128
# Held out from training: other stdlib source, plus non-ASCII text so multi-byte UTF-8 is covered.
UNICODE = "# naïve café, Größe, 日本語, emoji 🐍✓, tabs\tand\r\nCRLF, NUL-free ünïcödé\n"
HELD_OUT = (UNICODE + Path(textwrap.__file__).read_text(encoding="utf-8") + UNICODE).encode()
N_POSITIONS = 3200  # 25 windows of 128 bytes


# Logits are compared on fixed, non-overlapping windows (the same inputs to both runtimes); bits per
# byte go through the shared sliding-window protocol (export/runtime.py, evaluation/bpb.py).
def windows(data: bytes, length: int, limit: int) -> list[list[int]]:
    """Consecutive windows of `length` + 1 bytes (inputs and their next bytes) covering up to `limit` targets."""
    out = []
    for start in range(0, len(data) - length, length):
        if len(out) * length >= limit:
            break
        out.append(list(data[start : start + length + 1]))
    return out


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def bits_per_byte(logprobs: list[np.ndarray], windows_: list[list[int]]) -> float:
    """Mean -log2 p(next byte) over all windows; logprobs[i] is (T, vocab) for windows_[i][:-1]."""
    total, count = 0.0, 0
    for lp, w in zip(logprobs, windows_, strict=True):
        targets = np.asarray(w[1:])
        total -= float(lp[np.arange(len(targets)), targets].sum())
        count += len(targets)
    return total / count / np.log(2)


def _train_fine_path(model: MultiScaleTransformer, steps: int = 100) -> None:
    """A quick AdamW run on the fine path so that its logits are far from flat and the checks have power."""
    data = b"".join(Path(m.__file__).read_bytes() for m in (argparse, json.decoder, json.encoder, subprocess))
    tokens = torch.tensor(list(data))
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(tokens) - CTX - 1, (16,), generator=gen)
        batch = torch.stack([tokens[s : s + CTX + 1] for s in starts.tolist()])  # (16, CTX + 1)
        logits = model(batch[:, :-1], fine_only=True)
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


# ---- what the child processes run (module level, so that tests/isolated.py can name them) ----


def export_all(model_dir: Path, out: Path) -> dict[str, Path]:
    model = MultiScaleTransformer.from_pretrained(model_dir).eval()
    return {t: export(model, out, "tiny", t, threads=2) for t in OUTTYPES}


def gguf_logprobs(path: Path, f32_cache: bool) -> np.ndarray:
    llm = load_llama(path, CTX, threads=2, f32_cache=f32_cache)
    return np.stack([log_softmax(llama_logits(llm, w[:-1])) for w in windows(HELD_OUT, CTX, N_POSITIONS)])


def llama_facts(path: Path) -> dict[str, object]:
    llm = load_llama(path, CTX)
    return {"n_vocab": llm.n_vocab(), "bos": llm.token_bos(), "eos": llm.token_eos(), "metadata": dict(llm.metadata)}


def tokenize(path: Path, texts: list[tuple[bytes, bool]]) -> list[list[int]]:
    """llama.cpp's ids for each (text, parse special-token text)."""
    llm = load_llama(path, CTX)
    return [llm.tokenize(text, add_bos=False, special=special) for text, special in texts]


def detokenize(path: Path, ids: list[int]) -> bytes:
    return load_llama(path, CTX).detokenize(ids)


# ---- fixtures and tests ----


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[MultiScaleTransformer, dict[str, Path]]:
    torch.set_num_threads(2)
    model = make_model("tiny", n_layers_per_scale=2, n_heads=4, d_ff=192, max_seq_len=CTX)
    _train_fine_path(model)
    root = tmp_path_factory.mktemp("gguf")
    model.save_pretrained(root / "model")
    return model, isolated(export_all, root / "model", root)


@pytest.fixture(scope="module")
def torch_logprobs(exported: tuple[MultiScaleTransformer, dict[str, Path]]) -> np.ndarray:
    model, _ = exported
    x = torch.tensor([w[:-1] for w in windows(HELD_OUT, CTX, N_POSITIONS)])  # (N, CTX)
    with torch.no_grad():
        return torch.log_softmax(model(x, fine_only=True).double(), dim=-1).numpy()  # (N, CTX, V)


def test_llama_cpp_loads_the_file(exported: tuple[MultiScaleTransformer, dict[str, Path]]) -> None:
    _, paths = exported
    facts = isolated(llama_facts, paths["f16"])
    assert (facts["n_vocab"], facts["bos"], facts["eos"]) == (258, 256, 257)
    assert facts["metadata"]["llama.context_length"] == str(CTX)
    assert facts["metadata"]["tokenizer.ggml.model"] == "gpt2"


def test_text_tokenizes_to_our_bytes_and_back(exported: tuple[MultiScaleTransformer, dict[str, Path]]) -> None:
    _, paths = exported
    data = HELD_OUT + b"\x00\x7f ends with spaces   \n\n"
    ids, plain, special = isolated(tokenize, paths["q4_0"], [(data, False), (b"<|eos|>", False), (b"<|eos|>", True)])
    assert ids == list(data)
    assert isolated(detokenize, paths["q4_0"], ids) == data
    # Special-token text is plain bytes unless special parsing is asked for.
    assert plain == list(b"<|eos|>")
    assert special == [257]


def test_model_is_trained_enough_for_the_checks(torch_logprobs: np.ndarray) -> None:
    ws = windows(HELD_OUT, CTX, N_POSITIONS)
    assert sum(len(w) - 1 for w in ws) >= 3000
    assert bits_per_byte(list(torch_logprobs), ws) < 5.0  # uniform over 258 ids would be 8.01


def logprob_deltas(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, float]:
    """(top-1 agreement, mean |delta log-prob| of the actual next byte) over the held-out windows."""
    targets = np.array([w[1:] for w in windows(HELD_OUT, CTX, N_POSITIONS)])  # (N, CTX)
    top1 = float((ours.argmax(-1) == theirs.argmax(-1)).mean())
    delta = float(np.abs(np.take_along_axis(ours - theirs, targets[..., None], -1)).mean())
    return top1, delta


# Mean |delta log-prob| of the honest export, measured on this test's model (2-core AMD EPYC,
# llama-cpp-python 0.3.36): F32 weights with llama.cpp's KV cache in F32 4.1e-7 (float32 sums in
# another order), F16 weights with its default F16 cache 3.0e-4. Planted export bugs, F32: RMSNorm
# epsilon 1e-6 for 1e-5 6.2e-4, RoPE base 1% off 8.3e-4; a wrong tensor layout is far worse. So F32 is
# held to 1e-5 (25x the honest difference, 60x below the smallest bug) and F16 to its rounding.
DELTA_LIMIT = {"f32": 1e-5, "f16": 1e-3}


@pytest.mark.parametrize("outtype", ["f32", "f16"])
def test_logits_match_our_fine_path(
    exported: tuple[MultiScaleTransformer, dict[str, Path]], torch_logprobs: np.ndarray, outtype: str
) -> None:
    _, paths = exported
    theirs = isolated(gguf_logprobs, paths[outtype], outtype == "f32")
    top1, delta = logprob_deltas(torch_logprobs, theirs)
    print(f"{outtype}: top-1 agreement {top1:.5f}, mean |delta log-prob| {delta:.3e}")
    assert top1 >= (0.999 if outtype == "f32" else 0.995), f"{outtype}: top-1 agreement {top1:.5f}"
    assert delta < DELTA_LIMIT[outtype], f"{outtype}: mean |delta log-prob| {delta:.2e} > {DELTA_LIMIT[outtype]}"


def test_quantization_costs(exported: tuple[MultiScaleTransformer, dict[str, Path]]) -> None:
    model, paths = exported
    bpb = {t: isolated(gguf_bits_per_byte, p, HELD_OUT, CTX, N_POSITIONS) for t, p in paths.items()}
    reference = torch_bits_per_byte(model, HELD_OUT, N_POSITIONS, fine_only=True)
    print({t: round(v, 4) for t, v in bpb.items()}, "torch", round(reference, 4))
    assert abs(bpb["f16"] / reference - 1) < 0.005
    assert bpb["q8_0"] / bpb["f16"] - 1 < 0.01
    assert bpb["q4_0"] / bpb["f16"] - 1 < 0.10
    assert bpb["q4_k_m"] / bpb["f16"] - 1 < 0.10


def cli_measurement(
    model: MultiScaleTransformer, tmp_path: Path, outtype: str, eval_bytes: int
) -> tuple[str, float, float]:
    """`axl export-gguf --eval-text` on `model`: the README it writes, the file's bits per byte in
    llama.cpp and the fine path's in PyTorch, as the README states them."""
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "held.py").write_bytes(HELD_OUT)
    args = ["--model", str(tmp_path / "m"), "--outtype", outtype, "--out", str(tmp_path / "o"), "--name", "t"]
    args += ["--eval-text", str(tmp_path / "held.py"), "--eval-bytes", str(eval_bytes), "--threads", "2"]
    command = [sys.executable, "-m", "multiscale_transformer", "export-gguf", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    readme = (tmp_path / "o" / "README.md").read_text()
    measured = re.search(rf"\| this file in llama.cpp \({outtype.upper()}\) \| (\d+\.\d+) \|", readme)
    fine = re.search(r"\| fine-scale path alone [^|]* \| (\d+\.\d+) \|", readme)
    assert measured and fine, readme
    return readme, float(measured[1]), float(fine[1])


def test_cli_q4_k_m_with_measurement(tmp_path: Path, exported: tuple[MultiScaleTransformer, dict[str, Path]]) -> None:
    readme, measured, fine = cli_measurement(exported[0], tmp_path, "q4_k_m", 1024)
    assert (tmp_path / "o" / "t-q4_k_m.gguf").is_file() and "t-q4_k_m.gguf" in readme
    assert abs(measured / fine - 1) < 0.10


def test_a_fim_models_sentinels_are_control_tokens_in_llama_cpp(tmp_path: Path) -> None:
    model = make_model("tiny", fim=True, max_seq_len=CTX)
    path = export(model, tmp_path, "fim", "f32", threads=2)  # gguf-py: no llama.cpp in this process
    marked = b"<fim_prefix>a = <fim_suffix>\nb<fim_middle>"
    text = "déjà vu ø".encode()
    special, plain, utf8 = isolated(tokenize, path, [(marked, True), (marked, False), (text, True)])
    assert special == [0xF8, *b"a = ", 0xF9, *b"\nb", 0xFA]
    assert plain == list(marked)  # plain text stays bytes
    metadata = isolated(llama_facts, path)["metadata"]
    assert [metadata[f"tokenizer.ggml.fim_{k}_token_id"] for k in ("pre", "suf", "mid")] == ["248", "249", "250"]
    assert utf8 == list(text)  # UTF-8 never reaches a sentinel


def test_a_windowed_models_measurement_reads_the_context_its_file_states(
    tmp_path: Path, exported: tuple[MultiScaleTransformer, dict[str, Path]]
) -> None:
    """The same weights reading 4x the context through windows of CTX (a rolling model, as the bundled
    one): the GGUF states CTX, llama.cpp scores at CTX, and so does the fine path it is compared with.
    Scored at the model's own context, llama.cpp's full attention reads past the window it was trained
    with, which is what the first windowed export measured (5.48 against 2.15 bits/byte)."""
    model, _ = exported
    config = dataclasses.replace(model.config, max_seq_len=4 * CTX, attention_window=CTX, coarse_window=CTX)
    windowed = MultiScaleTransformer(config)
    windowed.load_state_dict(model.state_dict())
    _, measured, fine = cli_measurement(windowed, tmp_path, "f16", 2048)
    assert abs(measured / fine - 1) < 0.005
