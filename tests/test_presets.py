"""A preset is one model: `axl train --preset X`, `axl info --preset X`, bench/quality.py's `ms` arm and
`ModelConfig.from_name(X)` build the same config with the same parameter count, for every preset."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from multiscale_transformer.cli import build_parser
from multiscale_transformer.commands import info
from multiscale_transformer.commands import train as train_command
from multiscale_transformer.model.config import PRESETS, ModelConfig, estimate_parameters, load_config
from multiscale_transformer.pretrained import bundled_model_dir
from multiscale_transformer.training.fim import DEFAULT_FIM_RATE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quality() -> ModuleType:
    """bench/quality.py, which is a script, not a package module."""
    spec = importlib.util.spec_from_file_location("bench_quality", ROOT / "bench" / "quality.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def trained_config(*flags: str) -> tuple[ModelConfig, float]:
    """The model config and FIM rate of the run `axl train` would start with these flags."""
    settings = train_command.settings(build_parser().parse_args(["train", "--out", "unused", *flags]))
    assert settings.fim_rate is not None
    return settings.config, settings.fim_rate


def info_json(capsys: pytest.CaptureFixture[str], name: str) -> dict:
    args = build_parser().parse_args(["info", "--preset", name, "--json"])
    with torch.device("meta"):  # the real modules' shapes, without allocating the 300M-class weights
        assert info.run(args) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_way_to_name_a_preset_builds_the_same_model(
    name: str, quality: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    config = ModelConfig.from_name(name)
    expected = estimate_parameters(config)

    trained, fim_rate = trained_config("--preset", name)
    assert trained == config
    assert fim_rate == (DEFAULT_FIM_RATE if config.fim else 0.0)  # the preset's `fim` decides the default

    benched = quality.model_config(name, quality.parse_spec("ms-muon-wsd", 0))
    assert benched == config

    shown = info_json(capsys, name)
    assert shown["config"] == config.to_dict() and shown["parameters"] == expected
    top = {part: n for part, n in shown["parts"].items() if not part.startswith(" ")}  # without the per-stack lines
    assert set(top) <= set(info.PARTS.values()) and sum(top.values()) == expected
    assert ("layers after the fusion" in top) == (config.post_fusion_layers > 0)


def test_axl_train_still_builds_by_default_what_it_built_before_the_layouts_had_names() -> None:
    config, fim_rate = trained_config()
    assert config == ModelConfig.from_name(train_command.DEFAULT_PRESET)
    # tiny's sizes in AXL's cross layout, with the coarse scales pooling the fine stack's output, and FIM.
    assert config == ModelConfig.from_name("tiny", coarse_input="fine", fim=True) and fim_rate == DEFAULT_FIM_RATE


def test_flags_and_config_override_the_preset() -> None:
    config, fim_rate = trained_config("--preset", "mini-post20", "--fim-rate", "0")
    assert config == ModelConfig.from_name("mini-post20", fim=False) and fim_rate == 0.0
    config, fim_rate = trained_config("--preset", "micro", "--fim-rate", "0.3")
    assert config == ModelConfig.from_name("micro", fim=True) and fim_rate == 0.3
    config, _ = trained_config("--preset", "mini-post20", "--config", '{"post_fusion_layers": 0, "cross_pairs": null}')
    assert config == ModelConfig.from_name("mini", coarse_input="fine", layers_per_scale=[2, 3, 3], fim=True)
    config, _ = trained_config("--config", '{"downsample_factors": [1]}', "--context", "64")
    assert config == ModelConfig.from_name(train_command.DEFAULT_PRESET, downsample_factors=[1], max_seq_len=64)


def test_the_bundled_model_is_the_mini_post20_8k_preset() -> None:
    path = bundled_model_dir()
    assert path is not None
    config = load_config(path)
    assert config == ModelConfig.from_name("mini-post20-8k")
    assert json.loads((path / "config.json").read_text())["num_parameters"] == estimate_parameters(config)
