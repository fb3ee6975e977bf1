import json
import shutil
import sysconfig
from pathlib import Path

from multiscale_transformer.cli import main
from multiscale_transformer.evaluation.bpb import evaluate_documents, validation_documents
from multiscale_transformer.evaluation.card import _pairs
from multiscale_transformer.model.model import MultiScaleTransformer

from .conftest import make_model


def test_card_numbers_match_eval_and_audit(tmp_path: Path, capsys) -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    data = tmp_path / "data"
    data.mkdir()
    for name in ("bisect.py", "heapq.py", "keyword.py", "colorsys.py", "this.py", "stat.py", "glob.py"):
        shutil.copy(stdlib / name, data / name)
    model_dir = tmp_path / "model"
    make_model("tiny").save_pretrained(model_dir)
    assert main(["card", "--model", str(model_dir), "--data", str(data), "--quiet", "--threads", "2"]) == 0
    card = (model_dir / "README.md").read_text()
    numbers = json.loads((model_dir / "card.json").read_text())
    docs = validation_documents([data])
    expected = evaluate_documents(MultiScaleTransformer.from_pretrained(model_dir), docs)
    assert abs(numbers["eval"]["bits_per_byte"] - expected.bits_per_byte) < 1e-9
    assert f"**{expected.bits_per_byte:.3f}**" in card
    assert "PASS" in card and numbers["audit"]["passed"]
    assert "gzip -9, each file alone" in card
    assert "| Cross-scale layers | 1 (every pair of scales) |" in card and "| Layers after the fusion | 0 |" in card
    assert "No results.json" in card  # a model without training results says so instead of inventing them
    assert '"audit": "PASS"' in capsys.readouterr().out


def test_card_needs_a_directory(tmp_path: Path, capsys) -> None:
    make_model("tiny").save_pretrained(tmp_path)
    assert main(["card", "--model", str(tmp_path / "model.pt")]) == 2
    assert "needs a model directory" in capsys.readouterr().err


def test_card_names_cross_pairs_by_their_scales() -> None:
    assert _pairs({"cross_pairs": [[1, 0], [2, 0]], "downsample_factors": [1, 2, 4]}) == "2x->1x, 4x->1x"
    assert _pairs({"cross_pairs": [], "downsample_factors": [1, 2, 4]}) == "none"


def test_card_names_its_data_by_what_it_is_not_where_it_lay() -> None:
    from multiscale_transformer.evaluation.card import _training_lines

    corpus = {
        "sources": [f"stdlib:{sysconfig.get_paths()['stdlib']}", "/root/axl-data/corpus/packages.jsonl", "/home/u/src"],
        "packages": [
            {"package": "attrs", "version": "1", "license": "MIT", "files": 1, "bytes": 9, "sdist_sha256": "ab"}
        ],
        "train_documents": 3,
    }
    text = "\n".join(_training_lines({"corpus": corpus}, {"steps": 1}, {}))
    version = sysconfig.get_python_version()
    assert f"Data: the Python {version} standard library, the 1 PyPI packages below" in text
    assert "`src`" in text and "/root" not in text and "/home" not in text
