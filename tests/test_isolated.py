"""tests/isolated.py: a call that crashes in native code fails its test with the signal, and the run goes on."""

from __future__ import annotations

import ctypes
import os
import signal
from pathlib import Path

import pytest

from .isolated import isolated


def segfault() -> None:
    ctypes.string_at(0)  # reads address 0: the child dies of SIGSEGV, as llama.cpp's AMX kernels do


def aborts() -> None:
    os.kill(os.getpid(), signal.SIGABRT)


def pid_and_sum(a: int, b: int) -> tuple[int, int]:
    return os.getpid(), a + b


def test_a_result_comes_back_from_another_process() -> None:
    pid, total = isolated(pid_and_sum, 2, 3)
    assert total == 5 and pid != os.getpid()


@pytest.mark.parametrize(("fn", "name"), [(segfault, "SIGSEGV"), (aborts, "SIGABRT")])
def test_a_native_crash_fails_the_calling_test_with_the_signal(fn: object, name: str) -> None:
    with pytest.raises(pytest.fail.Exception, match=f"died of {name}.*GGML_NATIVE=OFF"):
        isolated(fn)  # type: ignore[arg-type]
    assert Path(__file__).exists()  # this process is alive and still running the test


def test_a_python_error_in_the_child_fails_with_its_traceback() -> None:
    with pytest.raises(pytest.fail.Exception, match="ZeroDivisionError"):
        isolated(divmod, 1, 0)
