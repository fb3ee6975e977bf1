"""Q4_K_M through llama.cpp's own quantizer (llama-cpp-python), which gguf-py cannot do.

K-quants pack rows in super-blocks of 256 values. llama.cpp's quantizer gives tensors whose rows
are not a multiple of 256 a fallback type (Q5_0, or F16 when that does not fit either), so a
small model still quantizes; the README lists the types that were actually written.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

from multiscale_transformer.atomic import atomic_path
from multiscale_transformer.errors import UserError
from multiscale_transformer.export.runtime import import_llama_cpp, quiet_native_output

LLAMA_FTYPE_MOSTLY_Q4_K_M = 15


def quantize_q4_k_m(source: Path, target: Path, threads: int) -> None:
    """Quantize an F32/F16 GGUF at `source` into `target` as Q4_K_M."""
    llama_cpp = import_llama_cpp("Q4_K_M export")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = LLAMA_FTYPE_MOSTLY_Q4_K_M
    params.nthread = threads
    with atomic_path(target) as tmp:
        with quiet_native_output():
            status = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), ctypes.byref(params))
        if status != 0:
            raise UserError(f"llama.cpp's quantizer failed on {source.name} (status {status})")
