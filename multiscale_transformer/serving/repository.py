"""`axl serve --repo DIR`: chunks of a repository's files for infillings that bring none of their own.

Editors such as llama.vim send chunks of the files the user has open (`input_extra`); others send
nothing. For those, the server keeps a BM25 index (evaluation/retrieval.py, the same chunks and ranking
`axl eval --repo` measures) of DIR's Python files and puts the chunks that best match the identifiers
before the cursor where `input_extra` would go (generation/fim.py packs them into their share of the
context: none at 256 bytes). Files are stat-ed again at most every `RESCAN_S` seconds, and the index is
rebuilt when any was added, removed or changed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from multiscale_transformer.errors import UserError
from multiscale_transformer.evaluation.retrieval import QUERY_BYTES, LeaveOneOutIndex, split_chunks
from multiscale_transformer.generation.fim import Infill, extra_chunk
from multiscale_transformer.training.data import repository_documents

CHUNK_LINES = 32  # llama.vim's chunk size
RESCAN_S = 2.0


@dataclass(frozen=True)
class Snapshot:
    index: LeaveOneOutIndex
    names: list[str]  # document names, by index (Chunk.file)
    files: int
    chunks: int
    seconds: float  # how long building it took
    built_at: float  # time.time()


class Repository:
    """The index of one directory's .py files, rebuilt when they change."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._checked = 0.0
        self._signature = self._stat()
        self.snapshot = self._build()

    def _stat(self) -> tuple[tuple[str, int, int], ...]:
        """What would change if a file did: every .py file's path, size and modification time."""
        out = []
        for path in sorted(self.root.rglob("*.py")):
            try:
                st = path.stat()
            except OSError:
                continue
            out.append((str(path), st.st_size, st.st_mtime_ns))
        return tuple(out)

    def _build(self) -> Snapshot:
        start = time.perf_counter()
        docs = repository_documents(self.root, "index")
        chunks = split_chunks(docs, CHUNK_LINES)
        index = LeaveOneOutIndex(chunks, file=-1)  # no file left out: the user's open file is not known
        names = [_relative(d.name, self.root) for d in docs]
        return Snapshot(index, names, len(docs), len(chunks), time.perf_counter() - start, time.time())

    def current(self) -> Snapshot:
        """The index, rebuilt first if a file changed since the last look (at most every RESCAN_S)."""
        with self._lock:
            now = time.monotonic()
            if now - self._checked >= RESCAN_S:
                self._checked = now
                signature = self._stat()
                if signature != self._signature:
                    try:
                        self.snapshot = self._build()
                        self._signature = signature
                    except UserError:  # every file gone: keep serving what was indexed
                        pass
            return self.snapshot

    def with_chunks(self, infill: Infill) -> Infill:
        """`infill` with the chunks that best match the identifiers before its cursor, best last (next
        to the code), when it brings none of its own. Chunks the prefix or suffix already hold add nothing."""
        if infill.extra:
            return infill
        snapshot = self.current()
        ranked = snapshot.index.search(infill.prefix[-QUERY_BYTES:])
        kept = [c for c, _ in ranked if c.data not in infill.prefix and c.data not in infill.suffix]
        chunks = tuple(extra_chunk(snapshot.names[c.file], c.data.decode("utf-8")) for c in reversed(kept))
        return replace(infill, extra=chunks)

    def props(self) -> dict[str, Any]:
        s = self.snapshot
        return {
            "path": str(self.root),
            "files": s.files,
            "chunks": s.chunks,
            "chunk_lines": CHUNK_LINES,
            "index_seconds": round(s.seconds, 3),
            "indexed_at": int(s.built_at),
        }


def _relative(name: str, root: Path) -> str:
    """A file's name as the chunk's comment line gives it: its path inside the repository."""
    try:
        return str(Path(name).relative_to(root))
    except ValueError:
        return name
