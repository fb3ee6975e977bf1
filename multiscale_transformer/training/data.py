"""The training corpus: find documents, split them by file, cache them as uint8 memmap shards, sample windows.

Encoding on disk: each split is one flat uint8 file holding the documents' bytes back to back, and
manifest.json records where every document ends. The EOS id (257) does not fit in a byte, so it is
never stored: the reader inserts it after each document when it cuts a window (`Corpus.window`).
The model thus sees `doc0 EOS doc1 EOS ...`, exactly as if EOS were stored, at half the disk of uint16.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import sysconfig
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from multiscale_transformer.atomic import atomic_write_bytes, atomic_write_json
from multiscale_transformer.errors import UserError
from multiscale_transformer.model.vocab import EOS_ID
from multiscale_transformer.training.fim import apply_fim

CACHE_VERSION = 1
# Directories of the standard library that hold its own test suite: left out of the default corpus
# because they are full of deliberately broken, odd-encoding or generated files (and the compression
# anchors in docs/ were measured without them).
STDLIB_EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})


@dataclass(frozen=True)
class Document:
    """One file (or one JSONL record): `name` is its path relative to its corpus root."""

    name: str
    data: bytes


@dataclass
class SkipStats:
    """Files left out of the corpus, counted per reason (non-UTF-8, binary, empty, unreadable, duplicate)."""

    counts: Counter[str] = field(default_factory=Counter)

    def add(self, reason: str) -> None:
        self.counts[reason] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        if not self.total:
            return "none skipped"
        return ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts.items()))


# `--data stdlib` (where no such file exists): the default corpus, so it can be combined with others
# and keep its file names, hence its validation split.
STDLIB = Path("stdlib")


def is_stdlib(path: Path) -> bool:
    return path == STDLIB and not path.exists()


def check_sources(paths: list[Path]) -> None:
    """One line naming every --data path that does not exist (`stdlib` always does)."""
    missing = [str(p) for p in paths if not Path(p).exists() and not is_stdlib(Path(p))]
    if missing:
        raise UserError(f"--data: no such file or directory: {', '.join(missing)}")


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _check_bytes(data: bytes) -> str | None:
    """The reason to skip a document, or None to keep it."""
    if not data.strip():
        return "empty"
    if b"\0" in data:
        return "binary"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "non-UTF-8"
    return None


def _walk(root: Path, glob: str, excluded_dirs: frozenset[str]) -> Iterator[Path]:
    """Files under root whose name matches glob, sorted; excluded directories are not even entered."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in excluded_dirs)
        for name in sorted(fnmatch.filter(filenames, glob)):
            path = Path(dirpath) / name
            if path.is_file():
                yield path


def _jsonl_documents(path: Path, stats: SkipStats) -> Iterator[Document]:
    try:
        lines = path.read_bytes().splitlines()
    except OSError:
        stats.add("unreadable")
        return
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            stats.add("bad JSONL line")
            continue
        text = record.get("content", record.get("text")) if isinstance(record, dict) else None
        if not isinstance(text, str):
            stats.add("JSONL line without content/text")
            continue
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (JSON allows "\ud800"): not text that has bytes
            stats.add("JSONL text that is not valid Unicode")
            continue
        name = record.get("path")
        if not isinstance(name, str) or not _encodable(name):
            name = f"{path.name}:{i}"
        yield Document(name, data)


def _encodable(name: str) -> bool:
    try:
        name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return True


def _file_documents(path: Path, name: str, stats: SkipStats) -> Iterator[Document]:
    if path.suffix == ".jsonl":
        yield from _jsonl_documents(path, stats)
        return
    try:
        yield Document(name, path.read_bytes())
    except OSError:
        stats.add("unreadable")


def iter_sources(paths: list[Path] | None, glob: str = "*.py") -> Iterator[tuple[Path, str]]:
    """(file, name relative to its corpus root) for every input file, in a deterministic order."""
    if not paths:
        paths = [STDLIB]
    for given in paths:
        if is_stdlib(given):
            root = stdlib_root()
            for p in _walk(root, glob, STDLIB_EXCLUDED_DIRS):
                yield p, p.relative_to(root).as_posix()
        elif given.is_dir():
            for p in _walk(given, glob, frozenset({"__pycache__", ".git"})):
                yield p, p.relative_to(given).as_posix()
        elif given.is_file():
            yield given, given.name
        else:
            raise UserError(f"{given}: no such file or directory (--data takes directories, files, .jsonl, .txt)")


def collect_documents(paths: list[Path] | None, glob: str = "*.py") -> tuple[list[Document], SkipStats]:
    """Documents from directories (recursive, `glob`), single files, `.jsonl` (content/text) and `.txt`.

    None means the running interpreter's standard library (site-packages and test dirs excluded).
    Non-UTF-8, binary, empty and unreadable files are skipped and counted; identical contents kept once.
    """
    stats = SkipStats()
    seen: set[bytes] = set()
    docs: list[Document] = []
    for path, name in iter_sources(paths, glob):
        for doc in _file_documents(path, name, stats):
            reason = _check_bytes(doc.data)
            digest = hashlib.sha256(doc.data).digest()
            if reason is None and digest in seen:
                reason = "duplicate"
            if reason:
                stats.add(reason)
                continue
            seen.add(digest)
            docs.append(doc)
    return docs, stats


def _split_key(name: str) -> float:
    """A uniform number in [0, 1) from the document's relative path: stable across machines and runs."""
    return int.from_bytes(hashlib.sha256(name.encode("utf-8", "surrogateescape")).digest()[:8], "big") / 2**64


def repository_documents(root: Path, purpose: str) -> list[Document]:
    """Every usable .py file of the repository at `root` (a `--repo` flag), in sorted path order;
    one line naming the flag when it is not a directory or holds nothing to `purpose`."""
    if not root.is_dir():
        raise UserError(f"--repo {root}: no such directory (--repo takes a repository's directory)")
    docs, skipped = collect_documents([root], "*.py")
    if not docs:
        why = f" ({skipped.summary()})" if skipped.total else ""
        raise UserError(f"--repo {root}: no usable .py files to {purpose}{why}")
    return sorted(docs, key=lambda d: d.name)


def split_documents(docs: list[Document], val_fraction: float = 0.05) -> tuple[list[Document], list[Document]]:
    """(train, validation) by a hash of each document's name, so no file is in both.

    With two or more documents each side gets at least one (the lowest-hash document moves to validation).
    """
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"validation fraction must be in (0, 1), got {val_fraction}")
    train = [d for d in docs if _split_key(d.name) >= val_fraction]
    val = [d for d in docs if _split_key(d.name) < val_fraction]
    if not val and len(train) >= 2:
        first = min(train, key=lambda d: _split_key(d.name))
        train = [d for d in train if d is not first]
        val = [first]
    return train, val


class Corpus:
    """One split as a uint8 memmap plus document ends; `window(start, n)` reads the EOS-joined stream."""

    def __init__(self, path: Path, doc_ends: list[int]) -> None:
        n_bytes = doc_ends[-1] if doc_ends else 0
        self.data = np.memmap(path, dtype=np.uint8, mode="r", shape=(n_bytes,)) if n_bytes else np.zeros(0, np.uint8)
        ends = np.asarray(doc_ends, dtype=np.int64)
        # Position of each EOS in the joined stream: a document's end plus the EOS ids before it.
        self.eos_at = ends + np.arange(len(ends), dtype=np.int64)
        self.n_docs = len(doc_ends)
        self.n_bytes = n_bytes

    def __len__(self) -> int:
        """Length of the joined stream: every byte plus one EOS per document."""
        return self.n_bytes + self.n_docs

    def window(self, start: int, n: int) -> np.ndarray:
        """Ids at stream positions start .. start+n-1 (int64), EOS between documents."""
        pos = np.arange(start, start + n, dtype=np.int64)
        k = np.searchsorted(self.eos_at, pos, side="left")  # EOS ids strictly before each position
        is_eos = np.zeros(n, dtype=bool)
        inside = k < len(self.eos_at)
        is_eos[inside] = self.eos_at[k[inside]] == pos[inside]
        raw = np.minimum(pos - k, max(self.n_bytes - 1, 0))
        out = self.data[raw].astype(np.int64)
        out[is_eos] = EOS_ID
        return out

    def unigram_entropy_bits(self) -> float:
        """Entropy of the byte (and EOS) frequencies in bits: what a model with no context would reach."""
        counts = np.bincount(np.asarray(self.data), minlength=256).astype(np.float64)
        counts = np.append(counts, self.n_docs)
        p = counts[counts > 0] / counts.sum()
        return float(-(p * np.log2(p)).sum())


@dataclass
class PreparedCorpus:
    train: Corpus
    val: Corpus
    manifest: dict
    directory: Path
    reused: bool


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "axl" / "corpus"


def _fingerprint(sources: Iterable[tuple[Path, str]], glob: str, val_fraction: float) -> str:
    """A cheap key of the inputs (paths, sizes, modification times): no file is read to decide reuse."""
    h = hashlib.sha256(f"v{CACHE_VERSION}|{glob}|{val_fraction}".encode())
    for path, name in sources:
        st = path.stat()
        h.update(f"{path.resolve()}|{name}|{st.st_size}|{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()[:20]


def _write_split(directory: Path, name: str, docs: list[Document]) -> dict:
    data = b"".join(d.data for d in docs)
    atomic_write_bytes(directory / f"{name}.bin", data)
    ends = np.cumsum([len(d.data) for d in docs]).tolist() if docs else []
    return {
        "file": f"{name}.bin",
        "documents": len(docs),
        "bytes": len(data),
        "doc_ends": ends,
        "names": [d.name for d in docs],
        "sha256": hashlib.sha256(data).hexdigest(),
    }


def _open(directory: Path, manifest: dict, reused: bool) -> PreparedCorpus:
    s = manifest["splits"]
    train = Corpus(directory / s["train"]["file"], s["train"]["doc_ends"])
    val = Corpus(directory / s["val"]["file"], s["val"]["doc_ends"])
    return PreparedCorpus(train, val, manifest, directory, reused)


def prepare_corpus(
    paths: list[Path] | None,
    cache_dir: Path | None = None,
    glob: str = "*.py",
    val_fraction: float = 0.05,
) -> tuple[PreparedCorpus, SkipStats]:
    """Collect, split and cache the corpus; an unchanged input (same files, sizes, mtimes) reuses the cache."""
    sources = list(iter_sources(paths, glob))
    if not sources:
        where = ", ".join(map(str, paths)) if paths else str(stdlib_root())
        raise UserError(f"no input files matching {glob!r} under {where}")
    directory = (cache_dir or default_cache_dir()) / _fingerprint(sources, glob, val_fraction)
    manifest_path = directory / "manifest.json"
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text())
            if manifest.get("version") == CACHE_VERSION:
                return _open(directory, manifest, True), SkipStats(Counter(manifest["skipped"]))
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt below
    docs, stats = collect_documents(paths, glob)
    if not docs:
        raise UserError(f"the corpus is empty: every input file was skipped ({stats.summary()})")
    train, val = split_documents(docs, val_fraction)
    if not train or not val:
        raise UserError(f"need at least 2 usable documents to split into train and validation, found {len(docs)}")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"{directory}: cannot create the corpus cache ({exc.strerror}); use --cache-dir") from None
    manifest = {
        "version": CACHE_VERSION,
        "sources": [f"stdlib:{stdlib_root()}" if is_stdlib(p) else str(p) for p in paths or [STDLIB]],
        "glob": glob,
        "val_fraction": val_fraction,
        "encoding": "uint8 bytes per split; EOS (257) after each document is implied by doc_ends",
        "skipped": dict(stats.counts),
        "splits": {"train": _write_split(directory, "train", train), "val": _write_split(directory, "val", val)},
    }
    atomic_write_json(manifest_path, manifest)
    return _open(directory, manifest, False), stats


def sample_batch(
    corpus: Corpus, batch_size: int, seq_len: int, rng: np.random.Generator, fim_rate: float = 0.0
) -> np.ndarray:
    """(batch_size, seq_len + 1) ids from random windows: inputs are [:, :-1], targets [:, 1:].

    fim_rate > 0 rearranges that share of the windows' documents for fill-in-the-middle (fim.py)."""
    n = seq_len + 1
    if len(corpus) < n:
        raise UserError(f"the training split ({len(corpus)} ids) is shorter than one window of {n}; add data")
    starts = rng.integers(0, len(corpus) - n + 1, size=batch_size)
    return np.stack([apply_fim(corpus.window(int(s), n), fim_rate, rng) for s in starts])


def batch_rng(seed: int, step: int, micro: int) -> np.random.Generator:
    """The generator of one micro-batch: a pure function of (seed, step, micro-batch), so the data
    position of a run is just its step counter and a resumed run reads exactly the batches it would have.

    `micro` numbers the micro-batches of one optimizer step across all processes (rank x grad_accum +
    micro-step), so 2 processes with --grad-accum 1 read the batches of 1 process with --grad-accum 2
    and train the same model (tests/test_ddp.py). The 0 keeps the streams of single-process runs
    started before the micro-batches were numbered that way (they were seeded [seed, step, rank, micro])."""
    return np.random.default_rng([seed, step, 0, micro])


def eval_windows(corpus: Corpus, seq_len: int, max_windows: int) -> np.ndarray:
    """Evenly spaced, non-overlapping validation windows (fixed for a run): (n, seq_len + 1)."""
    n = seq_len + 1
    available = len(corpus) // n
    if available < 1:
        raise UserError(f"the validation split ({len(corpus)} ids) is shorter than one window of {n}; add data")
    count = min(available, max_windows)
    starts = (np.arange(count) * (available // count)) * n
    return np.stack([corpus.window(int(s), n) for s in starts])
