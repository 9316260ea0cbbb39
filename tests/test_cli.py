"""The asyncclf command line: train, classify, rank, eval, and its one-line errors."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from asyncclf._cli import main
from asyncclf._demo import load_sms_spam


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


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = main(args)
    captured = capsys.readouterr()
    return status, captured.out, captured.err


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
    """classify writes one JSON object per input line, in order, with label and score."""
    source = tmp_path / "in.txt"
    lines = ["WINNER!! claim your free prize, call now", "see you at lunch", ""] * 50
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    status, out, _ = run(["classify", str(model), str(source)], capsys)
    records = [json.loads(line) for line in out.splitlines()]
    assert status == 0
    assert [r["index"] for r in records] == list(range(len(lines)))
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
        ('{"msg": "ok", "y": "ham"}\nnot json\n', r"bad.jsonl:2: invalid JSON"),
        ('{"msg": "ok", "y": "ham"}\n{"y": "ham"}\n', r"bad.jsonl:2: no 'msg' field"),
        ('{"msg": 3, "y": "ham"}\n', r"bad.jsonl:1: field 'msg' is int, not a string"),
        ('["msg"]\n', r"bad.jsonl:1: expected a JSON object, got list"),
    ],
)
def test_bad_data_gives_one_line_naming_file_and_line(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    """Malformed data exits 1 with one stderr line naming the file and line."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content, encoding="utf-8")
    status, _, err = run(
        ["eval", str(model), str(bad), "--text-field", "msg", "--label-field", "y"], capsys
    )
    assert status == 1
    assert len(err.splitlines()) == 1
    assert err.startswith("asyncclf: ")
    assert message.replace("\\", "") in err.replace(str(tmp_path) + "/", "")


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_unreadable_models_give_one_line(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    """A missing or truncated model exits 1 with one line and no traceback."""
    path = tmp_path / "broken.model"
    if damage == "truncated":
        path.write_bytes(model.read_bytes()[:500])
    status, out, err = run(["classify", str(path), str(model)], capsys)
    assert (status, out) == (1, "")
    assert len(err.splitlines()) == 1
    assert "broken.model" in err


def test_console_entry_point_runs_without_traceback(tmp_path: Path) -> None:
    """python -m asyncclf reports a missing input file in one line, exit status 1."""
    result = subprocess.run(
        [sys.executable, "-m", "asyncclf", "classify", str(tmp_path / "m"), str(tmp_path / "in")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("asyncclf: ")


def test_trusted_types_can_be_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A model holding a non-sklearn type loads only with --trusted naming it."""
    import anyio

    from asyncclf import AsyncClassifier

    from .fakes import TRAIN_X, TRAIN_Y, KeywordClassifier

    async def save() -> None:
        clf = await AsyncClassifier(KeywordClassifier()).fit(TRAIN_X, TRAIN_Y)
        await clf.save(tmp_path / "fake.skops")

    anyio.run(save)
    source = tmp_path / "in.txt"
    source.write_text("spam spam\n", encoding="utf-8")
    status, _, err = run(["classify", str(tmp_path / "fake.skops"), str(source)], capsys)
    assert status == 1
    assert "tests.fakes.KeywordClassifier" in err
    status, out, _ = run(
        [
            "classify",
            "--trusted",
            "tests.fakes.KeywordClassifier",
            str(tmp_path / "fake.skops"),
            str(source),
        ],
        capsys,
    )
    assert status == 0
    assert json.loads(out)["label"] == "spam"
