"""The command's output: strict JSON, and a refused write as one line."""

from __future__ import annotations

import errno
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from ..fakes import TRAIN_Y, KeywordClassifier
from .conftest import RefusingStdout, one_error, records, run, save_model


class NonFiniteClassifier(KeywordClassifier):
    """A keyword classifier scoring NaN a text containing 'NAN', inf one with 'INF'."""

    def predict_proba(self, X: Sequence[str]) -> NDArray[np.float64]:
        rows = super().predict_proba(X)
        for i, text in enumerate(X):
            if "NAN" in text:
                rows[i] = np.nan
            elif "INF" in text:
                rows[i] = np.inf
        return rows


@pytest.mark.parametrize("bad", ["NAN", "INF"])
def test_non_finite_scores_never_reach_the_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str, bad: str
) -> None:
    """A NaN or infinite score is one line naming the text; stdout stays strict JSON."""
    path = save_model(tmp_path / "nan.skops", NonFiniteClassifier(), TRAIN_Y)
    source = tmp_path / "in.txt"
    source.write_text(f"spam spam\nham {bad}\neggs\n", encoding="utf-8")
    trusted = ["--trusted", "tests.cli.test_output.NonFiniteClassifier", str(path)]
    status, out, err = run(["--backend", backend, "classify", *trusted, str(source)], capsys)
    assert status == 1
    assert one_error(err).startswith(f"{source}:2: ")
    assert [r["index"] for r in records(out)] == [0]
    status, out, err = run(
        ["--backend", backend, "rank", *trusted, "--label", "ham", str(source)], capsys
    )
    assert (status, out) == (1, "")
    assert one_error(err).startswith(f"{source}: ")


@pytest.mark.parametrize("on", ["write", "flush"])
@pytest.mark.parametrize("command", ["classify", "eval"])
def test_an_output_the_disk_refuses_gives_one_line(
    model: Path,
    corpus: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    command: str,
    on: str,
) -> None:
    """A write or flush to stdout failing with ENOSPC ends the command in one line."""
    fields = ["--text-field", "msg", *(["--label-field", "y"] if command == "eval" else [])]
    args = [command, str(model), str(corpus), *fields, *(["--jsonl"] * (command != "eval"))]
    monkeypatch.setattr(sys, "stdout", RefusingStdout(OSError(errno.ENOSPC, "No space"), on))
    status, _, err = run(["--backend", backend, *args], capsys)
    assert status == 1
    assert one_error(err) == "<stdout>: cannot write: No space"


def test_texts_with_lone_surrogates_are_written_as_json(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """A JSON text holding a lone surrogate comes back escaped, not as an encoding crash."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "a\\ud800b"}\n', encoding="utf-8")
    status, out, _ = run(
        ["--backend", backend, "classify", str(model), "--jsonl", "--with-text", str(source)],
        capsys,
    )
    assert status == 0
    assert [r["text"] for r in records(out)] == ["a\ud800b"]
