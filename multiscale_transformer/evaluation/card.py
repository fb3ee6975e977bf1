"""Model cards: a Hugging Face-style README.md in the layout of the AXL cards, every number measured.

`measure_card` gathers the numbers (held-out bits per byte of the full model and of the fine path,
the compressor baselines on the same bytes, the causality audit; training figures from
results.json; GGUF sizes from an export directory); `render_card` turns them into Markdown.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multiscale_transformer.model.model import MultiScaleTransformer


# How the card names ModelConfig.coarse_input.
COARSE_INPUT_NAMES = {
    "embeddings": "the byte embeddings (AXL)",
    "fine": "the fine stack's output (Hourglass)",
}


def measure_card(
    model: MultiScaleTransformer,
    model_dir: Path,
    data: list[Path] | None = None,
    gguf_dir: Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Everything the card states, as a JSON-serialisable dict (saved beside the card as card.json)."""
    from multiscale_transformer.evaluation.audit import audit_model
    from multiscale_transformer.evaluation.baselines import compressor_baselines
    from multiscale_transformer.evaluation.bpb import evaluate_documents, validation_documents

    docs = validation_documents(data)
    full = evaluate_documents(model, docs, progress=progress)
    fine = evaluate_documents(model, docs, fine_only=True, progress=progress)
    results_path = model_dir / "results.json"
    training = json.loads(results_path.read_text()) if results_path.exists() else None
    ggufs = sorted(gguf_dir.rglob("*.gguf")) if gguf_dir else []
    return {
        "name": model_dir.resolve().name,
        "parameters": model.num_parameters(),
        "config": model.config.to_dict(),
        "eval": {"data": [str(p) for p in data] if data else "stdlib validation split", **_summary(full)},
        "eval_fine": _summary(fine),
        "baselines": compressor_baselines([d.data for d in docs]).to_json(),
        "audit": audit_model(model).to_json(),
        "training": training,
        "gguf": {p.name: p.stat().st_size for p in ggufs},
    }


def _summary(result: Any) -> dict[str, Any]:
    data = result.to_json()
    data.pop("per_file", None)
    return data


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def render_card(m: dict[str, Any]) -> str:
    """The card's Markdown from `measure_card`'s numbers."""
    cfg, ev, fine, base, audit = m["config"], m["eval"], m["eval_fine"], m["baselines"], m["audit"]
    tr = (m.get("training") or {}).get("training_results", {})
    t = m.get("training") or {}
    name = m["name"]
    hw = t.get("hardware", {})
    fine_tuned = bool((t.get("settings") or {}).get("init_from"))
    energy = t.get("energy", {})
    lines = [
        "---",
        "license: apache-2.0",
        "library_name: multiscale-transformer",
        "tags: [code, python, byte-level, multiscale-transformer]",
        "---",
        f"# {name}",
        "",
        f"A {m['parameters'] / 1e6:.2f}M-parameter AXL multi-scale byte-level transformer for Python code: "
        f"**{ev['bits_per_byte']:.3f} bits per byte** (byte perplexity {ev['perplexity']:.2f}) on held-out "
        f"Python files, context {cfg['max_seq_len']} bytes. Strictly causal (audit: "
        f"{'PASS' if audit['passed'] else 'FAIL'}).",
        "",
        "## Model Details",
        "| Property | Value |",
        "|---|---|",
        "| Architecture | Multi-Scale Transformer (1x/2x/4x stacks, cross-scale attention, gated fusion) |",
        f"| Parameters | {m['parameters']:,} |",
        f"| Optimizer | {tr.get('optimizer', 'unknown')} |",
        "| Attention | SDPA |",
        f"| Vocab Size | {cfg['vocab_size']} (byte-level: 256 bytes + BOS + EOS) |",
        f"| Context Window | {cfg['max_seq_len']} bytes |",
        f"| d_model | {cfg['d_model']} |",
        f"| Attention Heads | {cfg['n_heads']} |",
        f"| d_ff | {cfg['d_ff']} |",
        f"| Layers per Scale | {cfg.get('layers_per_scale') or cfg['n_layers_per_scale']} |",
        f"| Cross-scale layers | {cfg['n_cross_attn_layers']} ({_pairs(cfg)}) |",
        f"| Layers after the fusion | {cfg.get('post_fusion_layers', 0)} |",
        f"| Downsample Factors | {cfg['downsample_factors']} |",
        f"| Coarse scales pool | {COARSE_INPUT_NAMES[cfg.get('coarse_input', 'embeddings')]} |",
        "| License | Apache 2.0 |",
        "",
        "## Uses",
        "Completing Python code from a prompt, on a CPU; a small model for experiments and prototyping, not "
        "for production code generation. Trained on Python source only.",
        "",
        "## Bias, Risks, and Limitations",
        f"- Small: {m['parameters'] / 1e6:.1f}M parameters trained for {_duration(tr.get('time'))} on a CPU"
        f"{' (as a fine-tuning of an earlier model; see Training Details)' if fine_tuned else ''}. "
        "Completions are often syntactically plausible and semantically wrong.",
        f"- Context {cfg['max_seq_len']:,} bytes ({_context_words(cfg['max_seq_len'])}); "
        "longer prompts keep their last bytes.",
        "- Byte-level perplexity is not comparable to token-level perplexity of BPE models. Bits per byte "
        "are the comparable figure; compressors on the same bytes are listed below as a yardstick.",
        "- GGUF files carry only the fine-scale path (see its bits per byte below), not the full model.",
        "",
        "## Training Details",
        *_training_lines(t, tr, hw),
        "",
        "## Evaluation",
        f"Held-out data: {_data_line(ev)}. Every byte scored once, each with at least {ev['stride']} bytes "
        f"of context (sliding window of {ev['context']}, stride {ev['stride']}) except near a file's start.",
        "",
        "| | bits per byte | byte perplexity |",
        "|---|---|---|",
        f"| **this model (full multi-scale)** | **{ev['bits_per_byte']:.3f}** | {ev['perplexity']:.3f} |",
        f"| fine-scale path alone (what GGUF carries) | {fine['bits_per_byte']:.3f} | {fine['perplexity']:.3f} |",
    ]
    for label, key in (("each file alone", "per_file"), ("files concatenated", "concatenated")):
        for comp, bpb in base[key].items():
            lines.append(f"| {comp}, {label} | {bpb:.3f} | {2**bpb:.2f} |")
    lines += [
        f"| unigram entropy (order 0) | {base['unigram_entropy']:.3f} | {2 ** base['unigram_entropy']:.2f} |",
        "",
        f"Bytes scored: {ev['bytes']:,} in {ev['files']} files.",
        "",
        "### Causality audit",
        f"`axl audit`: **{'PASS' if audit['passed'] else 'FAIL'}**. Changing bytes after position t moved the "
        f"logits at positions <= t by at most {audit['worst']['magnitude']:.3g} (check "
        f"`{audit['worst']['check']}`), over {len(audit['checks'])} checks (perturbations at many positions "
        "and lengths, batch > 1, full model and fine path, gradients into the future).",
        "",
        "## Environmental Impact",
        "| Property | Value |",
        "|---|---|",
        f"| Hardware | {hw.get('cpu', 'unknown')} ({hw.get('cores_available', '?')} cores), "
        f"{hw.get('threads_per_process', '?')} threads |",
        f"| Hours Used | {_hours(tr.get('time'))} |",
        f"| Energy | {energy.get('kwh', 'n/a')} kWh (estimate) |",
        f"| Carbon Emitted | {energy.get('kg_co2', 'n/a')} kg CO2 (estimate) |",
        f"| Method | {energy.get('method', 'n/a')} |",
        "",
    ]
    if m.get("gguf"):
        lines += ["## GGUF files", "| file | size |", "|---|---|"]
        lines += [f"| {n} | {_mb(s)} |" for n, s in m["gguf"].items()]
        lines.append("")
    lines += _usage_lines(name, cfg)
    return "\n".join(lines) + "\n"


def _training_lines(t: dict[str, Any], tr: dict[str, Any], hw: dict[str, Any]) -> list[str]:
    if not tr:
        return ["No results.json beside the weights: training figures unknown."]
    corpus = t.get("corpus", {})
    settings = t.get("settings") or {}
    started = (
        [f"Fine-tuned from `{settings['init_from']}`; the figures below are this fine-tuning's alone.", ""]
        if settings.get("init_from")
        else []
    )
    fim = settings.get("fim_rate") or 0
    return [
        *started,
        f"Data: {', '.join(_source_names(corpus))}: {corpus.get('train_documents', '?')} training "
        f"files ({corpus.get('train_bytes', 0) / 1e6:.1f} MB), {corpus.get('val_documents', '?')} held out by "
        "file (never trained on). Byte-level, files separated by EOS.",
        "",
        *_package_lines(corpus.get("packages") or []),
        "| Metric | Value |",
        "|---|---|",
        f"| Training Steps | {tr.get('steps')} |",
        f"| Training Time | {_duration(tr.get('time'))} |",
        f"| Bytes seen | {t.get('bytes_seen', 0):,} |",
        f"| Throughput | {t.get('bytes_per_second', 0):,.0f} bytes/s |",
        f"| Final Loss (train, nats/byte) | {tr.get('final_loss')} |",
        f"| Optimizer | {tr.get('optimizer')} |",
        f"| Schedule | {settings.get('schedule', 'cosine')} |",
        f"| Fill-in-the-middle | {f'{fim:.0%} of documents' if fim else 'no'} |",
        f"| Hardware | {hw.get('cpu', 'unknown')}, {hw.get('threads_per_process', '?')} threads, "
        f"{hw.get('processes', 1)} process(es) |",
    ]


def _context_words(n_bytes: int) -> str:
    """What a context of n bytes holds of Python, at about 32 bytes per line."""
    lines = n_bytes // 32
    return "a few lines of Python" if lines < 20 else f"about {lines:,} lines of Python"


def _source_names(corpus: dict[str, Any]) -> list[str]:
    """The training sources by what they are, not by where they lay on the machine that trained: a
    card is published (`stdlib:/root/.pyenv/.../python3.11` is the Python 3.11 standard library)."""
    names = []
    for source in corpus.get("sources") or ["unknown"]:
        if source.startswith("stdlib:"):
            version = re.search(r"python(\d+\.\d+)", source)
            names.append(f"the Python {version.group(1) if version else ''} standard library".replace("  ", " "))
        elif source.endswith("packages.jsonl") and corpus.get("packages"):
            names.append(f"the {len(corpus['packages'])} PyPI packages below (an `axl corpus` manifest)")
        else:
            names.append(f"`{Path(source).name}`")
    return names


def _package_lines(packages: list[dict[str, Any]]) -> list[str]:
    """The PyPI packages of an `axl corpus` source (training/pypi_corpus.py), one row each."""
    if not packages:
        return []
    lines = [
        "PyPI packages in the training data (sdists, `.py` files; built by `axl corpus`):",
        "",
        "| Package | Version | License | Files | Bytes | sdist sha256 |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {p['package']} | {p['version']} | {p['license']} | {p['files']} | {p['bytes']:,} | "
        f"`{p['sdist_sha256'][:16]}` |"
        for p in packages
    ]
    return [*lines, ""]


def _usage_lines(name: str, cfg: dict[str, Any]) -> list[str]:
    return [
        "## How to Get Started",
        "### Command line",
        "```bash",
        'axl generate "def fibonacci(n):"          # the bundled model, no download',
        "axl serve                                  # OpenAI-compatible API on http://127.0.0.1:8880/v1",
        "```",
        "### With Python",
        "```python",
        "import torch",
        "from multiscale_transformer.model.model import MultiScaleTransformer",
        "from multiscale_transformer.training.tokenizer import ByteTokenizer",
        f'model = MultiScaleTransformer.from_pretrained("{name}")',
        "tokenizer = ByteTokenizer()",
        'ids = torch.tensor([tokenizer.encode("def fibonacci(n):")], dtype=torch.long)',
        "out = model.generate(ids, max_new_tokens=100, temperature=0.8, top_k=40)",
        "print(tokenizer.decode(out[0].tolist()))",
        "```",
        "### OpenAI-compatible server",
        "```bash",
        "curl http://127.0.0.1:8880/v1/completions -H 'Content-Type: application/json' \\",
        '  -d \'{"prompt": "def fibonacci(n):", "max_tokens": 64}\'',
        "```",
        "### With Ollama (fine-scale path only)",
        "```bash",
        f"axl export-gguf --model {name} --outtype q8_0 --out gguf",
        f"ollama create {name} -f gguf/Modelfile && ollama run {name} 'def fibonacci(n):'",
        "```",
        f"Context: {cfg['max_seq_len']} bytes.",
    ]


def _data_line(ev: dict[str, Any]) -> str:
    data = ev.get("data")
    if data == "stdlib validation split" or not data:
        data = ["the Python standard library source"]
    return f"the validation split (5% of files, by a hash of their path; never trained on) of {', '.join(data)}"


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "unknown"
    return f"{seconds / 60:.1f} min"


def _hours(seconds: float | None) -> str:
    return "unknown" if seconds is None else f"{seconds / 3600:.3f}"


def _pairs(cfg: dict[str, Any]) -> str:
    """Which scales attend to which (ModelConfig.cross_pairs), named by their factors: 4x->1x."""
    pairs, factors = cfg.get("cross_pairs"), cfg["downsample_factors"]
    if pairs is None:
        return "every pair of scales"
    return ", ".join(f"{factors[s]}x->{factors[t]}x" for s, t in pairs) or "none"
