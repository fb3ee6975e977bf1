"""Settings dataclasses that declare their own command-line flags (type, default, help in one place).

A field made with `flag(...)` carries its help text, argparse type and flag names as metadata;
`add_flags` turns those fields into arguments and `from_flags` builds the settings back from the
parsed namespace, so a setting is written once and a new one appears on the command line by itself.
Checks stay in the dataclass's `__post_init__`, where the Python API gets them too.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
from collections.abc import Callable
from typing import Any, TypeVar

S = TypeVar("S")


def default_threads() -> int:
    """One intra-op thread per available core: more oversubscribes and slows a small CPU badly."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


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

_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def duration(text: str) -> float:
    """Seconds from '20m', '90s', '1h', '1h30m' or a plain number of seconds."""
    m = _DURATION.match(text.strip().lower())
    if not text.strip() or not m or not any(m.groups()):
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 20m or 1h, got {text!r}")
    h, mins, secs = (float(g) if g else 0.0 for g in m.groups())
    seconds = h * 3600 + mins * 60 + secs
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive duration, got {text!r}")
    return seconds


def flag(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    type: Callable[[str], Any] | None = None,
    names: tuple[str, ...] = (),
    many: bool = False,
    nargs: str | None = None,
    choices: tuple[str, ...] | None = None,
    metavar: str | None = None,
    group: str | None = None,
) -> Any:
    """A dataclass field that is also a flag: `--field-name` unless `names` says otherwise.

    bool fields become on/off switches (`--docs`); `many` fields (tuples) take the flag once per value;
    `nargs` and `choices` are argparse's; a field without a default is a required flag; `group`
    names the help section the flag is listed under.
    """
    metadata = {
        "help": help,
        "type": type,
        "names": names,
        "many": many,
        "nargs": nargs,
        "choices": choices,
        "metavar": metavar,
        "group": group,
    }
    return dataclasses.field(default=default, metadata={"flag": metadata})


def add_flags(
    parser: argparse.ArgumentParser | Any,
    cls: type,
    skip: tuple[str, ...] = (),
    groups: dict[str, Any] | None = None,
) -> None:
    """One argument per `flag` field of the dataclass `cls` (fields in `skip` are left to the caller).

    `groups`: argument groups by title that the caller already made (and may add flags of its own to).
    """
    groups = {} if groups is None else groups
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("flag")
        if meta is None or f.name in skip:
            continue
        target = parser
        if meta["group"]:
            if meta["group"] not in groups:
                groups[meta["group"]] = parser.add_argument_group(meta["group"])
            target = groups[meta["group"]]
        names = meta["names"] or (f"--{f.name.replace('_', '-')}",)
        required = f.default is dataclasses.MISSING
        default = None if required else f.default
        hidden = default is None or default is False or default == ()
        shown = "" if hidden else f" (default {default})"
        metavar = meta["metavar"] or names[0].lstrip("-").replace("-", "_").upper()
        kwargs: dict[str, Any] = {"dest": f.name, "help": meta["help"] + shown}
        if default is False and meta["type"] is None:
            kwargs["action"] = "store_true"
        elif meta["many"]:
            kwargs.update(action="append", default=[], type=meta["type"] or str, metavar=metavar)
        elif meta["choices"]:
            kwargs.update(default=default, choices=meta["choices"], required=required or None)
        else:
            kwargs.update(default=default, type=meta["type"], metavar=metavar, nargs=meta["nargs"])
            kwargs.update(required=required or None)
            if meta["nargs"] in ("+", "*"):  # `--data a --data b` means both, as `--data a b` does
                kwargs["action"] = "extend"
        target.add_argument(*names, **{k: v for k, v in kwargs.items() if v is not None or k == "default"})


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
