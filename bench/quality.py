"""Quality per CPU-minute: several training configurations side by side at equal CPU budgets, scored on
two held-out sets at each budget (issue 12).

    python bench/quality.py --name sweep1                          # the default 6 configs, 2,5,10,20 min
    python bench/quality.py --name smoke --budgets 0.2,0.5 --heldout-bytes 20000
    python bench/quality.py --name sweep1 --resume                 # continue after a kill
    python bench/quality.py --export-heldout ~/axl-data/heldout-src  # the third-party set, for axl eval
    python bench/quality.py --name muon-lr --configs ms-muon-wsd,ms-muon-wsd@lr=0.01

A configuration is ARCH-OPTIMIZER-SCHEDULE[@key=value,...]: ARCH `ms` (the preset) or `flat` (its
equal-parameter single-scale twin, `ModelConfig.flat()`), OPTIMIZER a training/optim.py name,
SCHEDULE a training/schedule.py kind; options lr=, wd=, seed=, fim=, coarse= (ModelConfig.coarse_input),
layers= (ModelConfig.layers_per_scale, e.g. 1-2-3), post= (ModelConfig.post_fusion_layers), pairs=
(ModelConfig.cross_pairs as SOURCE:TARGET+..., e.g. 1:0+2:0), cross= (ModelConfig.n_cross_attn_layers),
ctx= (ModelConfig.max_seq_len), win= and cwin= (ModelConfig.attention_window, coarse_window), batch=
(windows per step for this configuration: ctx=1024,batch=4 reads the bytes per step of 256 x 16),
short= (a context curriculum: that share of the budget on 256-byte windows, then the context);
an option not given keeps the preset's value, so `ms` is what `axl train --preset` builds.

Side by side, on one thread: every configuration has its own model, optimizer, schedule and batch
stream, and one process trains them in turn, `--slice` CPU-seconds each. Each is charged only the
CPU time (time.process_time) of its own training steps, so all get the same budget under the same
machine load, and the evaluation (not charged) cannot shift that. The lr schedule of each is aimed
at the largest budget and re-aimed after every slice at the step where its budget will run out at
its measured pace (as `axl train --time-budget` does), so the smaller budgets' rows are checkpoints
of the longest run, not separately decayed runs.

Held-out sets, fixed subsets capped at `--heldout-bytes` each, scored by the honest sliding window
of evaluation/bpb.py (every byte once, stride = half the context): (a) the stdlib validation split
`axl train` holds out; (b) pinned third-party packages, never in any training corpus, fetched by
`pip download --no-binary :all: --no-deps` into `--heldout-cache` (.py files only, manifest with each
file's sha256). tornado and paramiko are reserved for independent evaluation and are never used.

Writes ~/axl-runs/quality/NAME/: results.jsonl (one row per configuration and budget), heldout.json
(both subsets: names, bytes, sha256), state/CONFIG.pt (resumable training state), log lines on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from multiscale_transformer.atomic import atomic_path
from multiscale_transformer.evaluation.bpb import evaluate_documents, validation_documents
from multiscale_transformer.model.config import ModelConfig
from multiscale_transformer.model.model import MultiScaleTransformer
from multiscale_transformer.training import sdist
from multiscale_transformer.training.data import Corpus, Document, batch_rng, prepare_corpus, sample_batch
from multiscale_transformer.training.fim import default_fim_rate
from multiscale_transformer.training.optim import build_optimizer
from multiscale_transformer.training.pypi_corpus import HELDOUT_PACKAGES, RESERVED
from multiscale_transformer.training.schedule import Schedule, default_warmup
from multiscale_transformer.training.trainer import LossModule, _to_device

DEFAULT_CONFIGS = (
    "ms-lion-cosine",
    "flat-lion-cosine",
    "ms-adamw-cosine",
    "flat-adamw-cosine",
    "ms-muon-wsd",
    "flat-muon-wsd",
)
RUNS = Path.home() / "axl-runs" / "quality"
SHORT_WINDOW = 256  # the curriculum's first windows (option short=): the published context


# ---- configurations ----


@dataclass(frozen=True)
class Spec:
    name: str
    arch: str  # "ms" or "flat"
    optimizer: str
    schedule: str
    lr: float | None = None
    weight_decay: float | None = None
    seed: int = 0
    # Each option below left unset (None, empty) keeps the preset's value, so `ms` is the preset itself.
    fim: float | None = None  # share of documents trained as fill-in-the-middle; None: the preset's default
    coarse: str | None = None  # ModelConfig.coarse_input: what the coarser scales pool
    layers: str = ""  # ModelConfig.layers_per_scale as "1-2-3"
    post: int | None = None  # ModelConfig.post_fusion_layers
    pairs: str = ""  # ModelConfig.cross_pairs as "1:0+2:0"
    cross: int | None = None  # ModelConfig.n_cross_attn_layers
    ctx: int | None = None  # ModelConfig.max_seq_len: bytes of context (training windows and evaluation)
    win: int | None = None  # ModelConfig.attention_window: bytes back that byte-level queries attend
    cwin: int | None = None  # ModelConfig.coarse_window: bytes back that the coarser scales' queries attend
    batch: int | None = None  # windows per step, instead of --batch-size (equal bytes per step across contexts)
    # A context curriculum: this share of the budget (CPU time) on 256-byte windows, the same bytes per
    # step, then the model's own context. The windows change no weight, so one model does both.
    short: float = 0.0


def parse_spec(text: str, seed: int) -> Spec:
    """'ms-muon-wsd@lr=0.01,seed=1' -> Spec; the name is the text itself, so it is unique per row."""
    base, _, opts = text.partition("@")
    parts = base.split("-")
    if len(parts) != 3 or parts[0] not in ("ms", "flat"):
        raise SystemExit(f"--configs: expected ARCH-OPTIMIZER-SCHEDULE with ARCH ms|flat, got {text!r}")
    values: dict[str, Any] = {"seed": seed}
    for item in filter(None, opts.split(",")):
        key, _, value = item.partition("=")
        if key not in OPTIONS:
            raise SystemExit(f"--configs {text!r}: unknown option {key!r} ({', '.join(OPTIONS)})")
        converted = OPTIONS[key](value)
        values[{"wd": "weight_decay"}.get(key, key)] = converted
    return Spec(text, parts[0], parts[1], parts[2], **values)


OPTIONS: dict[str, type] = {
    "lr": float,
    "wd": float,
    "seed": int,
    "fim": float,
    "coarse": str,
    "layers": str,
    "post": int,
    "pairs": str,
    "cross": int,
    "ctx": int,
    "win": int,
    "cwin": int,
    "batch": int,
    "short": float,
}


def split_configs(text: str) -> list[str]:
    """'ms-muon-wsd@lr=0.01,seed=1,flat-muon-wsd' -> two configs: a comma starts a new config only
    where an ARCH- prefix follows it, so options keep their own commas."""
    return [c for c in re.split(r",(?=(?:ms|flat)-)", text) if c]


def model_config(preset: str, spec: Spec) -> ModelConfig:
    """The arm's model: the preset with the spec's architecture options, or, for `flat`, the
    equal-parameter twin of that multi-scale model (so `flat-...@layers=2-2-6` matches its `ms` arm)."""
    options: dict[str, Any] = {}
    if spec.fim is not None:
        options["fim"] = spec.fim > 0
    if spec.coarse is not None:
        options["coarse_input"] = spec.coarse
    if spec.post is not None:
        options["post_fusion_layers"] = spec.post
    if spec.layers:
        options["layers_per_scale"] = [int(n) for n in spec.layers.split("-")]
    if spec.pairs:
        options["cross_pairs"] = [[int(i) for i in pair.split(":")] for pair in spec.pairs.split("+")]
    if spec.cross is not None:
        options["n_cross_attn_layers"] = spec.cross
    for field, key in (("ctx", "max_seq_len"), ("win", "attention_window"), ("cwin", "coarse_window")):
        if getattr(spec, field) is not None:
            options[key] = getattr(spec, field)
    config = ModelConfig.from_name(preset, **options)  # validated like a config.json
    return config.flat() if spec.arch == "flat" else config


# ---- held-out sets ----


def capped(docs: list[Document], cap: int) -> list[Document]:
    """A fixed subset of about `cap` bytes: documents in sha256(name) order, the last one cut to fit.
    A cut file is still scored from its start, as a file is."""
    out, total = [], 0
    for d in sorted(docs, key=lambda d: hashlib.sha256(d.name.encode()).hexdigest()):
        if total >= cap:
            break
        data = d.data[: cap - total]
        out.append(Document(d.name, data))
        total += len(data)
    return out


def fetch_heldout(cache: Path, packages: tuple[str, ...]) -> tuple[list[Document], list[dict]]:
    """Each pinned sdist, downloaded once (training/sdist.py), as documents named PACKAGE/path, and
    one manifest entry per package."""
    docs, manifest = [], []
    for spec in packages:
        if sdist.pinned(spec)[0] in RESERVED:
            raise SystemExit(f"{spec}: reserved for independent evaluation, never used here")
        archive = sdist.download(spec, cache)
        files = sdist.members(archive)
        py = sdist.python_files(files)
        docs += [Document(f"{spec}/{rel}", data) for rel, data in py]
        manifest.append(
            {
                "package": spec,
                "sdist": archive.name,
                "sdist_sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
                "license": sdist.license_of(files),
                "files": [
                    {"path": rel, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()} for rel, data in py
                ],
            }
        )
    return docs, manifest


def heldout_sets(args: argparse.Namespace) -> tuple[dict[str, list[Document]], dict]:
    """{set name: documents} and the manifest written to heldout.json; each set about args.heldout_bytes."""
    third, packages = fetch_heldout(args.heldout_cache, HELDOUT_PACKAGES)
    per_package = args.heldout_bytes // len(HELDOUT_PACKAGES)
    third_subset = [
        d for spec in HELDOUT_PACKAGES for d in capped([x for x in third if x.name.startswith(spec + "/")], per_package)
    ]
    sets = {"stdlib": capped(validation_documents(None), args.heldout_bytes), "thirdparty": third_subset}
    manifest = {
        "packages": packages,
        "subsets": {
            k: [{"name": d.name, "bytes": len(d.data), "sha256": hashlib.sha256(d.data).hexdigest()} for d in docs]
            for k, docs in sets.items()
        },
    }
    return sets, manifest


# ---- one configuration's training ----


class Arm:
    """One configuration: model, optimizer, schedule, step counter and the CPU seconds charged to it."""

    def __init__(self, spec: Spec, args: argparse.Namespace, corpus: Corpus) -> None:
        self.spec, self.args, self.corpus = spec, args, corpus
        self.config = model_config(args.preset, spec)  # options validated by ModelConfig
        self.fim_rate = default_fim_rate(self.config) if spec.fim is None else spec.fim
        self.batch_size = spec.batch or args.batch_size
        torch.manual_seed(spec.seed)
        self.model = MultiScaleTransformer(self.config).train()
        self.optimizer = build_optimizer(self.model, spec.optimizer, spec.lr, spec.weight_decay)
        self.loss = LossModule(self.model, 0.0)
        self.horizon = max(args.budgets) * 60.0
        self.step, self.cpu, self.bytes_seen = 0, 0.0, 0
        self.schedule = Schedule(self.optimizer.param_groups[0]["lr"], 1, 1, args.min_lr_ratio, spec.schedule)
        self.rows: list[dict] = []
        self.recent_loss: list[float] = []

    def start(self) -> None:
        """Aim the schedule from two timed (uncharged, discarded) forward+backward passes."""
        for _ in range(3):  # the first pays one-time allocations
            t0 = time.process_time()
            self._forward_backward()
            per_step = time.process_time() - t0
            self.optimizer.zero_grad(set_to_none=True)
        total = max(10, int(self.horizon / (per_step * 1.1)))  # + the optimizer update
        self.schedule = dataclasses.replace(self.schedule, warmup=default_warmup(total), total=total)

    def window(self) -> tuple[int, int]:
        """(bytes per window, windows) of the next step: the curriculum's short phase, or the context."""
        T = self.config.max_seq_len
        if self.cpu < self.spec.short * self.horizon and T > SHORT_WINDOW:
            return SHORT_WINDOW, self.batch_size * T // SHORT_WINDOW
        return T, self.batch_size

    def _forward_backward(self) -> float:
        T, B = self.window()
        rng = batch_rng(self.spec.seed, self.step, 0)
        batch = sample_batch(self.corpus, B, T, rng, self.fim_rate)
        x, y = _to_device(batch, torch.device("cpu"))
        loss, _, _ = self.loss(x, y)
        loss.backward()
        return float(loss.detach())

    def train_until(self, cpu_limit: float) -> None:
        """Train whole steps while this arm's charged CPU time is below cpu_limit."""
        while self.cpu < cpu_limit:
            t0 = time.process_time()
            T, B = self.window()
            lr = self.schedule.lr_at(self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            loss = self._forward_backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.cpu += time.process_time() - t0
            self.step += 1
            self.bytes_seen += B * T
            self.recent_loss = [*self.recent_loss[-49:], loss]
            if not math.isfinite(loss):
                raise RuntimeError(f"{self.spec.name}: diverged at step {self.step} (loss {loss})")
        # Re-aim the decay at the step where the horizon runs out at the pace measured so far.
        left = self.horizon - self.cpu
        total = self.step + max(0, int(left / (self.cpu / self.step)))
        self.schedule = dataclasses.replace(self.schedule, total=max(total, self.schedule.warmup, self.step))

    def evaluate(self, budget: float, sets: dict[str, list[Document]]) -> dict:
        t0 = time.perf_counter()
        results = {k: evaluate_documents(self.model, docs) for k, docs in sets.items()}
        scores = {k: r.bits_per_byte for k, r in results.items()}
        self.model.train()  # evaluate_documents leaves the model in eval mode
        row = {
            "context": self.config.max_seq_len,
            "attention_window": self.config.attention_window,
            "coarse_window": self.config.coarse_window,
            "batch": self.batch_size,
            "short": self.spec.short,
            "by_position": {k: {b["band"]: b["bits_per_byte"] for b in r.by_position()} for k, r in results.items()},
            "config": self.spec.name,
            "arch": self.spec.arch,
            "optimizer": self.spec.optimizer,
            "schedule": self.spec.schedule,
            "seed": self.spec.seed,
            "fim": self.fim_rate,
            "coarse_input": self.config.coarse_input,
            "layers_per_scale": self.config.scale_depths,
            "post_fusion_layers": self.config.post_fusion_layers,
            "cross_pairs": self.config.directed_pairs if self.config.n_cross_attn_layers else [],
            "params": self.model.num_parameters(),
            "budget_min": budget,
            "cpu_s": round(self.cpu, 1),
            "step": self.step,
            "bytes": self.bytes_seen,
            "bytes_per_cpu_s": round(self.bytes_seen / max(self.cpu, 1e-9), 1),
            "lr": self.schedule.lr_at(self.step),
            "planned_total_steps": self.schedule.total,
            "train_loss_bpb": sum(self.recent_loss) / len(self.recent_loss) / math.log(2),
            **{f"{k}_bpb": round(v, 4) for k, v in scores.items()},
            "eval_s": round(time.perf_counter() - t0, 1),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        self.rows.append(row)
        return row

    def state(self) -> dict:
        return {
            "spec": dataclasses.asdict(self.spec),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": dataclasses.asdict(self.schedule),
            "step": self.step,
            "cpu": self.cpu,
            "bytes_seen": self.bytes_seen,
            "rows": self.rows,
            "recent_loss": self.recent_loss,
        }

    def load(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule = Schedule(**state["schedule"])
        self.step, self.cpu, self.bytes_seen = state["step"], state["cpu"], state["bytes_seen"]
        self.rows, self.recent_loss = state["rows"], state["recent_loss"]


# ---- the run ----


def save_atomic(path: Path, write: Any) -> None:
    """Write through the package's atomic helper, so a kill leaves the old file or the new, never half of one."""
    with atomic_path(path) as tmp:
        write(tmp)


def save_state(run_dir: Path, arm: Arm) -> None:
    save_atomic(run_dir / "state" / f"{arm.spec.name}.pt", lambda p: torch.save(arm.state(), p))


def write_results(run: Path, arms: list[Arm]) -> None:
    """results.jsonl: every arm's rows, plus those of configurations an earlier invocation ran."""
    path, names = run / "results.jsonl", {a.spec.name for a in arms}
    old = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    rows = [r for r in old if r["config"] not in names] + [r for a in arms for r in a.rows]
    rows.sort(key=lambda r: (r["budget_min"], r["config"]))
    save_atomic(run / "results.jsonl", lambda p: p.write_text("".join(json.dumps(r) + "\n" for r in rows)))


def table(arms: list[Arm]) -> str:
    lines = [f"{'config':28} {'params':>10} {'min':>5} {'steps':>6} {'B/cpu-s':>8} {'stdlib':>7} {'3rd-party':>9}"]
    for r in sorted((r for a in arms for r in a.rows), key=lambda r: (r["budget_min"], r["config"])):
        lines.append(
            f"{r['config']:28} {r['params']:>10,} {r['budget_min']:>5g} {r['step']:>6} {r['bytes_per_cpu_s']:>8.0f} "
            f"{r['stdlib_bpb']:>7.3f} {r['thirdparty_bpb']:>9.3f}"
        )
    return "\n".join(lines)


def markdown(rows: list[dict]) -> str:
    """One line per configuration: bits/byte on both sets at each budget (docs/quality.md's table)."""
    budgets = sorted({r["budget_min"] for r in rows})
    by_config: dict[str, dict[float, dict]] = {}
    for r in rows:
        by_config.setdefault(r["config"], {})[r["budget_min"]] = r
    head = "| config | params | bytes/CPU-s | " + " | ".join(f"{b:g} min stdlib / 3rd-party" for b in budgets) + " |"
    lines = [head, "|" + "---|" * (3 + len(budgets))]
    for name, at in by_config.items():
        last = at[max(at)]
        cells = [
            f"{at[b]['stdlib_bpb']:.3f} / {at[b]['thirdparty_bpb']:.3f}" if b in at else "not reached" for b in budgets
        ]
        lines.append(f"| {name} | {last['params']:,} | {last['bytes_per_cpu_s']:,.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    if args.report:
        path = RUNS / args.name / "results.jsonl"
        print(markdown([json.loads(line) for line in path.read_text().splitlines()]))
        return
    torch.set_num_threads(1)
    run_dir = RUNS / args.name
    (run_dir / "state").mkdir(parents=True, exist_ok=True)
    if (run_dir / "results.jsonl").exists() and not args.resume:
        raise SystemExit(f"{run_dir} already has results; pass --resume or choose another --name")
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    settings["torch"] = torch.__version__
    (run_dir / "settings.json").write_text(json.dumps(settings, indent=1))
    sets, manifest = heldout_sets(args)
    (run_dir / "heldout.json").write_text(json.dumps(manifest, indent=1))
    print({k: sum(len(d.data) for d in v) for k, v in sets.items()}, "held-out bytes", flush=True)
    corpus, _ = prepare_corpus(None)

    arms = [Arm(parse_spec(c, args.seed), args, corpus.train) for c in split_configs(args.configs)]
    for arm in arms:
        path = run_dir / "state" / f"{arm.spec.name}.pt"
        if args.resume and path.exists():
            arm.load(torch.load(path, weights_only=True))
            print(f"{arm.spec.name}: resumed at step {arm.step}, {arm.cpu:.0f} CPU-s", flush=True)
        else:
            arm.start()
    budgets = sorted(args.budgets)
    last_save = time.perf_counter()
    while pending := [a for a in arms if len(a.rows) < len(budgets)]:
        for arm in pending:
            target = budgets[len(arm.rows)] * 60.0
            arm.train_until(min(target, arm.cpu + args.slice))
            if arm.cpu >= target:
                print(json.dumps(arm.evaluate(budgets[len(arm.rows)], sets)), flush=True)
                save_state(run_dir, arm)
                write_results(run_dir, arms)
        if time.perf_counter() - last_save > args.save_every:
            for arm in pending:
                save_state(run_dir, arm)
            last_save = time.perf_counter()
    for arm in arms:  # the final weights, for `axl eval` (e.g. --fim) on the same model
        arm.model.eval().save_pretrained(run_dir / "models" / arm.spec.name)
    print(table(arms), flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--name", help=f"run directory under {RUNS} (required but with --export-heldout)")
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help="comma-separated ARCH-OPTIMIZER-SCHEDULE")
    p.add_argument("--budgets", type=lambda s: [float(x) for x in s.split(",")], default=[2, 5, 10, 20],
                   help="CPU-minutes per configuration at which to evaluate (default 2,5,10,20)")  # fmt: skip
    p.add_argument(
        "--preset",
        default="mini",
        help="model preset (default mini: AXL's layout at the bundled model's size; mini-post20 is its layout)",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--min-lr-ratio", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0, help="seed of weights and batches unless a config sets one")
    p.add_argument("--slice", type=float, default=10.0, help="CPU-seconds per configuration per turn")
    p.add_argument("--save-every", type=float, default=120.0, help="wall seconds between state saves")
    p.add_argument("--heldout-bytes", type=int, default=150_000, help="bytes per held-out set")
    p.add_argument("--heldout-cache", type=Path, default=Path.home() / "axl-data" / "heldout")
    p.add_argument("--resume", action="store_true", help="continue from state/ in the run directory")
    p.add_argument("--report", action="store_true", help="print the run's results.jsonl as a markdown table")
    p.add_argument("--export-heldout", type=Path, metavar="DIR",
                   help="write the whole third-party held-out set to DIR/PACKAGE/path (for axl eval --all-files "
                   "--data DIR) and exit")  # fmt: skip
    args = p.parse_args(argv)
    if args.export_heldout:
        export_heldout(args.export_heldout, args.heldout_cache)
        return
    if not args.name:
        p.error("--name is required")
    run(args)


def export_heldout(out: Path, cache: Path) -> None:
    docs, _ = fetch_heldout(cache, HELDOUT_PACKAGES)
    for d in docs:
        path = out / d.name.replace("==", "-")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(d.data)
    print(f"{len(docs)} files, {sum(len(d.data) for d in docs):,} bytes -> {out}")


if __name__ == "__main__":
    main()
