"""Settings declare their flags: every ServerSettings flag field is an `axl serve` flag and round-trips."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from multiscale_transformer.cli import build_parser, main
from multiscale_transformer.errors import UserError
from multiscale_transformer.serving.settings import ServerSettings
from multiscale_transformer.settings import add_flags, from_flags


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_flags(parser, ServerSettings)
    return parser


def test_every_flag_field_reaches_axl_serve() -> None:
    serve = next(a for a in build_parser()._subparsers._group_actions if "serve" in a.choices).choices["serve"]  # type: ignore[union-attr]
    dests = {action.dest for action in serve._actions}
    declared = {f.name for f in dataclasses.fields(ServerSettings) if "flag" in f.metadata}
    assert declared and declared <= dests


def test_defaults_and_values_round_trip() -> None:
    assert from_flags(ServerSettings, serve_parser().parse_args([])) == ServerSettings()
    args = serve_parser().parse_args(
        ["--max-concurrency", "3", "--docs", "--cors-origin", "http://a:1", "--cors-origin", "http://b:2",
         "--header-timeout", "2.5", "--keep-alive", "9", "--host", "0.0.0.0"]
    )  # fmt: skip
    settings = from_flags(ServerSettings, args, name="m")
    assert settings == ServerSettings(
        name="m", max_batch=3, docs=True, cors_origins=("http://a:1", "http://b:2"), header_timeout_s=2.5,
        keep_alive_s=9, host="0.0.0.0",
    )  # fmt: skip


@pytest.mark.parametrize("argv", [["--max-queue", "0"], ["--body-timeout", "nan"], ["--keep-alive", "x"]])
def test_bad_values_are_refused_by_the_flag_type(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        serve_parser().parse_args(argv)


def test_checks_live_in_the_settings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(UserError, match="positive integer"):
        ServerSettings(max_queue=0)
    with pytest.raises(UserError, match="seconds"):
        ServerSettings(body_timeout_s=0)
    with pytest.raises(SystemExit) as exit_info:  # argparse refuses it before the settings are built
        main(["serve", "--preset", "tiny", "--keep-alive", "0"])
    assert exit_info.value.code == 2 and "expected a positive integer" in capsys.readouterr().err
