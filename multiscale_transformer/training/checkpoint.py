"""Training-state checkpoints: OUT/checkpoints/step_XXXXXXX.pt, written atomically, the last few kept.

A checkpoint holds everything a resumed run needs to continue exactly: weights, optimizer state,
schedule, step (which is also the data position: batches are a pure function of seed and step),
RNG states, elapsed time and the model config. It holds only tensors and plain Python values, so
torch.load(weights_only=True) reads it and no object is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import torch

from multiscale_transformer.atomic import atomic_open
from multiscale_transformer.errors import UserError, first_line
from multiscale_transformer.model.config import ModelConfig

_CONFIG_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ModelConfig) if f.default is not dataclasses.MISSING}

FORMAT = "axl-train-state"
VERSION = 1
_NAME = re.compile(r"^step_(\d{7,})\.pt$")


def checkpoint_dir(out: Path) -> Path:
    return out / "checkpoints"


def checkpoint_path(out: Path, step: int) -> Path:
    return checkpoint_dir(out) / f"step_{step:07d}.pt"


def list_checkpoints(out: Path) -> list[Path]:
    """Checkpoints in OUT/checkpoints, oldest first (by step number, not by file time)."""
    directory = checkpoint_dir(out)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def remove_partial(out: Path) -> None:
    """Delete temporary files that an interrupted save left behind (they hold no usable state)."""
    directory = checkpoint_dir(out)
    if directory.is_dir():
        for leftover in directory.glob(".step_*.pt.*tmp"):
            leftover.unlink(missing_ok=True)


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(out: Path, step: int, state: dict[str, Any], keep: int = 3) -> Path:
    """Write atomically (temporary file in the same directory, fsync, rename), then prune to `keep`."""
    path = checkpoint_path(out, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_partial(out)
    try:
        with atomic_open(path) as f:  # a partial file is removed: it would keep a full disk full
            torch.save({"format": FORMAT, "version": VERSION, "step": step, **state}, f)
    except (UserError, RuntimeError) as exc:  # torch reports a failed write (disk full) as RuntimeError
        previous = latest_checkpoint(out)
        kept = f"the previous checkpoint {previous.name} is intact" if previous else "no earlier checkpoint exists"
        # The atomic helper's UserError names the file; torch's RuntimeError does not.
        reason = str(exc) if isinstance(exc, UserError) else f"cannot write {path}: {first_line(exc)[:160]}"
        raise UserError(f"{reason}; {kept} (free space, then --resume)") from None
    for old in list_checkpoints(out)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read and validate a checkpoint; a foreign, damaged or other-config file is a one-line UserError."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise UserError(f"{path}: not a readable training checkpoint ({first_line(exc)[:160]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise UserError(f"{path}: not an axl training checkpoint (no format marker {FORMAT!r})")
    missing = [k for k in ("step", "model", "optimizer", "schedule", "rng", "config") if k not in ckpt]
    if missing:
        raise UserError(f"{path}: training checkpoint is missing {', '.join(missing)}")
    # Fields added to ModelConfig later (e.g. `fim`) take their defaults in older checkpoints.
    saved = {**_CONFIG_DEFAULTS, **ckpt["config"]}
    if config is not None and saved != {**_CONFIG_DEFAULTS, **config}:
        diff = sorted(k for k in set(config) | set(saved) if config.get(k) != saved.get(k))
        detail = ", ".join(f"{k} {saved.get(k)!r} vs {config.get(k)!r}" for k in diff[:3])
        hint = " (a run started without fill-in-the-middle resumes with --fim-rate 0)" if "fim" in diff else ""
        raise UserError(
            f"{path}: checkpoint was trained with a different model config ({detail}); "
            f"use the same --preset/--config/--context or another --out{hint}"
        )
    return ckpt


def latest_checkpoint(out: Path) -> Path | None:
    found = list_checkpoints(out)
    return found[-1] if found else None
