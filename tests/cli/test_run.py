"""main: the entry points, and how a command ends (closed pipe, closed stdout)."""

from __future__ import annotations

import errno
import importlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from asyncclf._cli import main

from .conftest import RefusingStdout, one_error, run


@pytest.mark.slow
def test_console_entry_point_runs_without_traceback(tmp_path: Path) -> None:
    """python -m asyncclf reports a missing input file in one line, exit status 1."""
    result = subprocess.run(
        [sys.executable, "-m", "asyncclf", "classify", str(tmp_path / "m"), str(tmp_path / "in")],
        capture_output=True,
        text=True,
        timeout=300,  # minutes: the machine may be busy
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("asyncclf: ")


@pytest.mark.slow
def test_python_m_asyncclf_classifies_with_processes(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """python -m asyncclf classify --executor processes starts working workers (the real CLI)."""
    source = tmp_path / "in.txt"
    source.write_text("WINNER!! claim your free prize, call now\nsee you at lunch\n", "utf-8")
    status, expected, _ = run(["classify", str(model), str(source)], capsys)
    assert status == 0
    command = [sys.executable, "-m", "asyncclf", "classify", str(model), str(source)]
    result = subprocess.run(
        [*command, "--executor", "processes", "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=300,  # minutes: the machine may be busy
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == expected


def test_a_closed_pipe_stops_quietly(
    model: Path, corpus: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader that went away (head) ends classify with status 0 and nothing on stderr."""
    monkeypatch.setattr(
        sys, "stdout", RefusingStdout(BrokenPipeError(errno.EPIPE, "pipe"), "write")
    )
    status, _, err = run(
        ["classify", str(model), "--jsonl", "--text-field", "msg", str(corpus)], capsys
    )
    assert (status, err) == (0, "")


def test_a_closed_stdout_gives_one_line(
    model: Path, corpus: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started with stdout closed (sys.stdout is None), classify fails in one line."""
    monkeypatch.setattr(sys, "stdout", None)
    status, _, err = run(["classify", str(model), str(corpus)], capsys)
    assert status == 1
    assert one_error(err).startswith("<stdout>: closed")


def test_the_installed_script_and_python_m_run_main(monkeypatch: pytest.MonkeyPatch) -> None:
    """pyproject's asyncclf script names main, and python -m asyncclf exits with its status."""
    import runpy

    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text("utf-8")
    script = re.search(r'^\[project\.scripts\]\nasyncclf = "([\w.]+):(\w+)"$', pyproject, re.M)
    assert script is not None  # read without tomllib, which Python 3.10 lacks
    assert getattr(importlib.import_module(script[1]), script[2]) is main
    monkeypatch.setattr(sys, "argv", ["asyncclf", "--version"])
    with pytest.raises(SystemExit) as version:
        runpy.run_module("asyncclf", run_name="__main__")
    assert version.value.code == 0


def test_trio_missing_gives_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """--backend trio without trio installed exits 1 in one line saying what to install."""
    find_spec = importlib.util.find_spec

    def without_trio(name: str, package: str | None = None) -> Any:
        return None if name == "trio" else find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", without_trio)
    status, out, err = run(["--backend", "trio", "classify", str(tmp_path / "m")], capsys)
    assert (status, out) == (1, "")
    assert one_error(err) == "trio is not installed; 'pip install trio' first."
