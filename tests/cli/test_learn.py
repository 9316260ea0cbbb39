"""The learn command: online learning from labelled JSON Lines, its reports and errors."""

from __future__ import annotations

import hashlib
import io
import json
import re
import sys
from pathlib import Path
from typing import Any

import anyio
import anyio.to_process
import pytest

from asyncclf import AsyncClassifier
from asyncclf._cli import main

from .conftest import labelled, one_error, records, run, write_jsonl

PROGRESS = re.compile(
    r"(\d+) examples(?:, (\d+) skipped)?: progressive accuracy (\d\.\d{4}), "
    r"last (\d+): (\d\.\d{4}); model version (\d+)"
)


SUMMARY = re.compile(
    r"learned from (\d+) examples \((\d+) skipped\) at (\d+) examples/s: progressive "
    r"accuracy (\d\.\d{4}), last (\d+): (\d\.\d{4}); model version (\d+) saved to (.+) "
    r"\(sha256 ([0-9a-f]{64})\)"
)


def learned(out: str) -> tuple[str, list[re.Match[str]], re.Match[str]]:
    """Split learn's output into its first line, its progress lines and its summary."""
    lines = out.splitlines()
    progress = [PROGRESS.fullmatch(line) for line in lines[1:-1]]
    assert all(progress), out
    summary = SUMMARY.fullmatch(lines[-1])
    assert summary, out
    return lines[0], [match for match in progress if match], summary


def model_version(path: Path) -> int:
    """The version recorded in a saved model file, read through the public API."""

    async def load() -> int:
        return (await AsyncClassifier.load(path)).version

    return anyio.run(load)


def test_learn_then_classify_with_the_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """learn reports a line per published model and a summary, and saves a usable model."""
    data = write_jsonl(tmp_path / "stream.jsonl", labelled(200))
    target = tmp_path / "online.skops"
    status, out, err = run(
        [
            *["--backend", backend, "learn", str(data), "-o", str(target)],
            *["--classes", "spam", "ham", "--batch-size", "10", "--publish-every", "50"],
            *["--window", "20"],
        ],
        capsys,
    )
    assert (status, err) == (0, "")
    first, progress, summary = learned(out)
    assert first == f'learning from {data}, starting from a new model; classes: "spam", "ham"'
    # Mini-batches of at most 10 cross each multiple of 50 once: one publish each.
    seen = [int(match[1]) for match in progress]
    assert [s // 50 for s in seen] == [1, 2, 3, 4]
    assert seen[-1] == 200
    assert [int(match[6]) for match in progress] == [1, 2, 3, 4]
    assert [int(match[4]) for match in progress] == [20, 20, 20, 20]
    assert float(progress[-1][5]) == 1.0  # the last 20 of a separable stream
    assert summary.groups()[:2] == ("200", "0")
    assert summary[4] == progress[-1][3]
    assert (summary[7], summary[8]) == ("4", str(target))
    assert summary[9] == hashlib.sha256(target.read_bytes()).hexdigest()
    assert model_version(target) == 4
    source = tmp_path / "in.txt"
    source.write_text("free prize 9\nlove you mum 7\n", encoding="utf-8")
    status, out, _ = run(
        ["--backend", backend, "classify", str(target), "--sha256", summary[9], str(source)],
        capsys,
    )
    assert status == 0
    assert [r["label"] for r in records(out)] == ["spam", "ham"]


def test_learn_from_a_model_learns_on_and_bumps_the_version(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """--from MODEL starts from that model's version and classes, leaving its file as it was."""
    data = write_jsonl(tmp_path / "stream.jsonl", labelled(100))
    first = tmp_path / "first.skops"
    options = ["--batch-size", "10", "--publish-every", "50"]
    status, out, _ = run(
        ["learn", str(data), "-o", str(first), "--classes", "spam", "ham", *options], capsys
    )
    assert status == 0
    digest = learned(out)[2][9]
    before = first.read_bytes()
    second = tmp_path / "second.skops"
    more = write_jsonl(tmp_path / "more.jsonl", labelled(150)[50:])
    args = ["learn", str(more), "-o", str(second), "--from", str(first), "--sha256", digest]
    status, out, err = run(["--backend", backend, *args, *options], capsys)
    assert (status, err) == (0, "")
    header, progress, summary = learned(out)
    assert header == (
        f'learning from {more}, starting from {first} (version 2); classes: "ham", "spam"'
    )
    assert [int(match[6]) for match in progress] == [3, 4]
    assert (summary[1], summary[7]) == ("100", "4")
    assert model_version(second) == 4
    assert first.read_bytes() == before
    # In place: the same file as --from and -o.
    status, out, _ = run(
        ["--backend", backend, "learn", str(more), "-o", str(first), "--from", str(first)], capsys
    )
    assert status == 0
    assert learned(out)[2][7] == "3"
    assert model_version(first) == 3


def test_learn_saves_the_last_model_whatever_checkpoint_every(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """MODEL holds the final version even when the last publish is no checkpoint."""
    start = tmp_path / "start.skops"
    data = write_jsonl(tmp_path / "stream.jsonl", labelled(12))
    status, _, _ = run(["learn", str(data), "-o", str(start), "--classes", "spam", "ham"], capsys)
    assert status == 0
    target = tmp_path / "online.skops"
    args = ["learn", str(data), "-o", str(target), "--from", str(start), "--batch-size", "4"]
    status, out, err = run(
        ["--backend", backend, *args, "--publish-every", "4", "--checkpoint-every", "8"], capsys
    )
    assert (status, err) == (0, "")
    summary = learned(out)[2]
    assert model_version(target) == int(summary[7]) == 1 + 3
    assert summary[9] == hashlib.sha256(target.read_bytes()).hexdigest()


def test_learn_reads_stdin(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    backend: str,
) -> None:
    """learn - reads the examples from stdin, with named fields."""
    rows = [{"t": row["text"], "y": row["label"]} for row in labelled(30)]
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(json.dumps(r) + "\n" for r in rows)))
    target = tmp_path / "online.skops"
    args = ["--backend", backend, "learn", "-", "-o", str(target), "--classes", "ham", "spam"]
    status, out, err = run([*args, "--text-field", "t", "--label-field", "y"], capsys)
    assert (status, err) == (0, "")
    header, _, summary = learned(out)
    assert header.startswith("learning from <stdin>, ")
    assert (summary[1], summary[7]) == ("30", "1")


@pytest.mark.parametrize(
    ("labels", "classes"), [((1, 0), ["0", "1"]), ((True, False), ["true", "False"])]
)
def test_learn_reads_classes_as_the_labels_type(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    backend: str,
    labels: tuple[Any, Any],
    classes: list[str],
) -> None:
    """--classes names integer and boolean labels as train prints them; the model keeps the type."""
    data = write_jsonl(tmp_path / "stream.jsonl", labelled(40, labels))
    target = tmp_path / "online.skops"
    args = ["learn", str(data), "-o", str(target), "--classes", *classes]
    status, out, err = run(["--backend", backend, *args], capsys)
    assert (status, err) == (0, "")
    assert learned(out)[2][1] == "40"
    source = tmp_path / "in.txt"
    source.write_text("free prize 1\nrunning late 2\n", encoding="utf-8")
    status, out, _ = run(["classify", str(target), str(source)], capsys)
    assert [r["label"] for r in records(out)] == list(labels)
    status, out, err = run([*args[:-2], "spam", "ham"], capsys)
    assert (status, out) == (1, "")
    kind = "integers" if labels[0] == 1 and labels[0] is not True else "booleans"
    assert one_error(err) == (
        f"--classes spam: the labels of {data} (line 1) are {kind}; name the classes as such"
    )


def test_a_label_outside_the_classes_is_named_by_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """A label outside --classes ends learn with one line naming file and line; no model."""
    rows: list[dict[str, Any] | str] = [*labelled(5), {"text": "ham and eggs", "label": "eggs"}]
    data = write_jsonl(tmp_path / "stream.jsonl", [*rows, *labelled(5)])
    target = tmp_path / "online.skops"
    args = ["learn", str(data), "-o", str(target), "--classes", "spam", "ham"]
    status, out, err = run(["--backend", backend, *args], capsys)
    assert status == 1
    assert one_error(err) == (
        f'{data}:6: label "eggs" is not one of the classes, "spam", "ham"; name every label '
        f"of {data} in --classes"
    )
    assert out.splitlines() == [
        f'learning from {data}, starting from a new model; classes: "spam", "ham"'
    ]
    assert not target.exists()  # nothing was published, so nothing saved


def test_on_error_yield_warns_of_each_bad_line_and_counts_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """--on-error yield learns from the good lines, one warning per bad line, counted."""
    good = labelled(20)
    rows: list[dict[str, Any] | str] = [
        *good[:10],
        "not json",
        {"text": "ham and eggs", "label": "eggs"},
        {"text": "no label"},
        {"text": "a number", "label": 3},
        *good[10:],
    ]
    data = write_jsonl(tmp_path / "stream.jsonl", rows)
    target = tmp_path / "online.skops"
    args = ["learn", str(data), "-o", str(target), "--classes", "spam", "ham"]
    status, out, err = run(["--backend", backend, *args, "--on-error", "yield"], capsys)
    assert status == 0
    assert err.splitlines() == [
        f"asyncclf: warning: {data}:11: invalid JSON (Expecting value at column 1); skipped",
        f'asyncclf: warning: {data}:12: label "eggs" is not one of the classes, "spam", '
        f'"ham"; name every label of {data} in --classes; skipped',
        f"asyncclf: warning: {data}:13: no 'label' field (use --label-field to name "
        f"another); skipped",
        f"asyncclf: warning: {data}:14: label 3 is an integer, but line 1 has a string "
        f"label; all labels must be of one type; skipped",
    ]
    _, progress, summary = learned(out)
    assert (summary[1], summary[2]) == ("20", "4")
    assert progress[-1].groups()[:2] == ("20", "4")


def test_learn_with_every_line_skipped_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """learn with no example to learn from says so, counting the skipped lines."""
    data = write_jsonl(tmp_path / "stream.jsonl", [{"text": "x", "label": "eggs"}, "[]"])
    target = tmp_path / "online.skops"
    args = ["learn", str(data), "-o", str(target), "--classes", "spam", "ham"]
    status, out, err = run([*args, "--on-error", "yield"], capsys)
    assert status == 1
    assert err.splitlines()[-1] == f"asyncclf: {data}: no examples to learn from (2 lines skipped)"
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    status, out, err = run(["learn", str(empty), "-o", str(target), "--classes", "a", "b"], capsys)
    assert (status, out) == (1, "")
    assert one_error(err) == f"{empty}: no examples to learn from"
    assert not target.exists()


def test_learn_from_a_model_that_cannot_learn_or_with_other_classes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """--from a model without partial_fit, or --classes differing from its own, is one line."""
    data = write_jsonl(tmp_path / "stream.jsonl", labelled(20))
    trained = tmp_path / "trained.skops"
    assert main(["train", str(data), "-o", str(trained), "--holdout", "0"]) == 0
    capsys.readouterr()
    target = tmp_path / "online.skops"
    args = ["--backend", backend, "learn", str(data), "-o", str(target)]
    status, out, err = run([*args, "--from", str(trained)], capsys)
    assert (status, out) == (1, "")
    assert one_error(err) == (
        f"{trained}: its CalibratedClassifierCV cannot learn incrementally (it has no "
        f"partial_fit); continue from a model saved by learn, or leave out --from"
    )
    status, _, _ = run([*args, "--classes", "spam", "ham"], capsys)
    assert status == 0
    status, out, err = run(
        [*args, "--from", str(target), "--classes", "spam", "eggs", "ham"], capsys
    )
    assert (status, out) == (1, "")
    assert one_error(err) == (
        f'{target}: --classes "spam", "eggs", "ham" differ from the model\'s classes, '
        f'"ham", "spam"; leave out --classes'
    )


def test_learn_draws_a_bar_with_the_accuracy_on_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal, a tqdm bar on stderr shows the progressive and recent accuracy."""
    pytest.importorskip("tqdm")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    data = write_jsonl(tmp_path / "stream.jsonl", labelled(60))
    target = tmp_path / "online.skops"
    args = ["learn", str(data), "-o", str(target), "--classes", "spam", "ham"]
    status, out, err = run([*args, "--window", "10"], capsys)
    assert status == 0
    assert re.search(r"learn: 60 examples .*accuracy \d\.\d{3}, last 10: 1\.000, version 1", err)
    assert learned(out)[2][1] == "60"  # stdout is no terminal: the lines are printed too


def test_learn_workers_and_trusted_reach_the_model(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    recorded: list[AsyncClassifier[Any]],
    backend: str,
) -> None:
    """learn --workers N gives its model an N-token limiter, new or --from a file loaded
    with --trusted."""
    data = write_jsonl(tmp_path / "stream.jsonl", labelled(20))
    first = tmp_path / "first.skops"
    go = ["--backend", backend, "learn", str(data)]
    new = ["-o", str(first), "--classes", "spam", "ham", "--executor", "threads"]
    status, _, err = run([*go, *new, "--workers", "2"], capsys)
    assert (status, err) == (0, "")
    args = [*go, "-o", str(tmp_path / "second.skops"), "--from", str(first), "--workers", "3"]
    status, _, err = run([*args, "--trusted", "tests.fakes.KeywordClassifier"], capsys)
    assert (status, err) == (0, "")
    assert [clf.executor for clf in recorded] == ["threads"] * 2
    assert [getattr(clf.limiter, "total_tokens", None) for clf in recorded] == [2, 3]
