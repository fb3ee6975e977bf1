"""TrainSettings: everything a training run needs, each setting with its `axl train` flag, default and help.

Free of torch, so that building the `axl` parser stays cheap. `axl train` adds only the flags that
build the model's config (--preset, --config, --context); the rest come from these fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from multiscale_transformer.errors import UserError
from multiscale_transformer.model.config import ModelConfig
from multiscale_transformer.settings import (
    duration,
    flag,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_int,
)
from multiscale_transformer.training.data import check_sources
from multiscale_transformer.training.fim import DEFAULT_FIM_RATE, default_fim_rate

DEFAULT_TIME_BUDGET = 20 * 60.0  # seconds, when neither a time budget nor a step count is given
MODEL, DATA, OPTIMISATION, RUN = "model", "data", "optimisation", "run"


@dataclass
class TrainSettings:
    """Everything a run needs; each `flag` field is also an `axl train` flag."""

    out: Path = flag(help="output directory (model, metrics, checkpoints)", type=Path)
    config: ModelConfig = field(default_factory=ModelConfig)
    model_name: str = "custom"
    init_from: Path | None = flag(
        None,
        "start from this model's weights and config (fine-tuning; fresh optimizer and schedule)",
        type=Path,
        metavar="MODEL",
        group=MODEL,
    )
    data: list[Path] | None = flag(
        None,
        "directories, files, .jsonl (content/text), .txt; `stdlib` is the standard library (the default)",
        type=Path,
        nargs="+",
        group=DATA,
    )
    glob: str = flag("*.py", "file-name pattern inside --data directories", group=DATA)
    cache_dir: Path | None = flag(None, "prepared-corpus cache (default ~/.cache/axl/corpus)", type=Path, group=DATA)
    val_fraction: float = flag(0.05, "share of files held out", type=fraction, group=DATA)
    # Muon + WSD: the best recipe measured (docs/quality.md: mini and tiny, both architectures); Lion,
    # the AXL card's optimizer, stays available.
    optimizer: str = flag(
        "muon",
        "muon = Muon for hidden matrices + AdamW for the rest; lion = the AXL card's",
        choices=("lion", "adamw", "sgd", "muon"),
        group=OPTIMISATION,
    )
    lr: float | None = flag(
        None,
        "peak lr (default: muon 1e-2, lion 1e-3, adamw 3e-3, sgd 0.1, x 256/d_model above 256)",
        type=non_negative_float,
        group=OPTIMISATION,
    )
    weight_decay: float | None = flag(
        None, "default: lion 0.3, adamw and muon 0.1, sgd 0", type=non_negative_float, group=OPTIMISATION
    )
    batch_size: int = flag(16, "windows per micro-batch per process", type=positive_int, group=OPTIMISATION)
    grad_accum: int = flag(1, "micro-batches per optimizer step", type=positive_int, group=OPTIMISATION)
    warmup: int | None = flag(
        None, "warmup steps (default 5%% of the run, at most 200)", type=non_negative_int, group=OPTIMISATION
    )
    min_lr_ratio: float = flag(0.1, "lr floor as a share of --lr", type=non_negative_float, group=OPTIMISATION)
    schedule: str = flag(
        "wsd",
        "lr after warmup: wsd (flat, then linear decay over the last half) or cosine",
        choices=("cosine", "wsd"),
        group=OPTIMISATION,
    )
    grad_clip: float = flag(1.0, "max gradient norm; 0 = off", type=non_negative_float, group=OPTIMISATION)
    fine_loss_weight: float = flag(
        0.0, "weight of the fine-path-alone loss", type=non_negative_float, group=OPTIMISATION
    )
    # None: the config's `fim` (the preset's, or --init-from's model's) decides (training/fim.py).
    fim_rate: float | None = flag(
        None,
        f"share of documents trained as fill-in-the-middle (default {DEFAULT_FIM_RATE} for a model whose "
        "config has fim, such as the trained presets, else 0; 0 = off)",
        type=non_negative_float,
        group=OPTIMISATION,
    )
    max_steps: int | None = flag(None, "optimizer steps", type=positive_int, group=RUN)
    time_budget: float | None = flag(
        None, "training time, e.g. 90s, 20m, 1h (default 20m; summed over resumes)", type=duration, group=RUN
    )
    eval_every: int = flag(100, "steps between validations", type=positive_int, group=RUN)
    eval_windows: int = flag(64, "validation windows per evaluation", type=positive_int, group=RUN)
    log_every: int = flag(10, "steps between metrics rows", type=positive_int, group=RUN)
    checkpoint_every: int = flag(200, "steps between checkpoints", type=positive_int, group=RUN)
    # By time too: 200 steps are a minute of `tiny` and hours of `reasoning`; a kill should lose minutes.
    checkpoint_minutes: float = flag(
        5.0,
        "minutes between checkpoints, whichever of this and --checkpoint-every comes first (0: by steps only)",
        type=non_negative_float,
        group=RUN,
    )
    keep_checkpoints: int = flag(3, "checkpoints kept", type=positive_int, group=RUN)
    resume: bool = flag(False, "continue from the last checkpoint in --out", group=RUN)
    seed: int = flag(0, "seed of weights and batches", type=int, group=RUN)
    threads: int | None = flag(
        None, "CPU threads per process (default: cores; 1 under torchrun)", type=positive_int, group=RUN
    )
    device: str = flag("auto", "auto = cuda when there is one", choices=("auto", "cpu", "cuda"), group=RUN)
    compile: bool = flag(False, "torch.compile the model (measured no gain on CPU)", group=RUN)
    quiet: bool = flag(False, "no progress bar: one log line per evaluation", group=RUN)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.max_steps is None and self.time_budget is None:
            self.time_budget = DEFAULT_TIME_BUDGET
        if self.lr is not None and not self.lr > 0:
            raise UserError("--lr must be positive")
        if self.fim_rate is None:
            self.fim_rate = default_fim_rate(self.config)
        if not 0.0 <= self.fim_rate <= 1.0:
            raise UserError(f"--fim-rate must be in [0, 1], got {self.fim_rate}")
        # config.fim says what the weights learned: a new model learns the sentinels from step 0 or
        # never; a fine-tuned one keeps what its first training taught it.
        fim = self.fim_rate > 0 or (self.config.fim and self.init_from is not None)
        if fim != self.config.fim:
            self.config = dataclasses.replace(self.config, fim=fim)
        if self.data:
            check_sources(self.data)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["out"] = str(self.out)
        d["config"] = self.config.to_dict()
        d["data"] = [str(p) for p in self.data] if self.data else None
        d["cache_dir"] = str(self.cache_dir) if self.cache_dir else None
        d["init_from"] = str(self.init_from) if self.init_from else None
        return d
