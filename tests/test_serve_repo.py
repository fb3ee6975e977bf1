"""`axl serve --repo DIR` on a live server: infillings that bring no chunks get the repository's best
match before the cursor, those that bring their own keep them, /props says what is indexed, a file
added later is found, and a directory without Python files stops the server with one line."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from multiscale_transformer.cli import main
from multiscale_transformer.serving import repository
from multiscale_transformer.serving.app import create_app

from .conftest import make_model
from .live import module_server

DEFINES = "def frobnicate_widget(widget, times=3):\n    return [widget] * times\n"
OTHER = "import os\n\n\ndef list_directory(path):\n    return sorted(os.listdir(path))\n"
PREFIX = "from tools import *\n\nresult = frobnicate_widget(make_widget(), times=2)\nprint(result)\nsize = "
BODY = {"input_prefix": PREFIX, "input_suffix": "\n", "n_predict": 4, "temperature": 0.0}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repo")
    (root / "pkg").mkdir()
    (root / "pkg" / "tools.py").write_text(DEFINES)
    (root / "pkg" / "files.py").write_text(OTHER)
    return root


@pytest.fixture(scope="module")
def http(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    model_dir = tmp_path_factory.mktemp("model") / "m"
    make_model("tiny", max_seq_len=1024, fim=True).save_pretrained(model_dir)
    for base in module_server(create_app(model_dir, name="axl-repo", max_batch=2, repo=repo)):
        with httpx.Client(base_url=base, timeout=60) as client:
            yield client


def test_an_infilling_without_chunks_gets_the_repositorys_best_match(http: httpx.Client) -> None:
    reply = http.post("/infill", json=BODY).json()
    assert "# pkg/tools.py\n" + DEFINES in reply["prompt"]  # the file that defines the name used
    assert "list_directory" not in reply["prompt"]  # nothing in the prefix asks for it
    own = http.post("/infill", json={**BODY, "input_extra": [{"filename": "a.py", "text": "A = 1\n"}]}).json()
    assert "# a.py\nA = 1\n" in own["prompt"] and "frobnicate_widget(widget" not in own["prompt"]
    fim = http.post("/v1/completions", json={"prompt": PREFIX, "suffix": "\n", "max_tokens": 2}).json()
    assert fim["choices"][0]["finish_reason"] in ("stop", "length")
    props = http.get("/props").json()["repository"]
    assert props["files"] == 2 and props["chunks"] == 2 and props["chunk_lines"] == repository.CHUNK_LINES


def test_a_file_added_later_is_indexed(http: httpx.Client, repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repository, "RESCAN_S", 0.0)
    (repo / "pkg" / "widgets.py").write_text("def make_widget(colour='red'):\n    return {'colour': colour}\n")
    time.sleep(0.05)
    reply = http.post("/infill", json=BODY).json()
    assert "# pkg/widgets.py\ndef make_widget(colour='red')" in reply["prompt"]
    assert http.get("/props").json()["repository"]["files"] == 3


def test_a_directory_without_python_files_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "README.md").write_text("no code")
    with socket.socket() as s:  # a port that is free: the server binds before it loads
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["serve", "--preset", "tiny", "--repo", str(tmp_path), "--port", str(port)]) == 2
    assert capsys.readouterr().err.strip() == f"axl serve: error: --repo {tmp_path}: no usable .py files to index"
