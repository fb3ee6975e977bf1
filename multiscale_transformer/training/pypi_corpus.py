"""A training corpus of pinned, permissively licensed pure-Python packages from PyPI (`axl corpus`).

One command builds it the same way on every machine: each package is a pinned sdist (NAME==VERSION,
fetched once with pip), its .py files become records of one JSONL file that `axl train --data` reads,
and manifest.json lists every package with its version, license, sdist sha256, bytes and files.
Kept out, and counted: files that are not UTF-8 text, exact copies of a standard-library file (the
stdlib is trained on beside it: `axl train --data stdlib --data DIR/packages.jsonl`) or of an earlier
file, and every file of a held-out or reserved package, whether it is the package itself or a copy
vendored inside another one (matched by content and by import-package folder name), and near-copies
of a stdlib or held-out file (most of their distinctive lines found there: forks, backports).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

from multiscale_transformer.atomic import atomic_write_bytes, atomic_write_json
from multiscale_transformer.errors import UserError
from multiscale_transformer.training import sdist
from multiscale_transformer.training.data import _check_bytes, collect_documents

MANIFEST_KIND = "axl-pypi-corpus"
JSONL_NAME = "packages.jsonl"

# The default training packages: pure Python, permissive licenses, exact versions; none of them is,
# or vendors, a held-out package below (pip and setuptools vendor more-itertools, so they are absent),
# nor ships a fork of a stdlib module (black's blib2to3 is lib2to3, tomli is tomllib: both hold
# near-copies of files in the stdlib validation split).
PACKAGES: tuple[str, ...] = (
    "requests==2.32.3",
    "urllib3==2.2.3",
    "idna==3.10",
    "six==1.16.0",
    "packaging==24.2",
    "pyparsing==3.2.0",
    "python-dateutil==2.9.0.post0",
    "jinja2==3.1.4",
    "markupsafe==3.0.2",
    "itsdangerous==2.2.0",
    "werkzeug==3.1.3",
    "flask==3.1.0",
    "pygments==2.18.0",
    "sqlparse==0.5.2",
    "tabulate==0.9.0",
    "pluggy==1.5.0",
    "iniconfig==2.0.0",
    "pytest==8.3.3",
    "rich==13.9.4",
    "markdown-it-py==3.0.0",
    "mdurl==0.1.2",
    "boltons==24.1.0",
    "cachetools==5.5.0",
    "decorator==5.1.1",
    "bottle==0.13.2",
    "marshmallow==3.23.1",
    "jmespath==1.0.1",
    "sortedcontainers==2.4.0",
    "h11==0.14.0",
    "anyio==4.6.2",
    "httpx==0.27.2",
    "starlette==0.41.3",
    "networkx==3.4.2",
    "pyflakes==3.2.0",
    "pycodestyle==2.12.1",
)

# Third-party held-out packages of bench/quality.py and `axl eval` experiments: never trained on.
HELDOUT_PACKAGES: tuple[str, ...] = ("attrs==24.2.0", "click==8.1.7", "more-itertools==10.5.0", "toolz==1.0.0")
# Reserved for independent evaluation: never downloaded, trained or tuned on, in any version.
RESERVED: tuple[str, ...] = ("tornado", "paramiko")
# Import-package folders of the packages above: a folder of that name inside another sdist is a vendored copy.
EXCLUDED_FOLDERS = frozenset({"attr", "attrs", "click", "more_itertools", "toolz", "tlz", "tornado", "paramiko"})
PERMISSIVE = ("mit", "bsd", "apache", "psf", "python software foundation", "isc", "unlicense", "public domain", "0bsd")


def check_packages(specs: list[str]) -> None:
    """Every spec pinned, none held out or reserved, every name once."""
    names = [sdist.pinned(s)[0] for s in specs]
    held = {sdist.pinned(s)[0] for s in HELDOUT_PACKAGES}
    for spec, name in zip(specs, names, strict=True):
        if name in RESERVED:
            raise UserError(f"{spec}: {name} is reserved for independent evaluation and never trained on")
        if name in held:
            raise UserError(f"{spec}: {name} is a held-out package (bench/quality.py) and never trained on")
    doubled = sorted(n for n, c in Counter(names).items() if c > 1)
    if doubled:
        raise UserError(f"packages listed twice: {', '.join(doubled)}")


def read_package_list(path: Path) -> list[str]:
    """NAME==VERSION per line; blank lines and # comments ignored."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the package list ({exc})") from None
    specs = [line.split("#", 1)[0].strip() for line in lines]
    return [s for s in specs if s]


def _vendored(path: str) -> bool:
    return any(part in EXCLUDED_FOLDERS for part in path.split("/")[:-1])


# A near-copy (a fork, an old vendored version, a backport) shares most of its distinctive lines with
# the original: lines of at least LINE_CHARS characters, stripped; a file with fewer than MIN_LINES of
# them is too small to judge and kept.
LINE_CHARS, MIN_LINES, NEAR_COPY_SHARE = 32, 8, 0.5


def long_lines(data: bytes) -> set[bytes]:
    return {s for line in data.splitlines() if len(s := line.strip()) >= LINE_CHARS}


def near_copy(data: bytes, protected: set[bytes]) -> bool:
    lines = long_lines(data)
    return len(lines) >= MIN_LINES and sum(line in protected for line in lines) >= NEAR_COPY_SHARE * len(lines)


def build(specs: list[str], out: Path, cache: Path) -> dict:
    """Download, filter and write out/packages.jsonl and out/manifest.json; returns the manifest."""
    check_packages(specs)
    # Contents never to train on: the held-out packages' files, and the stdlib's (trained on already).
    heldout_files = [
        data for spec in HELDOUT_PACKAGES for _, data in sdist.python_files(sdist.members(sdist.download(spec, cache)))
    ]
    stdlib_files = [d.data for d in collect_documents(None)[0]]
    heldout = {hashlib.sha256(data).digest() for data in heldout_files}
    stdlib = {hashlib.sha256(data).digest() for data in stdlib_files}
    protected = set().union(*map(long_lines, heldout_files + stdlib_files))
    seen: set[bytes] = set()
    records: list[bytes] = []
    packages = []
    for spec in specs:
        name, version = sdist.pinned(spec)
        archive = sdist.download(spec, cache)
        files = sdist.members(archive)
        license_text = sdist.license_of(files)
        if not any(word in license_text.lower() for word in PERMISSIVE):
            raise UserError(f"{spec}: license {license_text!r} is not one of the permissive ones this corpus takes")
        kept, size, skipped = 0, 0, Counter()
        for rel, data in sdist.python_files(files):
            digest = hashlib.sha256(data).digest()
            reason = _check_bytes(data)
            if reason is None and (digest in heldout or _vendored(rel)):
                reason = "held-out or reserved package"
            elif reason is None and digest in stdlib:
                reason = "copy of a stdlib file"
            elif reason is None and digest in seen:
                reason = "duplicate"
            elif reason is None and near_copy(data, protected):
                reason = "near-copy of a stdlib or held-out file"
            if reason:
                skipped[reason] += 1
                continue
            seen.add(digest)
            record = {"path": f"{name}-{version}/{rel}", "content": data.decode("utf-8")}
            records.append(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
            kept, size = kept + 1, size + len(data)
        packages.append(
            {
                "package": name,
                "version": version,
                "license": license_text,
                "sdist": archive.name,
                "sdist_sha256": hashlib.sha256(archive.read_bytes()).hexdigest(),
                "files": kept,
                "bytes": size,
                "skipped": dict(skipped),
            }
        )
    body = b"".join(records)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / JSONL_NAME, body)
    manifest = {
        "kind": MANIFEST_KIND,
        "jsonl": JSONL_NAME,
        "jsonl_sha256": hashlib.sha256(body).hexdigest(),
        "files": sum(p["files"] for p in packages),
        "bytes": sum(p["bytes"] for p in packages),
        "packages": packages,
        "disjoint_from": {"heldout": list(HELDOUT_PACKAGES), "reserved": list(RESERVED)},
    }
    atomic_write_json(out / "manifest.json", manifest)
    return manifest


def manifest_beside(source: str) -> dict | None:
    """The corpus manifest next to a training source (a packages.jsonl), for the model card; else None."""
    path = Path(source).parent / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("kind") == MANIFEST_KIND else None


def packages_of(sources: list[str]) -> list[dict]:
    """The package rows of every `axl corpus` JSONL among a run's training sources (for results.json
    and the model card), so the card names them even after the corpus directory is gone."""
    keys = ("package", "version", "license", "sdist_sha256", "files", "bytes")
    found = (manifest_beside(s) for s in sources if s.endswith(".jsonl"))
    return [{k: p[k] for k in keys} for m in found if m for p in m["packages"]]
