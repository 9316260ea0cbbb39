"""Fixtures and helpers of the command-line tests: models, data and a way to run main."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import anyio
import pytest

from asyncclf import AsyncClassifier
from asyncclf._cli import main
from asyncclf._demo import load_sms_spam

from ..fakes import TRAIN_X, TRAIN_Y, KeywordClassifier

KEYWORD = "tests.fakes.KeywordClassifier"


class RefusingStdout(io.StringIO):
    """A standard output whose write or flush raises ``error``."""

    def __init__(self, error: OSError, on: str) -> None:
        super().__init__()
        self.error = error
        self.on = on

    def write(self, text: str) -> int:
        if self.on == "write":
            raise self.error
        return super().write(text)

    def flush(self) -> None:
        if self.on == "flush":
            raise self.error


ALL_COMMANDS = ["train", "learn", "classify", "rank", "eval"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1,200 bundled SMS messages as JSON Lines, with the fields named 'msg' and 'y'."""
    texts, labels = load_sms_spam()
    path = tmp_path_factory.mktemp("cli") / "sms.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for text, label in zip(texts[:1200], labels[:1200], strict=True):
            out.write(json.dumps({"msg": text, "y": label}) + "\n")
    return path


@pytest.fixture(scope="module")
def model(corpus: Path) -> Path:
    """A model trained by the train command."""
    path = corpus.parent / "sms.model"
    assert (
        main(["train", str(corpus), "-o", str(path), "--text-field", "msg", "--label-field", "y"])
        == 0
    )
    return path


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    """The event loop to run the command on."""
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """300 bundled SMS messages as JSON Lines with the default field names."""
    texts, labels = load_sms_spam()
    path = tmp_path_factory.mktemp("small") / "small.jsonl"
    rows = [{"text": t, "label": y} for t, y in zip(texts[:300], labels[:300], strict=True)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def keyword_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A KeywordClassifier model (it raises for a text containing 'BOOM')."""
    return save_model(tmp_path_factory.mktemp("kw") / "kw.skops", KeywordClassifier(), TRAIN_Y)


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(args)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def save_model(path: Path, estimator: Any, labels: Sequence[Any]) -> Path:
    """Fit ``estimator`` on TRAIN_X with ``labels`` through the public API and save it."""

    async def save() -> None:
        clf = await AsyncClassifier(estimator).fit(TRAIN_X, list(labels))
        await clf.save(path)

    anyio.run(save)
    return path


def one_error(err: str) -> str:
    """Return the single stderr line without its 'asyncclf: ' prefix; fail otherwise."""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("asyncclf: "), err
    return lines[0].removeprefix("asyncclf: ")


def records(out: str) -> list[dict[str, Any]]:
    """Parse JSON Lines strictly: NaN and Infinity are refused, as by other parsers."""

    def refuse(constant: str) -> None:
        msg = f"non-standard JSON constant {constant}"
        raise AssertionError(msg)

    return [json.loads(line, parse_constant=refuse) for line in out.splitlines()]


SPAM_WORDS = ["free prize", "win cash now", "claim your reward", "urgent offer"]


HAM_WORDS = ["see you at lunch", "running late", "love you mum", "dinner at eight"]


def labelled(count: int, labels: Sequence[Any] = ("spam", "ham")) -> list[dict[str, Any]]:
    """``count`` separable examples alternating over ``labels`` (spam-like, then ham-like)."""
    rows = []
    for i in range(count):
        spammy = i % 2 == 0
        words = SPAM_WORDS if spammy else HAM_WORDS
        rows.append({"text": f"{words[i % 4]} {i % 5}", "label": labels[0 if spammy else 1]})
    return rows


def write_jsonl(path: Path, rows: Sequence[dict[str, Any] | str]) -> Path:
    """Write ``rows`` (records, or raw lines as given) as JSON Lines."""
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def command_args(command: str, model: Path, data: str, tmp_path: Path) -> list[str]:
    """The arguments running ``command`` on the labelled JSON Lines ``data``."""
    return {
        "train": ["train", data, "-o", str(tmp_path / "m.skops"), "--holdout", "0"],
        "learn": ["learn", data, "-o", str(tmp_path / "o.skops"), "--classes", "ham", "spam"],
        "classify": ["classify", str(model), "--jsonl", "--with-text", data],
        "rank": ["rank", str(model), "--label", "spam", "-k", "1000", "--jsonl", data],
        "eval": ["eval", str(model), data],
    }[command]


class Recorded(AsyncClassifier[Any]):
    """An AsyncClassifier that records every instance made, to see its executor."""

    made: ClassVar[list[AsyncClassifier[Any]]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        Recorded.made.append(self)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[AsyncClassifier[Any]]:
    """The classifiers the command line makes from now on (train two, the others one)."""
    from asyncclf._cli import commands, learn, models

    monkeypatch.setattr(Recorded, "made", [])
    for module in (commands, learn, models):  # every module that makes or loads one
        monkeypatch.setattr(module, "AsyncClassifier", Recorded)
    return Recorded.made
