"""Settings dataclasses that declare their own command-line flags (type, default, help in one place).

A field made with `flag(...)` carries its help text, argparse type and flag names as metadata;
`add_flags` turns those fields into arguments and `from_flags` builds the settings back from the
parsed namespace, so a setting is written once and a new one appears on the command line by itself.
Checks stay in the dataclass's `__post_init__`, where the Python API gets them too.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

S = TypeVar("S")
T = TypeVar("T", int, float)


def _checked(convert: Callable[[str], T], ok: Callable[[T], bool], expected: str) -> Callable[[str], T]:
    """An argparse `type=` that converts a flag's text and rejects values outside the allowed range."""

    def parse(text: str) -> T:
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


positive_int = _checked(int, lambda v: v >= 1, "a positive integer")
non_negative_int = _checked(int, lambda v: v >= 0, "an integer >= 0")
non_negative_float = _checked(float, lambda v: 0 <= v < float("inf"), "a number >= 0")  # also rejects NaN
positive_float = _checked(float, lambda v: 0 < v < float("inf"), "a positive number")
penalty = _checked(float, lambda v: -2 <= v <= 2, "a number in [-2, 2]")  # OpenAI's frequency/presence range
fraction = _checked(float, lambda v: 0 < v < 1, "a number in (0, 1)")


def flag(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    type: Callable[[str], Any] | None = None,
    names: tuple[str, ...] = (),
    many: bool = False,
    metavar: str | None = None,
) -> Any:
    """A dataclass field that is also a flag: `--field-name` unless `names` says otherwise.

    bool fields become on/off switches (`--docs`); `many` fields (tuples) take the flag once per value.
    """
    metadata = {"help": help, "type": type, "names": names, "many": many, "metavar": metavar}
    return dataclasses.field(default=default, metadata={"flag": metadata})


def add_flags(parser: argparse.ArgumentParser | Any, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One argument per `flag` field of the dataclass `cls` (fields in `skip` are left to the caller)."""
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("flag")
        if meta is None or f.name in skip:
            continue
        names = meta["names"] or (f"--{f.name.replace('_', '-')}",)
        default = f.default if f.default is not dataclasses.MISSING else None
        shown = "" if default in (None, (), False) else f" (default {default})"
        metavar = meta["metavar"] or names[0].lstrip("-").replace("-", "_").upper()
        kwargs: dict[str, Any] = {"dest": f.name, "help": meta["help"] + shown}
        if default is False and meta["type"] is None:
            kwargs["action"] = "store_true"
        elif meta["many"]:
            kwargs.update(action="append", default=[], type=meta["type"] or str, metavar=metavar)
        else:
            kwargs.update(default=default, type=meta["type"], metavar=metavar)
        parser.add_argument(*names, **{k: v for k, v in kwargs.items() if v is not None or k == "default"})


def from_flags(cls: type[S], args: argparse.Namespace, **overrides: Any) -> S:
    """The settings from parsed flags (fields without a flag keep their defaults unless overridden)."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        meta = f.metadata.get("flag")
        if meta is None or not hasattr(args, f.name):
            continue
        value = getattr(args, f.name)
        values[f.name] = tuple(value) if meta["many"] else value
    values.update(overrides)
    return cls(**values)
