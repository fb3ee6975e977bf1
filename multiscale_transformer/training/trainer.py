"""The training loop: budget, evaluation cadence, checkpoints, exact resume, signals and DistributedDataParallel."""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from multiscale_transformer.errors import UserError
from multiscale_transformer.model.model import MultiScaleTransformer
from multiscale_transformer.settings import default_threads
from multiscale_transformer.training import checkpoint as ckpt_io
from multiscale_transformer.training import distributed as dist_io
from multiscale_transformer.training import report
from multiscale_transformer.training.data import batch_rng, eval_windows, prepare_corpus, sample_batch
from multiscale_transformer.training.optim import DISPLAY_NAMES, build_optimizer
from multiscale_transformer.training.pypi_corpus import packages_of
from multiscale_transformer.training.schedule import Schedule, default_warmup
from multiscale_transformer.training.settings import TrainSettings

__all__ = ["LossModule", "TrainSettings", "Trainer", "resolve_device"]


def resolve_device(name: str) -> str:
    """'auto' -> cuda when there is one, else cpu; 'cuda' without a device is a one-line error."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available (use --device cpu)")
    return name


class LossModule(nn.Module):
    """model -> (total, full, fine) losses: one module so DDP's gradient hooks see the whole forward."""

    def __init__(self, model: MultiScaleTransformer, fine_weight: float) -> None:
        super().__init__()
        self.model = model
        self.fine_weight = fine_weight

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.fine_weight > 0 and self.model.config.n_scales > 1:
            full, fine = self.model.forward_with_fine(x)  # (B, T, V) each
            loss_full = F.cross_entropy(full.flatten(0, 1), y.flatten())
            loss_fine = F.cross_entropy(fine.flatten(0, 1), y.flatten())
            return loss_full + self.fine_weight * loss_fine, loss_full.detach(), loss_fine.detach()
        loss = F.cross_entropy(self.model(x).flatten(0, 1), y.flatten())
        return loss, loss.detach(), loss.detach()


class StopFlag:
    """SIGINT/SIGTERM ask the loop to save and stop at the next step boundary; a second SIGINT aborts."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum


def _to_device(batch: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.from_numpy(batch).to(device)
    return t[:, :-1], t[:, 1:]  # (B, T) inputs, (B, T) next-byte targets


@torch.no_grad()
def evaluate(model: MultiScaleTransformer, windows: np.ndarray, batch_size: int, device: torch.device) -> dict:
    """Mean validation loss of the full model and of the fine path alone, over fixed windows."""
    was_training = model.training
    model.eval()
    totals = {"full": 0.0, "fine": 0.0}
    n = 0
    for i in range(0, len(windows), batch_size):
        x, y = _to_device(windows[i : i + batch_size], device)
        full, fine = model.forward_with_fine(x) if model.config.n_scales > 1 else (model(x), None)
        totals["full"] += F.cross_entropy(full.flatten(0, 1), y.flatten(), reduction="sum").item()
        fine_logits = full if fine is None else fine
        totals["fine"] += F.cross_entropy(fine_logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        n += y.numel()
    model.train(was_training)
    loss, loss_fine = totals["full"] / n, totals["fine"] / n
    return {
        "val_loss": loss,
        "val_bpb": report.bits_per_byte(loss),
        "val_ppl": math.exp(loss),
        "val_loss_fine": loss_fine,
        "val_bpb_fine": report.bits_per_byte(loss_fine),
    }


class Trainer:
    def __init__(self, settings: TrainSettings, log: Callable[[str], None] | None = None) -> None:
        device = resolve_device(settings.device)
        threads = settings.threads or (1 if dist_io.launched_by_torchrun() and device == "cpu" else default_threads())
        self.s = settings = dataclasses.replace(settings, device=device, threads=threads)
        self.device = torch.device(device)
        self.dist = dist_io.init_distributed(self.device)
        self._log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.metrics_path = settings.out / "metrics.jsonl"
        self._postfix: dict[str, str] = {}

    def log(self, msg: str) -> None:
        if self.dist.is_main:
            self._log(msg)

    # ---- set-up: everything that can fail does so before the first step ----

    def _prepare(self) -> None:
        s = self.s
        if self.dist.is_main:
            _check_writable(s.out)
        existing = ckpt_io.latest_checkpoint(s.out)
        if existing and not s.resume:
            raise UserError(f"{s.out} already holds checkpoints; pass --resume to continue or choose another --out")
        if s.resume and existing is None:
            raise UserError(f"--resume: no checkpoint in {ckpt_io.checkpoint_dir(s.out)}; start without --resume")
        self.resume_state = ckpt_io.load_checkpoint(existing, s.config.to_dict()) if s.resume and existing else None
        trained_with = (self.resume_state or {}).get("args", {}).get("optimizer")
        if trained_with is not None and trained_with != s.optimizer:  # its state would not load, or load wrong
            raise UserError(
                f"{existing}: this run was trained with --optimizer {trained_with}; "
                f"resume it with --optimizer {trained_with} (got {s.optimizer})"
            )

        torch.set_num_threads(s.threads)
        if self.dist.is_main:  # rank 0 writes the cache; the others read it once it exists
            self.corpus, self.skipped = prepare_corpus(s.data, s.cache_dir, s.glob, s.val_fraction)
        dist_io.barrier(self.dist)
        if not self.dist.is_main:
            self.corpus, self.skipped = prepare_corpus(s.data, s.cache_dir, s.glob, s.val_fraction)
        T = s.config.max_seq_len
        self.val_windows = eval_windows(self.corpus.val, T, s.eval_windows)
        sample_batch(self.corpus.train, 1, T, batch_rng(s.seed, 0, 0))  # fails now if the split is too short

        torch.manual_seed(s.seed)
        self.model = MultiScaleTransformer(s.config)
        if s.init_from is not None and self.resume_state is None:  # a resumed run has its own weights
            self.model.load_state_dict(MultiScaleTransformer.from_pretrained(s.init_from).state_dict())
        self.model = self.model.to(self.device).train()
        self.optimizer = build_optimizer(self.model, s.optimizer, s.lr, s.weight_decay)
        self.base_lr = self.optimizer.param_groups[0]["lr"]
        loss_module: nn.Module = LossModule(self.model, s.fine_loss_weight)
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            loss_module = DistributedDataParallel(loss_module)
        self.loss_module = torch.compile(loss_module) if s.compile else loss_module
        self.raw_loss_module = loss_module

    # ---- one optimizer step ----

    def _micro_batches(self, step: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        s, first = self.s, self.dist.rank * self.s.grad_accum
        T = s.config.max_seq_len
        return [
            _to_device(
                sample_batch(self.corpus.train, s.batch_size, T, batch_rng(s.seed, step, first + m), s.fim_rate),
                self.device,
            )
            for m in range(s.grad_accum)
        ]

    def _forward_backward(self, step: int) -> tuple[float, float]:
        """Gradients of one optimizer step's micro-batches; returns mean (full, fine) loss."""
        full_sum = fine_sum = 0.0
        batches = self._micro_batches(step)
        for i, (x, y) in enumerate(batches):
            last = i == len(batches) - 1
            sync_off = self.dist.enabled and not last
            ctx = self.raw_loss_module.no_sync() if sync_off else contextlib.nullcontext()
            with ctx:
                loss, full, fine = self.loss_module(x, y)
                (loss / len(batches)).backward()
            full_sum += full.item()
            fine_sum += fine.item()
        return full_sum / len(batches), fine_sum / len(batches)

    def _calibrate_horizon(self, budget_left: float) -> int:
        """A first guess of the steps that fit the time budget, from two timed forward+backward passes
        (no update) and one evaluation batch; the loop refines it from its real pace (`_refine_total`)."""
        rng = torch.get_rng_state()
        small = self.val_windows[: self.s.batch_size]
        self._forward_backward(0)  # first calls pay one-time allocation costs
        evaluate(self.model, small, self.s.batch_size, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        for _ in range(2):
            self._forward_backward(0)
            self.optimizer.zero_grad(set_to_none=True)
        per_step = (time.perf_counter() - t0) / 2 * 1.05  # + optimizer update and logging
        t0 = time.perf_counter()
        evaluate(self.model, small, self.s.batch_size, self.device)
        per_eval = (time.perf_counter() - t0) * math.ceil(len(self.val_windows) / self.s.batch_size)
        torch.set_rng_state(rng)
        return max(1, int(budget_left / (per_step + per_eval / self.s.eval_every)))

    def _refine_total(self, schedule: Schedule, step: int, done: int, seconds: float, left: float) -> Schedule:
        """Re-aim the cosine at the step where the budget will run out, at the pace measured so far
        (evaluations included); rank 0's estimate is used everywhere so that all ranks share one lr."""
        if done < 5 or seconds <= 0:
            return schedule
        total = step + max(0, int(left / (seconds / done)))
        total = dist_io.broadcast_int(self.dist, max(total, schedule.warmup, step), self.device)
        return dataclasses.replace(schedule, total=total)

    # ---- the run ----

    def run(self) -> dict[str, Any]:
        try:
            self._prepare()
            return self._train()
        finally:
            dist_io.shutdown(self.dist)

    def _train(self) -> dict[str, Any]:
        s = self.s
        step, elapsed, bytes_seen = 0, 0.0, 0
        if self.resume_state is not None:
            st = self.resume_state
            self.model.load_state_dict(st["model"])
            self.optimizer.load_state_dict(st["optimizer"])
            ckpt_io.set_rng_state(st["rng"])
            step, elapsed, bytes_seen = int(st["step"]), float(st["elapsed"]), int(st["bytes_seen"])
            schedule = Schedule(**st["schedule"])
            if s.max_steps is not None and s.max_steps != schedule.total:
                schedule = dataclasses.replace(schedule, total=s.max_steps)
            if self.dist.is_main:
                report.truncate_metrics(self.metrics_path, step)
            self.log(f"resumed from {ckpt_io.latest_checkpoint(s.out)} at step {step}")
        else:
            if self.dist.is_main:
                self.metrics_path.unlink(missing_ok=True)
            if s.max_steps is not None:
                total = s.max_steps
            else:
                total = dist_io.broadcast_int(self.dist, self._calibrate_horizon(s.time_budget or 0.0), self.device)
            schedule = Schedule(self.base_lr, s.warmup or default_warmup(total), total, s.min_lr_ratio, s.schedule)

        tokens_per_step = s.batch_size * s.config.max_seq_len * s.grad_accum * self.dist.world_size
        stop = StopFlag()
        stop.install()
        bar = self._progress(schedule.total, step)
        last_eval: dict = {}
        loss_window: list[float] = []
        reason = "max steps"
        segment_start = time.perf_counter()
        base_elapsed, start_step = elapsed, step
        last_saved = segment_start
        try:
            while True:
                elapsed = base_elapsed + time.perf_counter() - segment_start
                over_budget = s.time_budget is not None and elapsed >= s.time_budget
                if dist_io.any_rank(self.dist, stop.signal is not None or over_budget, self.device):
                    reason = "signal" if stop.signal is not None else "time budget"
                    break
                if step >= schedule.total:
                    reason = "max steps" if s.max_steps is not None else "time budget"
                    break
                lr = schedule.lr_at(step)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                loss, loss_fine = self._forward_backward(step)
                grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.grad_clip or math.inf))
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                step += 1
                bytes_seen += tokens_per_step
                loss_window.append(loss)
                if not math.isfinite(loss):
                    raise UserError(f"training diverged at step {step} (loss {loss}); lower --lr")
                if step % s.log_every == 0 or step == schedule.total:
                    elapsed = base_elapsed + time.perf_counter() - segment_start
                    row = {
                        "step": step,
                        "lr": lr,
                        "loss": dist_io.mean_over_ranks(self.dist, sum(loss_window) / len(loss_window), self.device),
                        "loss_fine": loss_fine,
                        "grad_norm": grad_norm,
                        "bytes": bytes_seen,
                        "time": round(elapsed, 3),
                        "bytes_per_s": bytes_seen / max(elapsed, 1e-9),
                    }
                    loss_window.clear()
                    self._emit(row, bar)
                    if s.max_steps is None and s.time_budget is not None:
                        schedule = self._refine_total(
                            schedule, step, step - start_step, elapsed - base_elapsed, s.time_budget - elapsed
                        )
                        if bar is not None:
                            bar.total = schedule.total
                if step % s.eval_every == 0:
                    last_eval = self._eval_row(step, bytes_seen, base_elapsed, segment_start, bar)
                now = time.perf_counter()
                due = s.checkpoint_minutes > 0 and now - last_saved >= s.checkpoint_minutes * 60
                if step % s.checkpoint_every == 0 or due:
                    self._save_state(step, schedule, base_elapsed + now - segment_start, bytes_seen)
                    last_saved = time.perf_counter()
                if bar is not None:
                    bar.update(1)
        finally:
            stop.restore()
            if bar is not None:
                bar.close()
        elapsed = base_elapsed + time.perf_counter() - segment_start
        if not last_eval or last_eval["step"] != step:
            last_eval = self._eval_row(step, bytes_seen, base_elapsed, segment_start, None)
        self._save_state(step, schedule, elapsed, bytes_seen)
        results = self._finish(step, elapsed, bytes_seen, last_eval, reason)
        dist_io.barrier(self.dist)
        return results

    def _eval_row(self, step: int, bytes_seen: int, base: float, start: float, bar: Any) -> dict:
        metrics = evaluate(self.model, self.val_windows, self.s.batch_size, self.device)
        row = {"step": step, "bytes": bytes_seen, "time": round(base + time.perf_counter() - start, 3), **metrics}
        self._emit(row, bar)
        return row

    def _emit(self, row: dict, bar: Any) -> None:
        if not self.dist.is_main:
            return
        report.append_metrics(self.metrics_path, row)
        if bar is not None:
            if "loss" in row:
                self._postfix["loss"] = f"{row['loss']:.3f}"
                self._postfix["B/s"] = f"{row['bytes_per_s']:.0f}"
                if self.s.time_budget is not None:
                    self._postfix["left"] = f"{max(0.0, self.s.time_budget - row['time']):.0f}s"
            if "val_bpb" in row:
                self._postfix["val_bpb"] = f"{row['val_bpb']:.3f}"
            bar.set_postfix(self._postfix, refresh=False)
        elif self.s.quiet and "val_bpb" in row:
            self.log(f"step {row['step']}: val bpb {row['val_bpb']:.3f} (fine path {row['val_bpb_fine']:.3f})")

    def _progress(self, total: int, initial: int) -> Any:
        if self.s.quiet or not self.dist.is_main:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr)

    def _save_state(self, step: int, schedule: Schedule, elapsed: float, bytes_seen: int) -> None:
        if not self.dist.is_main:
            return
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": asdict(schedule),
            "rng": ckpt_io.rng_state(),
            "config": self.s.config.to_dict(),
            "args": _plain(self.s.to_json()),
            "elapsed": elapsed,
            "bytes_seen": bytes_seen,
            "data": {
                "cache": str(self.corpus.directory),
                "train_sha256": self.corpus.manifest["splits"]["train"]["sha256"],
            },
        }
        ckpt_io.save_checkpoint(self.s.out, step, state, self.s.keep_checkpoints)

    def _finish(self, step: int, elapsed: float, bytes_seen: int, last_eval: dict, reason: str) -> dict[str, Any]:
        if not self.dist.is_main:
            return {}
        s, corpus = self.s, self.corpus
        rows = report.read_metrics(self.metrics_path)
        train_rows = [r for r in rows if "loss" in r]
        final_loss = train_rows[-1]["loss"] if train_rows else float("nan")
        unigram = corpus.val.unigram_entropy_bits()
        training_results = {
            "model": s.model_name,
            "params": self.model.num_parameters(),
            "steps": step,
            "time": round(elapsed, 1),
            "final_loss": round(final_loss, 4),
            "perplexity": round(last_eval["val_ppl"], 4),
            "optimizer": DISPLAY_NAMES[s.optimizer],
            "attention": "SDPA",
            "max_seq_len": s.config.max_seq_len,
            "context_window": s.config.max_seq_len,
        }
        cores = s.threads * self.dist.world_size
        results = {
            "training_results": training_results,
            "stopped_by": reason,
            "bytes_seen": bytes_seen,
            "bytes_per_second": round(bytes_seen / max(elapsed, 1e-9), 1),
            "val_loss": last_eval["val_loss"],
            "val_bits_per_byte": last_eval["val_bpb"],
            "val_bits_per_byte_fine": last_eval["val_bpb_fine"],
            "val_perplexity": last_eval["val_ppl"],
            "val_unigram_entropy_bits": unigram,
            "corpus": {
                "sources": corpus.manifest["sources"],
                "cache": str(corpus.directory),
                "train_documents": corpus.train.n_docs,
                "train_bytes": corpus.train.n_bytes,
                "val_documents": corpus.val.n_docs,
                "val_bytes": corpus.val.n_bytes,
                "skipped": dict(self.skipped.counts),
                "packages": packages_of(corpus.manifest["sources"]),
            },
            "hardware": report.hardware(str(self.device), s.threads, self.dist.world_size),
            "energy": report.energy_estimate(elapsed, str(self.device), cores, self.dist.world_size),
            "settings": _plain(s.to_json()),
        }
        self.model.save_pretrained(s.out, extra_config={"training_results": training_results})
        report.write_results(s.out / "results.json", results)
        note = report.plot_curves(report.read_metrics(self.metrics_path), s.out / "training.png", unigram)
        if note:
            self.log(note)
        self.log(
            f"stopped by {reason} at step {step} after {elapsed:.0f}s; {bytes_seen:,} bytes at "
            f"{results['bytes_per_second']:,.0f} B/s\n"
            f"validation: {last_eval['val_bpb']:.3f} bits/byte (fine path alone {last_eval['val_bpb_fine']:.3f}), "
            f"perplexity {last_eval['val_ppl']:.3f}; unigram entropy of the validation bytes {unigram:.3f} bits\n"
            f"corpus: {corpus.train.n_docs} train / {corpus.val.n_docs} validation files, "
            f"skipped: {self.skipped.summary()}\n"
            f"model written to {s.out} (axl generate --model {s.out} 'def f():')"
        )
        return results


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".axl-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"{out}: output directory is not writable ({exc.strerror or exc})") from None


def _plain(value: Any) -> Any:
    """JSON-safe copy (for checkpoints read with weights_only=True and for results.json)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
