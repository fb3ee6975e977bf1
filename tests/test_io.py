import json
import subprocess
import sys
import textwrap

import pytest
import torch

from multiscale_transformer.errors import UserError
from multiscale_transformer.model.model import MultiScaleTransformer

from .conftest import make_model


def test_directory_round_trip(tmp_path) -> None:
    model = make_model("tiny")
    model.save_pretrained(tmp_path / "m")
    names = {p.name for p in (tmp_path / "m").iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "model.pt"} <= names
    gen = json.loads((tmp_path / "m" / "generation_config.json").read_text())
    assert gen["temperature"] == 0.8 and gen["top_k"] == 40 and gen["repetition_penalty"] == 1.1
    x = torch.randint(0, 256, (1, 17))
    for path in (tmp_path / "m", tmp_path / "m" / "model.pt", tmp_path / "m" / "model.safetensors"):
        loaded = MultiScaleTransformer.from_pretrained(path)
        assert torch.equal(loaded(x), model(x)), path


def test_pt_loads_with_weights_only(tmp_path) -> None:
    make_model("tiny").save_pretrained(tmp_path)
    ckpt = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    assert set(ckpt) >= {"model_state_dict", "config"}
    assert isinstance(ckpt["config"], dict)


def test_card_snippet_runs_as_written(tmp_path) -> None:
    """The "With Python" snippet of the AXL card, verbatim but for the file names."""
    model = make_model("tiny")
    model.save_pretrained(tmp_path, pt_name="axl_reasoning_lion.pt")
    snippet = textwrap.dedent(
        """
        import torch
        from multiscale_transformer.model.config import load_config
        from multiscale_transformer.model.model import MultiScaleTransformer
        from multiscale_transformer.training.tokenizer import ByteTokenizer
        config = load_config("config.json")
        model = MultiScaleTransformer(config)
        ckpt = torch.load("axl_reasoning_lion.pt", map_location="cpu")
        model.load_state_dict(ckpt["model_state_dict"])
        model.eval()
        tokenizer = ByteTokenizer()
        prompt = "def fibonacci():"
        ids = torch.tensor([tokenizer.encode(prompt)], dtype=torch.long)
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=100, temperature=0.8, top_k=40)
        print(tokenizer.decode(out[0].tolist()))
        """
    )
    result = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("def fibonacci():")
    assert len(result.stdout) > len("def fibonacci():\n")


def test_float16_storage_loads_as_float32(tmp_path) -> None:
    model = make_model("tiny")
    model.save_pretrained(tmp_path, dtype=torch.float16)
    loaded = MultiScaleTransformer.from_pretrained(tmp_path)
    assert loaded.tok_emb.weight.dtype == torch.float32
    x = torch.randint(0, 256, (1, 9))
    torch.testing.assert_close(loaded(x), model(x), atol=2e-2, rtol=0)


def test_missing_truncated_and_mismatched_checkpoints(tmp_path) -> None:
    with pytest.raises(UserError, match="no such model"):
        MultiScaleTransformer.from_pretrained(tmp_path / "nowhere")
    make_model("tiny").save_pretrained(tmp_path / "m")
    data = (tmp_path / "m" / "model.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"cut\.pt: not a readable PyTorch checkpoint"):
        MultiScaleTransformer.from_pretrained(tmp_path / "cut.pt")
    st = (tmp_path / "m" / "model.safetensors").read_bytes()
    (tmp_path / "m" / "model.safetensors").write_bytes(st[:100])
    with pytest.raises(UserError, match=r"model\.safetensors: not a readable safetensors"):
        MultiScaleTransformer.from_pretrained(tmp_path / "m")
    # weights of one config under the config of another
    make_model("tiny", d_model=32, n_heads=2, d_ff=64).save_pretrained(tmp_path / "small")
    (tmp_path / "small" / "config.json").write_text((tmp_path / "m" / "config.json").read_text())
    with pytest.raises(UserError, match="do not match its config"):
        MultiScaleTransformer.from_pretrained(tmp_path / "small" / "model.safetensors")


def test_a_pt_without_weights_names_both_formats(tmp_path) -> None:
    torch.save({"config": {}, "step": 3}, tmp_path / "empty.pt")
    with pytest.raises(UserError, match=r"neither 'model_state_dict' .* nor 'model'"):
        MultiScaleTransformer.from_pretrained(tmp_path / "empty.pt")


def test_pickled_objects_are_refused(tmp_path) -> None:
    import argparse  # any class that is not a tensor or a plain container

    torch.save({"model_state_dict": {}, "config": {}, "x": argparse.Namespace(a=1)}, tmp_path / "evil.pt")
    with pytest.raises(UserError, match="not a readable PyTorch checkpoint"):
        MultiScaleTransformer.from_pretrained(tmp_path / "evil.pt")
