"""Settings declare their flags: every ServerSettings / TrainSettings flag field is an `axl serve` /
`axl train` flag and round-trips."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from multiscale_transformer.cli import build_parser, main
from multiscale_transformer.errors import UserError
from multiscale_transformer.model.config import ModelConfig
from multiscale_transformer.serving.settings import ServerSettings
from multiscale_transformer.settings import add_flags, from_flags
from multiscale_transformer.training.settings import TrainSettings


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


def subcommand(name: str) -> argparse.ArgumentParser:
    return next(a for a in build_parser()._subparsers._group_actions if name in a.choices).choices[name]  # type: ignore[union-attr]


def test_every_train_setting_is_an_axl_train_flag_and_round_trips(tmp_path: Path) -> None:
    train = subcommand("train")
    declared = {f.name for f in dataclasses.fields(TrainSettings) if "flag" in f.metadata}
    assert declared and declared <= {action.dest for action in train._actions}
    config = ModelConfig.from_name("tiny")
    defaults = from_flags(TrainSettings, train.parse_args(["--out", str(tmp_path)]), config=config)
    assert defaults == TrainSettings(out=tmp_path, config=config)
    assert defaults.time_budget == 20 * 60  # the 20-minute default, decided by the settings
    args = train.parse_args(
        ["--out", str(tmp_path), "--optimizer", "muon", "--schedule", "wsd", "--fim-rate", "0.9",
         "--data", str(tmp_path), str(tmp_path), "--time-budget", "1h30m", "--resume", "--device", "cpu"]
    )  # fmt: skip
    settings = from_flags(TrainSettings, args, config=config)
    assert settings == TrainSettings(
        out=tmp_path, config=dataclasses.replace(config, fim=True), optimizer="muon", schedule="wsd", fim_rate=0.9,
        data=[tmp_path, tmp_path], time_budget=5400.0, resume=True, device="cpu",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("fields", "message"),
    [({"lr": 0.0}, "--lr must be positive"), ({"fim_rate": 2.0}, "--fim-rate"), ({"data": [Path("/nope")]}, "/nope")],
)
def test_train_checks_live_in_the_settings(tmp_path: Path, fields: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        TrainSettings(out=tmp_path, **fields)


def test_data_stdlib_names_the_default_corpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # where no file called `stdlib` exists
    args = subcommand("train").parse_args(["--out", str(tmp_path), "--data", "stdlib", "--data", str(tmp_path)])
    assert args.data == [Path("stdlib"), tmp_path]  # a repeated --data adds, it does not replace
    eval_args = subcommand("eval").parse_args(["--data", "stdlib", "--data", str(tmp_path)])
    assert eval_args.data == [Path("stdlib"), tmp_path]
    assert TrainSettings(out=tmp_path, data=[Path("stdlib"), tmp_path]).data == [Path("stdlib"), tmp_path]
    with pytest.raises(UserError, match=r"no such file or directory: nope$"):
        TrainSettings(out=tmp_path, data=[Path("stdlib"), Path("nope")])
