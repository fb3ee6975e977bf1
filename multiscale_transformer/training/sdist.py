"""Source distributions from PyPI: download one pinned sdist with pip, read its files and its license.

Shared by the training corpus builder (training/pypi_corpus.py) and the held-out sets of
bench/quality.py, so both read packages the same way.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from multiscale_transformer.errors import UserError

SDIST_SUFFIXES = (".tar.gz", ".zip")


def pinned(spec: str) -> tuple[str, str]:
    """'Name==1.2' -> ('name', '1.2'): corpora are reproducible only from exact versions."""
    name, sep, version = spec.partition("==")
    if not sep or not name.strip() or not version.strip():
        raise UserError(f"{spec!r}: pin every package to an exact version, as NAME==VERSION")
    return name.strip().lower().replace("_", "-"), version.strip()


def download(spec: str, cache: Path) -> Path:
    """The sdist of `spec` under cache/NAME-VERSION/, fetched once with `pip download` (no wheels, no
    dependencies); a later call reads the file already there."""
    name, version = pinned(spec)
    target = cache / f"{name}-{version}"
    found = _sdists(target)
    if not found:
        target.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps", "-d", str(target)]
        done = subprocess.run([*cmd, f"{name}=={version}"], capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["pip download failed"])[-1]
            raise UserError(f"{spec}: cannot download its sdist ({last})")
        found = _sdists(target)
        if not found:
            raise UserError(f"{spec}: pip downloaded no sdist (.tar.gz or .zip) into {target}")
    return found[0]


def _sdists(target: Path) -> list[Path]:
    return [p for p in sorted(target.glob("*")) if p.name.endswith(SDIST_SUFFIXES)] if target.is_dir() else []


def members(path: Path) -> list[tuple[str, bytes]]:
    """(name, contents) of every regular file in the archive, sorted by name."""
    try:
        if path.name.endswith(".zip"):
            with zipfile.ZipFile(path) as z:
                return [(n, z.read(n)) for n in sorted(z.namelist()) if not n.endswith("/")]
        with tarfile.open(path) as t:
            files = sorted((m for m in t.getmembers() if m.isfile()), key=lambda m: m.name)
            return [(m.name, t.extractfile(m).read()) for m in files]  # type: ignore[union-attr]
    except (OSError, tarfile.TarError, zipfile.BadZipFile) as exc:
        raise UserError(f"{path}: not a readable sdist ({exc})") from None


def license_of(files: list[tuple[str, bytes]]) -> str:
    """The License / License-Expression fields or license classifiers of the sdist's top PKG-INFO."""
    pkg_info = next((data for name, data in files if name.count("/") == 1 and name.endswith("/PKG-INFO")), b"")
    found = []
    for line in pkg_info.decode("utf-8", "replace").splitlines():
        if line.startswith(("License: ", "License-Expression: ")) and len(line) < 120:
            found.append(line.split(": ", 1)[1].strip())
        elif line.startswith("Classifier: License ::"):
            found.append(line.split("::")[-1].strip())
    return "; ".join(dict.fromkeys(f for f in found if f and f != "UNKNOWN")) or "unknown"


def python_files(files: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """(path below the sdist's top folder, contents) of its non-empty .py files, identical ones once."""
    seen: set[bytes] = set()
    out = []
    for name, data in files:
        if not name.endswith(".py") or not data.strip() or data in seen:
            continue
        seen.add(data)
        out.append((name.split("/", 1)[1] if "/" in name else name, data))
    return out
