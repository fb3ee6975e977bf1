import subprocess
import sys

import pytest

from .conftest import make_model


def axl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "multiscale_transformer", *args], capture_output=True, text=True, timeout=300
    )


def test_info_preset() -> None:
    result = axl("info", "--preset", "micro")
    assert result.returncode == 0
    assert "12,722,176" in result.stdout and "published: 12,800,000" in result.stdout


def test_generate_from_saved_model(tmp_path) -> None:
    make_model("tiny").save_pretrained(tmp_path)
    result = axl("generate", "--model", str(tmp_path), "--max-new-tokens", "8", "--seed", "1", "def f():")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("def f():")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["info", "--preset", "nope"], "unknown preset"),
        (["generate", "--model", "/does/not/exist", "x"], "no such model"),
        (["generate", "--preset", "tiny", ""], "prompt is empty"),
        (["generate", "--preset", "tiny", "--top-p", "2", "x"], "top_p"),
    ],
)
def test_user_errors_are_one_line(args: list[str], message: str) -> None:
    result = axl(*args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_flag_value_is_rejected() -> None:
    result = axl("generate", "--preset", "tiny", "--max-new-tokens", "-3", "x")
    assert result.returncode == 2 and "Traceback" not in result.stderr
