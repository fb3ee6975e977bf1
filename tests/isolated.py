"""Call a function in a fresh Python process, so that a native crash fails one test instead of the run.

llama.cpp is C++: a segfault inside it (e.g. its AMX kernels on some Intel Xeons, llama.cpp issue
20824) would kill the pytest process and every test after it. `isolated(fn, *args)` pickles the call,
runs it with `python -m tests.isolated`, and returns the pickled result; a child that dies of a signal
fails the calling test with the signal's name.
"""

from __future__ import annotations

import importlib
import pickle
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")

CRASH_HINT = (
    "on an Intel CPU with AMX, rebuild llama-cpp-python without its native kernels: "
    'CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --no-cache-dir --force-reinstall llama-cpp-python (docs/gguf.md)'
)


def isolated(fn: Callable[..., T], *args: Any, timeout: float = 600) -> T:
    """fn(*args) in a child process; fn must be importable by module and name, args and result picklable."""
    with tempfile.TemporaryDirectory() as tmp:
        call, result = Path(tmp) / "call.pkl", Path(tmp) / "result.pkl"
        call.write_bytes(pickle.dumps((fn.__module__, fn.__qualname__, args)))
        done = subprocess.run(
            [sys.executable, "-m", "tests.isolated", str(call), str(result)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode < 0:
            name = signal.Signals(-done.returncode).name
            pytest.fail(f"{fn.__qualname__} died of {name} in a child process; {CRASH_HINT}", pytrace=False)
        if done.returncode != 0:
            pytest.fail(f"{fn.__qualname__} failed in a child process:\n{done.stderr[-3000:]}", pytrace=False)
        return pickle.loads(result.read_bytes())


def _main(call: str, result: str) -> None:
    module, qualname, args = pickle.loads(Path(call).read_bytes())
    fn: Any = importlib.import_module(module)
    for part in qualname.split("."):
        fn = getattr(fn, part)
    Path(result).write_bytes(pickle.dumps(fn(*args)))


if __name__ == "__main__":
    _main(*sys.argv[1:])
