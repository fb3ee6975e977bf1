"""The model that ships inside the package, so that generation and serving work with no download.

Its weights live in `axl-mini/` beside this file (model.safetensors in float16, loaded as float32),
with the config, the training results and a model card written by `axl card`.
"""

from __future__ import annotations

from pathlib import Path

from multiscale_transformer.errors import UserError

BUNDLED_NAME = "axl-mini"


def bundled_model_dir() -> Path | None:
    """The bundled model directory, or None in a checkout or install that lacks the weights."""
    path = Path(__file__).resolve().parent / BUNDLED_NAME
    return path if (path / "model.safetensors").is_file() else None


def default_model_path() -> Path:
    path = bundled_model_dir()
    if path is None:
        raise UserError(
            "no model given and no bundled model is installed: pass --model DIR (train one with `axl train`)"
        )
    return path
