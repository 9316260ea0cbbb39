"""The commands train, classify, rank and eval: what each prints and the errors they name."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from asyncclf import AsyncClassifier

from ..fakes import KeywordClassifier
from .conftest import KEYWORD, one_error, records, run, save_model


def test_train_reports_classes_counts_and_holdout_accuracy(
    corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """train prints the classes with counts and a held-out accuracy, then saves."""
    target = tmp_path / "m.skops"
    status, out, err = run(
        ["train", str(corpus), "-o", str(target), "--text-field", "msg", "--label-field", "y"],
        capsys,
    )
    assert (status, err) == (0, "")
    assert "read 1200 examples" in out
    assert "ham: " in out
    assert "spam: " in out
    accuracy = float(out.split("held-out accuracy: ")[1].split()[0])
    assert accuracy > 0.9
    assert target.exists()


def test_classify_plain_lines_in_order(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """classify writes one JSON object per non-blank input line, in order, and counts blanks."""
    source = tmp_path / "in.txt"
    lines = ["WINNER!! claim your free prize, call now", "see you at lunch", ""] * 50
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    status, out, err = run(["classify", str(model), str(source)], capsys)
    records = [json.loads(line) for line in out.splitlines()]
    assert status == 0
    assert err == f"asyncclf: note: {source}: skipped 50 blank lines (the first is line 3)\n"
    assert [r["index"] for r in records] == list(range(100))
    assert [r["label"] for r in records[:2]] == ["spam", "ham"]
    assert all(0 <= r["score"] <= 1 for r in records)


def test_classify_reads_stdin_jsonl(
    model: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """classify reads JSON Lines from stdin with --jsonl and a named text field."""
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"t": "free cash prize"}\n{"t": "hi mum"}\n'))
    status, out, _ = run(
        ["classify", str(model), "--jsonl", "--text-field", "t", "--with-text"], capsys
    )
    records = [json.loads(line) for line in out.splitlines()]
    assert status == 0
    assert [(r["text"], r["label"]) for r in records] == [
        ("free cash prize", "spam"),
        ("hi mum", "ham"),
    ]


def test_rank_keeps_the_top_k(
    model: Path, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """rank prints the k texts scoring highest for the label, best first."""
    status, out, _ = run(
        [
            "rank",
            str(model),
            "--label",
            "spam",
            "-k",
            "5",
            "--jsonl",
            "--text-field",
            "msg",
            str(corpus),
        ],
        capsys,
    )
    records = [json.loads(line) for line in out.splitlines()]
    assert status == 0
    assert len(records) == 5
    scores = [r["score"] for r in records]
    assert scores == sorted(scores, reverse=True)


def test_eval_reports_accuracy_macro_f1_and_classes(
    model: Path, corpus: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """eval prints accuracy, macro-F1 and a per-class report."""
    status, out, _ = run(
        [
            "--backend",
            "trio",
            "eval",
            str(model),
            str(corpus),
            "--text-field",
            "msg",
            "--label-field",
            "y",
        ],
        capsys,
    )
    assert status == 0
    assert "examples: 1200" in out
    assert float(out.split("accuracy: ")[1].split()[0]) > 0.95
    assert "macro-F1: " in out
    assert "spam" in out.split("macro-F1")[1]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "{}: no examples"),
        ("\n  \n", "{}: no examples"),
        ('{"text": "a b", "label": "x"}\n' * 3, '{}: every example has the label "x"; '),
        ('{"text": "a b", "label": 1.5}\n', "{}:1: field 'label' is a number; labels must be"),
        ('{"text": "a b", "label": null}\n', "{}:1: field 'label' is null; labels must be"),
        ('{"text": "a b", "label": [1]}\n', "{}:1: field 'label' is an array; labels must be"),
        ('{"text": "a b", "label": {}}\n', "{}:1: field 'label' is an object; labels must be"),
        ('{"text": null, "label": "x"}\n', "{}:1: field 'text' is null, not a string"),
        (
            '{"text": "a b", "label": 1}\n\n{"text": "c d", "label": "1"}\n',
            '{}:3: label "1" is a string, but line 1 has an integer label',
        ),
        (
            '{"text": "a b", "label": true}\n{"text": "c d", "label": 1}\n',
            "{}:2: label 1 is an integer, but line 1 has a boolean label",
        ),
        ('{"text": "a b", "label": 99999999999999999999}\n', "{}:1: label 99999999999999999999"),
        ('{"text": "a b", "label": ' + "9" * 5000 + "}\n", "{}:1: invalid JSON (Exceeds"),
        ("[" * 100_000 + "]" * 100_000 + "\n", "{}:1: invalid JSON (maximum recursion"),
        (
            '{"text": "", "label": "x"}\n{"text": " ", "label": "y"}\n' * 2,
            "{}: cannot train on these examples: empty vocabulary",
        ),
    ],
    ids=[
        "empty",
        "blank",
        "one class",
        "float",
        "null",
        "array",
        "object",
        "null text",
        "1 and '1'",
        "true and 1",
        "beyond int64",
        "huge int",
        "deep",
        "no words",
    ],
)
def test_bad_training_data_gives_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    """Training data train cannot learn from is refused in one line naming file and line."""
    data = tmp_path / "data.jsonl"
    data.write_text(content, encoding="utf-8")
    status, _, err = run(["train", str(data), "-o", str(tmp_path / "m.skops")], capsys)
    assert status == 1
    assert one_error(err).startswith(message.format(data))
    assert not (tmp_path / "m.skops").exists()


def test_train_goes_on_when_the_held_out_split_cannot_be_trained(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """A --holdout leaving too few examples of a class skips the accuracy, then trains."""
    rows = [("hello there", "a"), ("hello you", "a"), ("good bye", "b"), ("bye bye", "b")]
    data = tmp_path / "data.jsonl"
    lines = [json.dumps({"text": t, "label": y}) for t, y in [*rows, ("bye now", "b")]]
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    target = tmp_path / "m.skops"
    status, out, err = run(
        ["--backend", backend, "train", str(data), "-o", str(target), "--holdout", "0.5"], capsys
    )
    assert (status, err) == (0, "")
    assert "held-out accuracy: not computed (" in out
    assert target.exists()


def test_eval_refuses_labels_of_another_type_than_the_model(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """eval names the first label whose type differs from the model's labels."""
    data = tmp_path / "data.jsonl"
    data.write_text('{"text": "hi", "label": "ham"}\n{"text": "yo", "label": 1}\n', "utf-8")
    status, out, err = run(["--backend", backend, "eval", str(model), str(data)], capsys)
    assert (status, out) == (1, "")
    assert one_error(err) == (
        f"{data}:2: label 1 is an integer, but the model's labels are strings"
    )


@pytest.mark.parametrize("command", ["classify", "eval"])
def test_a_text_the_model_fails_on_is_named_by_its_line(
    keyword_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    backend: str,
    command: str,
) -> None:
    """An estimator error on one text ends classify/eval in one line naming that line."""
    texts = ["spam spam", "ham", "eggs and BOOM", "ham"]
    source = tmp_path / "in.jsonl"
    rows = [json.dumps({"text": t, "label": "ham"}) for t in texts]
    source.write_text("\n\n".join(rows) + "\n", encoding="utf-8")
    args = [command, "--trusted", KEYWORD, str(keyword_model), str(source)]
    status, out, err = run(
        ["--backend", backend, *args, *["--jsonl"] * (command != "eval")], capsys
    )
    assert status == 1
    assert one_error(err).startswith(f"{source}:5: the model failed on this text: ValueError")
    if command == "classify":
        assert [r["label"] for r in records(out)] == ["spam", "ham"]


def test_rank_reports_a_model_failure_in_one_line(
    keyword_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """An estimator error while ranking is one line naming the input, no output."""
    source = tmp_path / "in.txt"
    source.write_text("spam\nBOOM\nham\n", encoding="utf-8")
    args = ["rank", "--trusted", KEYWORD, str(keyword_model), "--label", "spam", str(source)]
    status, out, err = run(["--backend", backend, *args], capsys)
    assert (status, out) == (1, "")
    assert one_error(err).startswith(f"{source}: ")
    assert "ValueError" in err


@pytest.mark.parametrize(
    ("labels", "given", "texts", "best"),
    [
        ([1, 2, 3, 1, 2, 3], "1", ["2 2", "1 1 1", "3", "1"], [1, 3]),
        ([True, False] * 3, "true", ["False", "True True", "True"], [1, 2]),
        ([True, False] * 3, "True", ["False", "True True", "True"], [1, 2]),
        ([True, False] * 3, "false", ["False", "True True", "True"], [0]),
    ],
    ids=["int", "bool-json", "bool-python", "false"],
)
def test_rank_label_names_int_and_bool_classes(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    backend: str,
    labels: list[Any],
    given: str,
    texts: list[str],
    best: list[int],
) -> None:
    """--label is matched to the model's classes by str(), or JSON for booleans."""
    path = save_model(tmp_path / "m.skops", KeywordClassifier(), labels)
    source = tmp_path / "in.txt"
    source.write_text("\n".join(texts) + "\n", encoding="utf-8")
    huge_k = str(10**20)
    args = ["rank", "--trusted", KEYWORD, str(path), "--label", given, "-k", huge_k, str(source)]
    status, out, err = run(["--backend", backend, *args], capsys)
    assert (status, err) == (0, "")
    assert [r["index"] for r in records(out)][: len(best)] == best
    assert len(records(out)) == len(texts)


@pytest.mark.parametrize(
    ("classes", "given", "listing"),
    [
        (["ham", "spam"], "1", '"ham", "spam"'),
        ([1, "1"], "1", '1, "1"'),
        ([False, True], "1", "false, true"),
    ],
    ids=["none", "several", "bool-is-not-int"],
)
def test_rank_label_that_names_no_class_or_several_fails(
    model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    classes: list[Any],
    given: str,
    listing: str,
) -> None:
    """An unknown or ambiguous --label is one line listing the model's classes."""
    monkeypatch.setattr(
        AsyncClassifier, "classes_", property(lambda self: np.array(classes, dtype=object))
    )
    source = tmp_path / "in.txt"
    source.write_text("hello\n", encoding="utf-8")
    status, out, err = run(["rank", str(model), "--label", given, str(source)], capsys)
    assert (status, out) == (1, "")
    message = one_error(err)
    assert message.startswith(f"{model}: --label {given} names ")
    assert message.endswith(f"the model's classes are {listing}")


@pytest.mark.parametrize(("encode", "backend_name"), [("int", "asyncio"), ("bool", "trio")])
def test_integer_and_boolean_labels_work_end_to_end(
    small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], encode: str, backend_name: str
) -> None:
    """train, classify, rank --label and eval all work on int (or bool) JSON labels."""
    spam: Any = 1 if encode == "int" else True
    ham: Any = 0 if encode == "int" else False
    data = tmp_path / "data.jsonl"
    rows = [json.loads(line) for line in small.read_text("utf-8").splitlines()]
    data.write_text(
        "".join(
            json.dumps({"text": r["text"], "label": spam if r["label"] == "spam" else ham}) + "\n"
            for r in rows
        ),
        encoding="utf-8",
    )
    target = tmp_path / "m.skops"
    go = ["--backend", backend_name]
    status, out, err = run([*go, "train", str(data), "-o", str(target)], capsys)
    assert (status, err) == (0, "")
    assert float(out.split("held-out accuracy: ")[1].split()[0]) > 0.8
    source = tmp_path / "in.txt"
    source.write_text("WINNER!! claim your free prize, call now\nsee you at lunch\n", "utf-8")
    status, out, _ = run([*go, "classify", str(target), str(source)], capsys)
    assert status == 0
    assert [r["label"] for r in records(out)] == [spam, ham]
    assert [type(r["label"]) for r in records(out)] == [type(spam)] * 2
    status, out, _ = run(
        [*go, "rank", str(target), "--label", json.dumps(spam), str(source)], capsys
    )
    assert status == 0
    assert [r["index"] for r in records(out)] == [0, 1]
    status, out, _ = run([*go, "eval", str(target), str(data)], capsys)
    assert status == 0
    assert float(out.split("accuracy: ")[1].split()[0]) > 0.9


def test_train_seed_chooses_the_held_out_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """--seed picks the held-out examples: a seed always gives the same report, and
    seeds differ; named fields are read on either backend."""
    rows = [("free prize", 1), ("win cash", 1), ("cash prize", 1), ("free cash", 1)]
    rows += [("see you", 0), ("love you", 0), ("see mum", 0), ("love mum", 0)]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"t": t, "y": y}) + "\n" for t, y in rows), "utf-8")

    def held_out(seed: int) -> str:
        args = ["train", str(data), "-o", str(tmp_path / "m.skops"), "--holdout", "0.5"]
        fields = ["--text-field", "t", "--label-field", "y", "--seed", str(seed)]
        status, out, err = run(["--backend", backend, *args, *fields], capsys)
        assert (status, err) == (0, "")
        (line,) = [line for line in out.splitlines() if line.startswith("held-out accuracy")]
        return line

    reports = [held_out(seed) for seed in range(6)]
    assert held_out(3) == reports[3]
    assert all(f"seed {seed})" in report for seed, report in enumerate(reports) if "(4" in report)
    assert len({report.split(" (")[0] for report in reports}) > 1  # different splits


def test_demo_runs_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    """demo trains, classifies concurrently and reports (on asyncio here; test_demo.py
    runs it on trio and as python -m asyncclf demo)."""
    status, out, err = run(["demo"], capsys)
    assert (status, err) == (0, "")
    assert "SMS Spam Collection: 5574 messages, 747 spam" in out
    assert "concurrent classify() calls" in out
