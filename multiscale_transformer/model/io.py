"""Model files: the AXL `.pt` checkpoint and the model directory (config.json, safetensors).

A `.pt` holds {"model_state_dict": ..., "config": <plain dict>} as the AXL card loads it (a training
checkpoint of `axl train`, with "model" for the weights, loads too); it is read with
torch.load(weights_only=True), so no arbitrary object is ever unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import torch

from multiscale_transformer.atomic import atomic_open, atomic_write_bytes, atomic_write_json
from multiscale_transformer.errors import UserError, first_line
from multiscale_transformer.model.config import GENERATION_DEFAULTS, ModelConfig, load_config


class SavedModel(Protocol):
    """What this module reads of a model (MultiScaleTransformer is one): named here so that io.py,
    which model.py imports, never imports model.py back, not even for its types."""

    config: ModelConfig

    def state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> Any: ...

    def num_parameters(self) -> int: ...


WEIGHTS_NAME = "model.safetensors"
PT_NAME = "model.pt"


# What a generation_config.json may set, and the check each value must pass.
_SAMPLING_CHECKS = {
    "temperature": ("a number >= 0", lambda v: _number(v) and v >= 0),
    "top_k": ("an integer >= 0", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
    "top_p": ("a number in (0, 1]", lambda v: _number(v) and 0 < v <= 1),
    "repetition_penalty": ("a number > 0", lambda v: _number(v) and v > 0),
}


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def read_generation_config(directory: str | Path) -> dict[str, Any]:
    """The sampling defaults of a model directory: its generation_config.json over the published
    ones (a missing file or key keeps the published value; a bad value is a UserError)."""
    path = Path(directory) / "generation_config.json"
    if not path.is_file():
        return dict(GENERATION_DEFAULTS)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    out = dict(GENERATION_DEFAULTS)
    for key, (wanted, ok) in _SAMPLING_CHECKS.items():
        if data.get(key) is not None:
            if not ok(data[key]):
                raise UserError(f"{path}: {key} must be {wanted}, got {data[key]!r}")
            out[key] = data[key]
    return out


def save_model(
    model: SavedModel,
    directory: str | Path,
    *,
    dtype: torch.dtype | None = None,
    pt_name: str | None = PT_NAME,
    extra_config: dict[str, Any] | None = None,
) -> Path:
    """Write the model directory; `dtype` (e.g. torch.float16) stores weights in fewer bits."""
    from safetensors.torch import save as st_save

    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{directory}: cannot create output directory ({exc.strerror})") from None
    state = {k: v.detach().to("cpu", dtype or v.dtype).contiguous() for k, v in model.state_dict().items()}
    config = model.config.to_dict()
    published = {
        "model_type": "multiscale_transformer",
        "architectures": ["MultiScaleForCausalLM"],
        **config,
        "num_parameters": model.num_parameters(),
        **(extra_config or {}),
    }
    atomic_write_json(directory / "config.json", published)
    atomic_write_json(directory / "generation_config.json", GENERATION_DEFAULTS)
    atomic_write_bytes(directory / WEIGHTS_NAME, st_save(state, metadata={"format": "pt"}))
    if pt_name:
        try:
            with atomic_open(directory / pt_name) as f:
                torch.save({"model_state_dict": state, "config": config}, f)
        except RuntimeError as exc:  # torch reports a failed write (disk full) as RuntimeError
            raise UserError(f"cannot write {directory / pt_name}: {first_line(exc)[:160]}") from None
    return directory


def read_pretrained(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[ModelConfig, dict[str, torch.Tensor], Path]:
    """The config, the weights and the file they came from, for a directory, a `.pt` or a `.safetensors`.

    `MultiScaleTransformer.from_pretrained` builds the model from them (this module never imports the
    model class, so model.py can import it without a circle).
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such model file or directory")
    return _read(path, map_location)


def load_weights(model: SavedModel, state: dict[str, torch.Tensor], source: Path) -> None:
    """Load `state` into `model`, or a UserError saying which weights do not match its config."""
    missing, unexpected = _key_mismatch(model, state)
    if missing or unexpected:
        raise UserError(
            f"{source}: weights do not match its config (missing {_few(missing)}, unexpected {_few(unexpected)})"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).split("\n")[1].strip() if "\n" in str(exc) else str(exc)
        raise UserError(f"{source}: weights do not match its config ({first})") from None


def _read(path: Path, map_location: str | torch.device) -> tuple[ModelConfig, dict[str, torch.Tensor], Path]:
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        if weights.exists():
            return load_config(path), _read_safetensors(weights), weights
        pts = sorted(path.glob("*.pt"))
        if not pts:
            raise UserError(f"{path}: no {WEIGHTS_NAME} or .pt checkpoint in this directory")
        if len(pts) > 1:  # picking one silently could serve the wrong model
            names = ", ".join(p.name for p in pts)
            raise UserError(f"{path}: several .pt checkpoints ({names}); pass one of them, e.g. --model {pts[0]}")
        path = pts[0]
    if path.suffix == ".safetensors":
        return load_config(path.parent), _read_safetensors(path), path
    ckpt = _read_pt(path, map_location)
    state = ckpt.get("model_state_dict")
    if state is None and isinstance(ckpt.get("model"), dict):  # `axl train`'s checkpoints/step_*.pt
        state = ckpt["model"]
    if state is None:
        raise UserError(
            f"{path}: checkpoint has neither 'model_state_dict' (an AXL .pt) nor 'model' (an axl train "
            f"checkpoint) (keys: {_few(list(ckpt))})"
        )
    raw_config = ckpt.get("config")
    if isinstance(raw_config, dict):
        try:
            config = ModelConfig.from_dict(raw_config)
        except (TypeError, UserError) as exc:
            raise UserError(f"{path}: bad config in checkpoint ({exc})") from None
    elif (path.parent / "config.json").exists():
        config = load_config(path.parent)
    else:
        raise UserError(f"{path}: checkpoint has no 'config' and there is no config.json beside it")
    return config, state, path


def _read_pt(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise UserError(f"{path}: not a readable PyTorch checkpoint ({first_line(exc)[:200]})") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}")
    return ckpt


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except Exception as exc:  # SafetensorError, OSError
        raise UserError(f"{path}: not a readable safetensors file ({str(exc)[:200]})") from None


def _key_mismatch(model: torch.nn.Module, state: dict[str, Any]) -> tuple[list[str], list[str]]:
    expected = set(model.state_dict())
    return sorted(expected - set(state)), sorted(set(state) - expected)


def _few(names: list[str], n: int = 4) -> str:
    if not names:
        return "none"
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more
