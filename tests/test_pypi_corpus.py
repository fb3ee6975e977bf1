"""`axl corpus` (training/pypi_corpus.py) on sdists built here, in its cache: no network is touched."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from multiscale_transformer.cli import main
from multiscale_transformer.errors import UserError
from multiscale_transformer.evaluation.card import _training_lines
from multiscale_transformer.training import pypi_corpus, sdist
from multiscale_transformer.training.data import STDLIB, collect_documents, iter_sources, stdlib_root

MIT = "Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nLicense: MIT\n"


def make_sdist(cache: Path, spec: str, files: dict[str, bytes], pkg_info: str = MIT) -> None:
    """cache/NAME-VERSION/NAME-VERSION.tar.gz, as `sdist.download` leaves it."""
    name, version = sdist.pinned(spec)
    top = f"{name}-{version}"
    (cache / top).mkdir(parents=True)
    entries = {"PKG-INFO": pkg_info.format(name=name, version=version).encode(), **files}
    with tarfile.open(cache / top / f"{top}.tar.gz", "w:gz") as t:
        for rel, data in entries.items():
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    cache = tmp_path / "sdists"
    for spec in pypi_corpus.HELDOUT_PACKAGES:
        make_sdist(cache, spec, {"src/heldout.py": f"HELD = {spec!r}\n".encode()})
    return cache


def test_build_keeps_code_and_leaves_out_what_must_not_be_trained_on(cache: Path, tmp_path: Path) -> None:
    stdlib_file = (stdlib_root() / "colorsys.py").read_bytes()
    make_sdist(
        cache,
        "alpha==1.0",
        {
            "src/alpha/core.py": b"def alpha():\n    return 1\n",
            "src/alpha/shared.py": b"SHARED = True\n",
            "src/alpha/_vendor/click/core.py": b"def vendored_click():\n    pass\n",
            "src/alpha/heldout_copy.py": b"HELD = 'attrs==24.2.0'\n",
            "src/alpha/colorsys.py": stdlib_file,
            "src/alpha/colorsys_fork.py": b"# forked\n" + stdlib_file.replace(b"def ", b"def _", 3),
            "src/alpha/latin1.py": "s = 'caf\xe9'\n".encode("latin-1"),
            "README.md": b"not python\n",
        },
    )
    make_sdist(cache, "beta==2.0", {"beta/shared.py": b"SHARED = True\n", "beta/b.py": b"B = 2\n"})
    out = tmp_path / "corpus"
    manifest = pypi_corpus.build(["alpha==1.0", "beta==2.0"], out, cache)

    alpha, beta = manifest["packages"]
    assert (alpha["package"], alpha["version"], alpha["license"], alpha["files"]) == ("alpha", "1.0", "MIT", 2)
    assert alpha["skipped"] == {
        "held-out or reserved package": 2,
        "copy of a stdlib file": 1,
        "near-copy of a stdlib or held-out file": 1,
        "non-UTF-8": 1,
    }
    assert (beta["files"], beta["skipped"]) == (1, {"duplicate": 1})
    assert len(alpha["sdist_sha256"]) == 64 and manifest["files"] == 3
    docs, _ = collect_documents([out / pypi_corpus.JSONL_NAME])  # what `axl train --data` reads
    assert [d.name for d in docs] == [
        "alpha-1.0/src/alpha/core.py",
        "alpha-1.0/src/alpha/shared.py",
        "beta-2.0/beta/b.py",
    ]
    assert manifest["bytes"] == sum(len(d.data) for d in docs)
    assert pypi_corpus.manifest_beside(str(out / pypi_corpus.JSONL_NAME)) == manifest
    # What a run trained on it records in results.json, and its model card lists.
    rows = pypi_corpus.packages_of([f"stdlib:{stdlib_root()}", str(out / pypi_corpus.JSONL_NAME)])
    assert [(r["package"], r["files"]) for r in rows] == [("alpha", 2), ("beta", 1)]
    card = "\n".join(_training_lines({"corpus": {"packages": rows}}, {"steps": 1}, {}))
    assert "| alpha | 1.0 | MIT | 2 |" in card and "| beta | 2.0 | MIT | 1 |" in card


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["tornado==6.4"], "reserved"),
        (["Paramiko==3.4.0"], "reserved"),
        (["attrs==23.1.0"], "held-out"),
        (["requests"], "exact version"),
        (["six==1.16.0", "six==1.15.0"], "listed twice"),
    ],
)
def test_refused_package_lists(specs: list[str], message: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=message):
        pypi_corpus.build(specs, tmp_path / "out", tmp_path / "cache")


def test_a_license_that_is_not_permissive_is_refused(cache: Path, tmp_path: Path) -> None:
    make_sdist(cache, "gamma==1.0", {"g.py": b"G = 1\n"}, pkg_info="Name: gamma\nLicense: GPL-3.0-only\n")
    with pytest.raises(UserError, match=r"GPL-3\.0-only"):
        pypi_corpus.build(["gamma==1.0"], tmp_path / "out", cache)


def test_axl_corpus_command(cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_sdist(cache, "alpha==1.0", {"a.py": b"A = 1\n"})
    listing = tmp_path / "packages.txt"
    listing.write_text("# the corpus\nalpha==1.0  # one package\n\n")
    out = tmp_path / "corpus"
    assert main(["corpus", "--out", str(out), "--packages", str(listing), "--cache", str(cache)]) == 0
    assert "--data stdlib --data" in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text())["packages"][0]["files"] == 1
    listing.write_text("tornado==6.4\n")
    assert main(["corpus", "--out", str(out), "--packages", str(listing), "--cache", str(cache)]) == 2
    assert "reserved for independent evaluation" in capsys.readouterr().err


def test_data_stdlib_is_the_default_corpus_with_its_names() -> None:
    """So `--data stdlib --data more.jsonl` keeps the stdlib's validation split (split by file name)."""
    assert list(iter_sources([STDLIB])) == list(iter_sources(None))
