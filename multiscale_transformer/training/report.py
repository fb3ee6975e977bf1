"""What a run leaves beside the model: metrics.jsonl rows, results.json, the curve PNG, hardware and energy."""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path
from typing import Any

from multiscale_transformer.atomic import atomic_path, atomic_write_bytes, atomic_write_json

# Energy estimate, stated in results.json with its method. Per-core power: a desktop Ryzen 5 5600G
# (the AXL card's machine) is 65 W TDP over 6 cores, a server EPYC 7763 280 W over 64: ~4-11 W.
WATTS_PER_CPU_CORE = 10.0
WATTS_PER_GPU = 300.0
# kg CO2 per kWh: world-average electricity (IEA, ~2022).
GRID_KG_PER_KWH = 0.475


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: str, threads: int, world_size: int) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads_per_process": threads,
        "processes": world_size,
        "device": device,
        "torch": torch.__version__,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def energy_estimate(seconds: float, device: str, cores_used: int, world_size: int) -> dict[str, Any]:
    """kWh and kg CO2 from an assumed power draw; a rough estimate, never a measurement."""
    if device.startswith("cuda"):
        watts = WATTS_PER_GPU * world_size
        method = f"{world_size} GPU(s) x {WATTS_PER_GPU:g} W assumed"
    else:
        watts = WATTS_PER_CPU_CORE * cores_used
        method = f"{cores_used} CPU core(s) busy x {WATTS_PER_CPU_CORE:g} W per core (TDP share) assumed"
    kwh = watts * seconds / 3600 / 1000
    return {
        "kwh": round(kwh, 6),
        "kg_co2": round(kwh * GRID_KG_PER_KWH, 6),
        "method": f"{method} x {seconds / 3600:.3f} h x {GRID_KG_PER_KWH} kg CO2/kWh (world-average grid)",
    }


def bits_per_byte(loss_nats: float) -> float:
    return loss_nats / math.log(2)


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    return rows


def truncate_metrics(path: Path, last_step: int) -> None:
    """Drop rows written after the checkpoint a resumed run continues from (they will be written again)."""
    rows = [r for r in read_metrics(path) if r.get("step", 0) <= last_step]
    atomic_write_bytes(path, "".join(json.dumps(r) + "\n" for r in rows).encode("utf-8"))


def write_results(path: Path, results: dict[str, Any]) -> None:
    atomic_write_json(path, results)


def plot_curves(metrics: list[dict[str, Any]], path: Path, unigram_bits: float | None) -> str | None:
    """Train loss and validation bits per byte against bytes seen; returns a note when it cannot plot."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no PNG (pip install 'multiscale-transformer[train]')"
    train = [r for r in metrics if "loss" in r]
    val = [r for r in metrics if "val_bpb" in r]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if train:
        ax.plot([r["bytes"] for r in train], [bits_per_byte(r["loss"]) for r in train], label="train", alpha=0.6)
    if val:
        x = [r["bytes"] for r in val]
        ax.plot(x, [r["val_bpb"] for r in val], "o-", label="validation (full model)")
        if all("val_bpb_fine" in r for r in val):
            ax.plot(x, [r["val_bpb_fine"] for r in val], "s--", label="validation (fine path alone)")
    if unigram_bits:
        ax.axhline(unigram_bits, color="grey", linestyle=":", label=f"unigram entropy {unigram_bits:.2f}")
    ax.set_xlabel("training bytes seen")
    ax.set_ylabel("bits per byte")
    ax.set_title("axl train")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".tmp.png") as tmp:  # matplotlib picks the format from the extension
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return None
