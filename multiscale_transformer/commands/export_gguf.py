"""`axl export-gguf`: the fine-scale path as a GGUF file for llama.cpp, Ollama and LM Studio."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from multiscale_transformer.commands.common import (
    add_threads_argument,
    model_path_from_args,
    positive_int,
    set_threads,
)
from multiscale_transformer.errors import UserError

if TYPE_CHECKING:
    from multiscale_transformer.export.card import Measurement
    from multiscale_transformer.model.model import MultiScaleTransformer

OUTTYPES = ("f32", "f16", "q8_0", "q4_0", "q4_k_m")  # same as export.gguf.OUTTYPES, kept here to import light


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", help="model directory or .pt checkpoint (default: the bundled model)")
    p.add_argument("--outtype", default="f16", help=f"one of {', '.join(OUTTYPES)} (default f16)")
    p.add_argument("--out", default=".", help="output directory (default: current directory)")
    p.add_argument("--name", default=None, help="model name (default: the model directory's name)")
    p.add_argument("--eval-text", default=None, help="held-out text file: measure bits per byte into the README")
    p.add_argument("--eval-bytes", type=positive_int, default=16384, help="bytes of --eval-text to score")
    add_threads_argument(p)


def _output_dir(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise UserError(f"{out}: cannot write there ({exc.strerror})") from None
    return out


def _default_name(model_path: str) -> str:
    path = Path(model_path)
    stem = path.parent.name if path.suffix == ".pt" else path.name
    return (stem or "axl") + "-fine"


def run(args: argparse.Namespace) -> int:
    outtype = args.outtype.lower()
    if outtype not in OUTTYPES:
        raise UserError(f"unsupported --outtype {args.outtype!r}; choose one of {', '.join(OUTTYPES)}")
    if args.eval_text and not Path(args.eval_text).is_file():
        raise UserError(f"{args.eval_text}: evaluation text not found")
    from multiscale_transformer.export.gguf import import_gguf

    import_gguf()
    set_threads(args.threads)
    from multiscale_transformer.model.model import MultiScaleTransformer

    model_path = model_path_from_args(args)
    model = MultiScaleTransformer.from_pretrained(model_path).eval()
    if outtype == "q4_k_m":
        from multiscale_transformer.export.runtime import import_llama_cpp

        import_llama_cpp("Q4_K_M export")
    out = _output_dir(args.out)
    name = args.name or _default_name(str(model_path))
    gguf_path = export(model, out, name, outtype, args.threads or os.cpu_count() or 1)

    measurement = None
    if args.eval_text:
        measurement = _measure(model, gguf_path, Path(args.eval_text), args.eval_bytes, args.threads or 1)
    _write_companions(model, out, name, gguf_path, outtype, str(model_path), measurement)
    print(f"wrote {gguf_path} ({gguf_path.stat().st_size / 1e6:.2f} MB), {out / 'Modelfile'}, {out / 'README.md'}")
    if measurement is not None:
        from multiscale_transformer.export.card import fine_path_warning

        gguf = "not measured (llama-cpp-python missing)" if measurement.gguf is None else f"{measurement.gguf:.4f}"
        print(
            f"bits per byte on {measurement.text}: full {measurement.full:.4f}, "
            f"fine path {measurement.fine:.4f}, gguf {gguf}"
        )
        if warning := fine_path_warning(measurement):
            print(f"warning: {warning}")
    return 0


def export(model: MultiScaleTransformer, out: Path, name: str, outtype: str, threads: int) -> Path:
    """Write `<name>-<outtype>.gguf` into out; Q4_K_M goes through an F32 file and llama.cpp's quantizer."""
    from multiscale_transformer.export.gguf import write_gguf

    target = out / f"{name}-{outtype}.gguf"
    if outtype != "q4_k_m":
        write_gguf(model, target, outtype, name)
        return target
    from multiscale_transformer.export.quantize import quantize_q4_k_m

    source = out / f".{name}-f32.tmp.gguf"
    try:
        write_gguf(model, source, "f32", name)
        quantize_q4_k_m(source, target, threads)
    finally:
        source.unlink(missing_ok=True)
    return target


def _measure(model: MultiScaleTransformer, gguf_path: Path, text: Path, limit: int, threads: int) -> Measurement:
    from multiscale_transformer.export.card import Measurement
    from multiscale_transformer.export.gguf import exported_context
    from multiscale_transformer.export.runtime import gguf_bits_per_byte, torch_bits_per_byte

    data = text.read_bytes()
    n_ctx = exported_context(model.config)  # what the GGUF states, and what llama.cpp then reads
    full = torch_bits_per_byte(model, data, limit, fine_only=False)
    # The fine path by the GGUF's protocol: windows of the context the file states (a windowed model's
    # fine stack computes within one window what it computes in the whole context).
    fine = torch_bits_per_byte(_with_context(model, n_ctx), data, limit, fine_only=True)
    try:
        gguf = gguf_bits_per_byte(gguf_path, data, n_ctx, limit, threads)
    except UserError:
        gguf = None  # llama-cpp-python is not installed: report the PyTorch numbers alone
    scored = min(limit, len(data))
    return Measurement(f"`{text.name}`, {scored:,} bytes", full, fine, gguf)


def _with_context(model: MultiScaleTransformer, n_ctx: int) -> MultiScaleTransformer:
    """The same weights reading `n_ctx` bytes (the context and windows change no weight)."""
    import dataclasses

    from multiscale_transformer.model.model import MultiScaleTransformer

    if n_ctx == model.config.max_seq_len:
        return model
    config = dataclasses.replace(model.config, max_seq_len=n_ctx, attention_window=0, coarse_window=0)
    twin = MultiScaleTransformer(config)
    twin.load_state_dict(model.state_dict())
    return twin.eval()


def _write_companions(
    model: MultiScaleTransformer,
    out: Path,
    name: str,
    gguf_path: Path,
    outtype: str,
    source: str,
    measurement: Measurement | None,
) -> None:
    from multiscale_transformer.atomic import atomic_write_bytes
    from multiscale_transformer.export.card import render_readme
    from multiscale_transformer.export.gguf import exported_context, file_tensor_types
    from multiscale_transformer.export.modelfile import render_modelfile
    from multiscale_transformer.export.vocab import EOS_TEXT
    from multiscale_transformer.model.config import GENERATION_DEFAULTS

    config = model.config
    sampling = {
        "temperature": GENERATION_DEFAULTS["temperature"],
        "top_k": GENERATION_DEFAULTS["top_k"],
        "top_p": GENERATION_DEFAULTS["top_p"],
        "repeat_penalty": GENERATION_DEFAULTS["repetition_penalty"],
    }
    # The context the file states (a windowed model's window): Ollama must not read further than it.
    n_ctx = exported_context(config)
    modelfile = render_modelfile(gguf_path.name, n_ctx, EOS_TEXT, sampling, config.fim)
    atomic_write_bytes(out / "Modelfile", modelfile.encode())
    readme = render_readme(
        name=name,
        gguf_name=gguf_path.name,
        size_bytes=gguf_path.stat().st_size,
        outtype=outtype,
        types=file_tensor_types(gguf_path),
        config={**config.to_dict(), "max_seq_len": n_ctx},
        source=source,
        measurement=measurement,
    )
    atomic_write_bytes(out / "README.md", readme.encode())
