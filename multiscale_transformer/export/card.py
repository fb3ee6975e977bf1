"""The short README written next to an exported GGUF: what is inside, how big, how good."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Measurement:
    """Bits per byte on one held-out text, each None when not measured."""

    text: str  # what was measured on, e.g. "heldout.py, 16,384 bytes"
    full: float | None
    fine: float | None
    gguf: float | None


def fine_path_warning(m: Measurement) -> str | None:
    """A warning when the exported path is far worse than the full model, i.e. it was not trained as a model."""
    if m.full is None or m.fine is None or m.fine <= 1.2 * m.full:
        return None
    return (
        f"The fine path alone ({m.fine:.2f} bits per byte) is much worse than the full model ({m.full:.2f}): "
        "it was not trained to work on its own. Train with a fine-path loss (`axl train --fine-loss-weight`) "
        "before exporting."
    )


def render_readme(
    *,
    name: str,
    gguf_name: str,
    size_bytes: int,
    outtype: str,
    types: str,
    config: dict[str, object],
    source: str,
    measurement: Measurement | None,
) -> str:
    c = config
    fine_layers = (c.get("layers_per_scale") or [c["n_layers_per_scale"]])[0]
    rows = [
        "| what | bits per byte |",
        "|---|---|",
    ]
    if measurement is not None:
        for label, value in (
            ("full multi-scale model (PyTorch)", measurement.full),
            ("fine-scale path alone (PyTorch, what this file carries)", measurement.fine),
            (f"this file in llama.cpp ({outtype.upper()})", measurement.gguf),
        ):
            rows.append(f"| {label} | {'not measured' if value is None else f'{value:.4f}'} |")
    quality = (
        f"Measured by `axl export-gguf --eval-text` on {measurement.text} (lower is better):\n\n" + "\n".join(rows)
        if measurement is not None
        else "Not measured at export time (pass `--eval-text FILE` to `axl export-gguf`)."
    )
    if measurement is not None and (warning := fine_path_warning(measurement)):
        quality += f"\n\n**{warning}**"
    return f"""# {name} ({outtype.upper()} GGUF)

`{gguf_name}`, {size_bytes / 1e6:.2f} MB, exported from `{source}` by `axl export-gguf`.

## What is inside

Only the fine-scale (byte-level) path of the AXL multi-scale model: byte embedding, the fine stack
(layers {fine_layers}, d_model {c["d_model"]}, heads {c["n_heads"]}, d_ff {c["d_ff"]}), the final
RMSNorm and the output head tied to the embedding. The 2x/4x stacks, cross-scale attention and the
fusion gate are not in the file: llama.cpp has no operator for them. The file is a plain `llama`
architecture model with a 258-token byte vocabulary (256 bytes, `<|bos|>`, `<|eos|>`); any UTF-8
text tokenizes to its raw bytes. Context: {c["max_seq_len"]} bytes. Tensor types: {types}.

## How good it is

{quality}

## Use

- Ollama: `ollama create {name} -f Modelfile` in this directory, then `ollama run {name}`.
- LM Studio: copy `{gguf_name}` into a folder under LM Studio's models directory
  (e.g. `~/.lmstudio/models/axl/{name}/`), load it, and set the prompt template to
  `User: ...\\nAssistant: ` (or use it as a plain completion model for code).
- llama.cpp: `llama-cli -m {gguf_name} -p "def fibonacci(n):" -n 200`.
"""
