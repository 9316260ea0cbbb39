"""Usage errors: bad options exit with status 2 and argparse's message naming them."""

from __future__ import annotations

from pathlib import Path

import pytest

from asyncclf._cli import main

from .conftest import ALL_COMMANDS, command_args, labelled, write_jsonl


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["--executor", "gpu"],
            "--executor: must be threads, processes or dask://HOST:PORT, not 'gpu'",
        ),
        (
            ["--executor", "dask://"],
            "--executor: must be dask://HOST:PORT, a Dask scheduler's host and port",
        ),
        (["--executor", "dask://10.0.0.5"], "--executor: must be dask://HOST:PORT"),
        (["--executor", "dask://:8786"], "--executor: must be dask://HOST:PORT"),
        (["--executor", "dask://10.0.0.5:port"], "--executor: must be dask://HOST:PORT"),
        (["--workers", "0"], "--workers: must be an integer >= 1, not '0'"),
        (["--workers", "two"], "--workers: must be an integer >= 1, not 'two'"),
        (
            ["--executor", "dask://10.0.0.5:8786", "--workers", "2"],
            "--workers: not for --executor dask://",
        ),
    ],
)
@pytest.mark.parametrize("command", ["train", "learn", "classify", "rank", "eval"])
def test_bad_executor_or_workers_is_a_usage_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    message: str,
    command: str,
) -> None:
    """A bad --executor or --workers exits 2 with argparse's usage and a message naming it."""
    missing = str(tmp_path / "missing")
    positional = {
        "train": [missing, "-o", str(tmp_path / "m.skops")],
        "learn": [missing, "-o", str(tmp_path / "m.skops"), "--classes", "a", "b"],
        "classify": [missing],
        "rank": [missing, "--label", "spam"],
        "eval": [missing, missing],
    }
    with pytest.raises(SystemExit) as usage:
        main([command, *positional[command], *options])
    assert usage.value.code == 2
    err = capsys.readouterr().err
    assert f"asyncclf {command}: error: argument {message}" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ([], "argument --classes: needed without --from: name every label DATA holds"),
        (["--classes", "spam"], "argument --classes: names one class"),
        (["--classes", "a", "b", "--sha256", "0" * 64], "argument --sha256: only with --from"),
        (["--classes", "a", "b", "--executor", "processes"], "argument --executor: learn runs"),
        (["--classes", "a", "b", "--batch-size", "0"], "argument --batch-size: must be an"),
        (
            ["--classes", "a", "b", "--on-error", "skip"],
            "argument --on-error: invalid choice: 'skip'",
        ),
    ],
)
def test_learn_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], message: str
) -> None:
    """learn without --classes or --from, or with options it cannot use, is a usage error."""
    data = write_jsonl(tmp_path / "stream.jsonl", labelled(4))
    with pytest.raises(SystemExit) as usage:
        main(["learn", str(data), "-o", str(tmp_path / "m.skops"), *options])
    assert usage.value.code == 2
    err = capsys.readouterr().err
    assert f"asyncclf learn: error: {message}" in err
    assert "Traceback" not in err
    assert not (tmp_path / "m.skops").exists()


def test_learn_says_where_data_goes_when_classes_took_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """DATA after --classes is read as a class: the usage error says to put it before."""
    with pytest.raises(SystemExit) as usage:
        main(["learn", "--classes", "spam", "ham", "data.jsonl", "-o", str(tmp_path / "m")])
    assert usage.value.code == 2
    assert "put DATA before it" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--where", "foo"], "argument --where: must be FIELD=VALUE"),
        (["--where", "=train"], "argument --where: must be FIELD=VALUE"),
    ],
)
@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_bad_where_is_a_usage_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    options: list[str],
    message: str,
) -> None:
    """--where without FIELD=VALUE exits 2 with argparse's usage and a message naming it."""
    args = command_args(command, tmp_path / "m", str(tmp_path / "missing"), tmp_path)
    with pytest.raises(SystemExit) as usage:
        main([*args, *options])
    assert usage.value.code == 2
    err = capsys.readouterr().err
    assert f"asyncclf {command}: error: {message}" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("command", ["classify", "rank"])
def test_where_on_plain_text_is_a_usage_error(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """--where needs JSON records: on plain-text INPUT (no --jsonl) it is a usage error."""
    args = [a for a in command_args(command, model, "-", tmp_path) if a != "--jsonl"]
    with pytest.raises(SystemExit) as usage:
        main([*args, "--where", "split=train"])
    assert usage.value.code == 2
    assert f"asyncclf {command}: error: argument --where: needs JSON records: add --jsonl" in (
        capsys.readouterr().err
    )
