import json

import pytest
import torch

from multiscale_transformer.errors import UserError
from multiscale_transformer.model.config import (
    PRESETS,
    PUBLISHED_PARAMETERS,
    ModelConfig,
    estimate_parameters,
    load_config,
)
from multiscale_transformer.model.model import MultiScaleTransformer


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMETERS))
def test_presets_match_published_parameter_counts(name: str) -> None:
    cfg = ModelConfig.from_name(name)
    ours = estimate_parameters(cfg)
    assert abs(ours / PUBLISHED_PARAMETERS[name] - 1) <= 0.03, (name, ours)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_estimate_equals_real_module(name: str) -> None:
    cfg = ModelConfig.from_name(name)
    with torch.device("meta"):  # the real modules' shapes without allocating the 300M-class weights
        model, flat = MultiScaleTransformer(cfg), MultiScaleTransformer(cfg.flat())
    assert estimate_parameters(cfg) == model.num_parameters()
    assert estimate_parameters(cfg.flat()) == flat.num_parameters()


def test_tiny_is_small() -> None:
    assert estimate_parameters(ModelConfig.from_name("tiny")) < 1_000_000


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_flat_baseline_has_equal_parameters(name: str) -> None:
    cfg = ModelConfig.from_name(name)
    flat = cfg.flat()
    assert flat.downsample_factors == [1] and flat.n_cross_attn_layers == 0
    assert (flat.d_model, flat.n_heads, flat.d_ff) == (cfg.d_model, cfg.n_heads, cfg.d_ff)
    assert abs(estimate_parameters(flat) / estimate_parameters(cfg) - 1) <= 0.05


def test_published_config_json_loads(tmp_path) -> None:
    published = {
        "model_type": "multiscale_transformer",
        "architectures": ["MultiScaleForCausalLM"],
        "vocab_size": 258,
        "d_model": 512,
        "n_heads": 4,
        "d_ff": 1376,
        "n_layers_per_scale": 5,
        "n_cross_attn_layers": 1,
        "max_seq_len": 256,
        "dropout": 0.1,
        "bias": False,
        "rope_theta": 10000.0,
        "downsample_factors": [1, 2, 4],
        "num_parameters": 70000000,
        "training_results": {"steps": 205, "final_loss": 0.6279},
    }
    (tmp_path / "config.json").write_text(json.dumps(published))
    cfg = load_config(tmp_path / "config.json")
    assert cfg.d_model == 512 and cfg.dropout == 0.1
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    assert load_config(tmp_path) == cfg
    (tmp_path / "config.json").write_text(json.dumps({**published, "bias": True}))  # no layer has biases
    with pytest.raises(UserError, match="bias must be false"):
        load_config(tmp_path / "config.json")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"d_model": 100, "n_heads": 3}, "divisible by n_heads"),
        ({"d_model": 66, "n_heads": 2}, "must be even for RoPE"),
        ({"downsample_factors": [2, 4]}, "start with 1"),
        ({"downsample_factors": [1, 4, 2]}, "strictly increasing"),
        ({"vocab_size": 100}, "at least 258"),
        ({"dropout": 1.5}, "dropout"),
        ({"n_heads": 0}, "positive integer"),
    ],
)
def test_bad_values_say_what_to_change(overrides: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        ModelConfig.from_name("tiny", **overrides)


def test_unknown_preset_and_fields() -> None:
    with pytest.raises(UserError, match="unknown preset"):
        ModelConfig.from_name("gigantic")
    with pytest.raises(UserError, match="unknown field"):
        ModelConfig.from_dict({"d_model": 64, "colour": "blue"})
    assert ModelConfig.from_name("AXL-Micro-Lion").d_model == 256
    with pytest.raises(UserError, match="unknown preset"):  # the card's spelling names only its models
        ModelConfig.from_name("AXL-mini")


def test_bad_config_files(tmp_path) -> None:
    with pytest.raises(UserError, match="not found"):
        load_config(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match=r"bad\.json"):
        load_config(tmp_path / "bad.json")


def test_coarse_input_is_validated_and_defaults_to_the_published_architecture() -> None:
    assert ModelConfig.from_name("mini").coarse_input == "embeddings"
    assert ModelConfig.from_name("mini", coarse_input="fine").coarse_input == "fine"
    with pytest.raises(UserError, match="coarse_input must be one of"):
        ModelConfig.from_name("mini", coarse_input="pixels")


def test_layers_per_scale_sets_each_stack_and_the_flat_twin_matches_its_parameters() -> None:
    config = ModelConfig.from_name("mini", layers_per_scale=[1, 2, 3])
    model = MultiScaleTransformer(config)
    assert [len(stack) for stack in model.stacks] == [1, 2, 3] and config.scale_depths == [1, 2, 3]
    assert model.num_parameters() == estimate_parameters(config)
    flat = MultiScaleTransformer(config.flat())
    assert config.flat().layers_per_scale is None
    assert abs(flat.num_parameters() - model.num_parameters()) < 0.05 * model.num_parameters()
    for bad in ([1, 2], [1, 0, 2], "123"):
        with pytest.raises(UserError, match="layers_per_scale must list one positive integer per scale"):
            ModelConfig.from_name("mini", layers_per_scale=bad)


def test_post_fusion_layers_and_cross_pairs_build_what_they_say_and_the_flat_twin_matches() -> None:
    config = ModelConfig.from_name("mini", post_fusion_layers=2, cross_pairs=[[1, 0], [2, 0]])
    model = MultiScaleTransformer(config)
    assert len(model.post) == 2 and model.pairs == [(1, 0), (2, 0)] and len(model.cross[0]) == 2
    assert model.num_parameters() == estimate_parameters(config)
    flat = config.flat()
    assert (flat.post_fusion_layers, flat.cross_pairs) == (0, None)
    assert abs(estimate_parameters(flat) / model.num_parameters() - 1) <= 0.05
    published = ModelConfig.from_name("mini")
    assert published.post_fusion_layers == 0 and len(published.directed_pairs) == 6


@pytest.mark.parametrize(
    ("field", "bad", "message"),
    [
        ("post_fusion_layers", -1, "post_fusion_layers must be an integer >= 0"),
        ("post_fusion_layers", True, "post_fusion_layers must be an integer >= 0"),
        ("cross_pairs", [[0, 0]], "cross_pairs must list distinct"),
        ("cross_pairs", [[1, 3]], "cross_pairs must list distinct"),
        ("cross_pairs", [[1, 0], [1, 0]], "cross_pairs must list distinct"),
        ("cross_pairs", "1:0", "cross_pairs must list distinct"),
    ],
)
def test_post_fusion_layers_and_cross_pairs_are_validated(field: str, bad: object, message: str) -> None:
    with pytest.raises(UserError, match=message):
        ModelConfig.from_name("mini", **{field: bad})
