"""The asyncclf command line: train, learn, classify, rank, eval, and its one-line errors."""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import json
import re
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import anyio
import anyio.to_process
import numpy as np
import pytest
from numpy.typing import NDArray

from asyncclf import AsyncClassifier, PersistenceError, ProcessExecutor
from asyncclf._cli import main
from asyncclf._demo import load_sms_spam

from .fakes import TRAIN_X, TRAIN_Y, KeywordClassifier

KEYWORD = "tests.fakes.KeywordClassifier"


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
        ('{"msg": "ok", "y": "ham"}\nnot json\n', r"bad.jsonl:2: invalid JSON"),
        ('{"msg": "ok", "y": "ham"}\n{"y": "ham"}\n', r"bad.jsonl:2: no 'msg' field"),
        ('{"msg": 3, "y": "ham"}\n', r"bad.jsonl:1: field 'msg' is an integer, not a string"),
        ('["msg"]\n', r"bad.jsonl:1: expected a JSON object, got an array"),
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


# -- hardening: every expected failure is one line, exit status 1 -------------------------


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


def save_model(path: Path, estimator: Any, labels: Sequence[Any]) -> Path:
    """Fit ``estimator`` on TRAIN_X with ``labels`` through the public API and save it."""

    async def save() -> None:
        clf = await AsyncClassifier(estimator).fit(TRAIN_X, list(labels))
        await clf.save(path)

    anyio.run(save)
    return path


@pytest.fixture(scope="module")
def keyword_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A KeywordClassifier model (it raises for a text containing 'BOOM')."""
    return save_model(tmp_path_factory.mktemp("kw") / "kw.skops", KeywordClassifier(), TRAIN_Y)


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


@pytest.mark.parametrize("case", ["missing directory", "a directory", "under a file", "the data"])
def test_train_checks_the_output_before_training(
    small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str, case: str
) -> None:
    """train refuses an unwritable -o in one line before reading or training anything."""
    target = {
        "missing directory": tmp_path / "missing" / "m.skops",
        "a directory": tmp_path,
        "under a file": small / "m.skops",
        "the data": small,
    }[case]
    before = small.read_bytes()
    status, out, err = run(["--backend", backend, "train", str(small), "-o", str(target)], capsys)
    assert (status, out) == (1, "")
    assert one_error(err).startswith(f"{target}: ")
    assert small.read_bytes() == before


def test_train_names_missing_data_even_when_the_model_exists(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing DATA is one line naming it, also when -o names an existing model."""
    before = model.read_bytes()
    missing = tmp_path / "missing.jsonl"
    status, out, err = run(["train", str(missing), "-o", str(model)], capsys)
    assert (status, out) == (1, "")
    assert one_error(err) == f"{missing}: cannot open: No such file or directory"
    assert model.read_bytes() == before


@pytest.mark.parametrize(
    "error",
    [OSError(errno.ENOSPC, "No space left"), PersistenceError("No space left.")],
    ids=["OSError", "PersistenceError"],
)
def test_train_reports_a_refused_model_write_in_one_line(
    small: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    error: Exception,
) -> None:
    """A save the disk refuses (raw OSError or PersistenceError) is one line naming -o."""

    async def refuse(self: AsyncClassifier, path: object) -> str:
        raise error

    monkeypatch.setattr(AsyncClassifier, "save", refuse)
    target = tmp_path / "m.skops"
    status, _, err = run(
        ["--backend", backend, "train", str(small), "-o", str(target), "--holdout", "0"], capsys
    )
    assert status == 1
    message = one_error(err)
    assert message.startswith(f"{target}: ")
    assert "No space left" in message


def test_train_prints_the_sha256_that_classify_can_pin(
    small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """train prints the model file's SHA-256; classify --sha256 accepts it, any case."""
    target = tmp_path / "m.skops"
    status, out, _ = run(
        ["--backend", backend, "train", str(small), "-o", str(target), "--holdout", "0"], capsys
    )
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    assert status == 0
    assert out.splitlines()[-1].endswith(f"model saved to {target} (sha256 {digest})")
    source = tmp_path / "in.txt"
    source.write_text("free prize\n", encoding="utf-8")
    for pinned in (digest, digest.upper()):
        status, out, _ = run(
            ["--backend", backend, "classify", str(target), "--sha256", pinned, str(source)],
            capsys,
        )
        assert status == 0
        assert len(records(out)) == 1


def test_classify_refuses_a_model_whose_sha256_differs(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """--sha256 with another digest refuses the model in one line; a malformed one is usage."""
    source = tmp_path / "in.txt"
    source.write_text("free prize\n", encoding="utf-8")
    other = hashlib.sha256(b"another file").hexdigest()
    for command in (["classify", str(model)], ["rank", str(model), "--label", "spam"]):
        status, out, err = run(
            ["--backend", backend, *command, "--sha256", other, str(source)], capsys
        )
        assert (status, out) == (1, "")
        assert one_error(err).startswith(f"{model}: ")
    with pytest.raises(SystemExit) as usage:
        main(["eval", str(model), str(source), "--sha256", "abc"])
    assert usage.value.code == 2
    assert "argument --sha256: must be 64 hexadecimal digits" in capsys.readouterr().err


def test_bad_models_give_one_line_naming_the_file(
    small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """A directory, a data file, a skops file of something else or a bad zip as MODEL."""
    import skops.io

    skops_dict = tmp_path / "dict.skops"
    skops.io.dump({"header": "not asyncclf"}, skops_dict)
    bad_zip = tmp_path / "bad.skops"
    with zipfile.ZipFile(bad_zip, "w") as archive:
        archive.writestr("schema.json", "[]")
    source = tmp_path / "in.txt"
    source.write_text("hello\n", encoding="utf-8")
    for path in (tmp_path, small, skops_dict, bad_zip):
        status, out, err = run(["--backend", backend, "classify", str(path), str(source)], capsys)
        assert (status, out) == (1, "")
        assert one_error(err).startswith(f"{path}: ")


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


@pytest.mark.parametrize("bad", ["NAN", "INF"])
def test_non_finite_scores_never_reach_the_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str, bad: str
) -> None:
    """A NaN or infinite score is one line naming the text; stdout stays strict JSON."""
    path = save_model(tmp_path / "nan.skops", NonFiniteClassifier(), TRAIN_Y)
    source = tmp_path / "in.txt"
    source.write_text(f"spam spam\nham {bad}\neggs\n", encoding="utf-8")
    trusted = ["--trusted", "tests.test_cli.NonFiniteClassifier", str(path)]
    status, out, err = run(["--backend", backend, "classify", *trusted, str(source)], capsys)
    assert status == 1
    assert one_error(err).startswith(f"{source}:2: ")
    assert [r["index"] for r in records(out)] == [0]
    status, out, err = run(
        ["--backend", backend, "rank", *trusted, "--label", "ham", str(source)], capsys
    )
    assert (status, out) == (1, "")
    assert one_error(err).startswith(f"{source}: ")


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


@pytest.mark.parametrize(
    ("content", "texts"),
    [
        (b"\xef\xbb\xbfwin a prize\r\nsee\ryou\n\nlast", ["win a prize", "see\ryou", "last"]),
        (("x" + "\u00e9" * 40_000 + "\nend\n").encode(), ["x" + "\u00e9" * 40_000, "end"]),
    ],
    ids=["bom-crlf-cr-blank", "line-longer-than-a-chunk"],
)
def test_plain_input_is_split_on_newlines_only(
    model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    backend: str,
    content: bytes,
    texts: list[str],
) -> None:
    """A leading BOM is dropped, \\r\\n and \\n end lines, a lone \\r stays, blanks go."""
    source = tmp_path / "in.txt"
    source.write_bytes(content)
    status, out, _ = run(
        ["--backend", backend, "classify", str(model), "--with-text", str(source)], capsys
    )
    assert status == 0
    assert [(r["index"], r["text"]) for r in records(out)] == list(enumerate(texts))


def test_jsonl_input_skips_blank_lines(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """classify and rank --jsonl skip blank lines, and still name the right line."""
    source = tmp_path / "in.jsonl"
    source.write_bytes(b'\xef\xbb\xbf{"t": "free prize"}\n\n \t\r\n{"t": "hi mum"}\r\n\n')
    common = ["--jsonl", "--text-field", "t", str(source)]
    status, out, _ = run(
        ["--backend", backend, "classify", str(model), "--with-text", *common], capsys
    )
    assert status == 0
    assert [(r["index"], r["text"]) for r in records(out)] == [(0, "free prize"), (1, "hi mum")]
    status, out, _ = run(
        ["--backend", backend, "rank", str(model), "--label", "spam", *common], capsys
    )
    assert status == 0
    assert [r["text"] for r in records(out)] == ["free prize", "hi mum"]
    with source.open("ab") as more:
        more.write(b"{oops\n")
    status, _, err = run(["--backend", backend, "classify", str(model), *common], capsys)
    assert status == 1
    assert one_error(err).startswith(f"{source}:6: invalid JSON")


@pytest.mark.parametrize(
    ("content", "line"),
    [(b"ok\nok\ncaf\xe9\nok\n", 3), (b"ok ok ok\n" * 20_000 + b"\xff\n", 20_001)],
    ids=["small", "after-many-chunks"],
)
def test_invalid_utf8_is_reported_on_its_own_line(
    model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    backend: str,
    content: bytes,
    line: int,
) -> None:
    """A byte that is not UTF-8 is reported on the line it is on, not its chunk's first."""
    source = tmp_path / "in.txt"
    source.write_bytes(content)
    status, _, err = run(["--backend", backend, "classify", str(model), str(source)], capsys)
    assert status == 1
    assert one_error(err).startswith(f"{source}:{line}: not valid UTF-8")


def test_invalid_utf8_on_stdin_is_reported_on_its_line(
    model: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Standard input is read as bytes too, so a bad byte is one line naming its line."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"ok\n\xff\n")))
    status, _, err = run(["classify", str(model)], capsys)
    assert status == 1
    assert one_error(err).startswith("<stdin>:2: not valid UTF-8")


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


@pytest.mark.parametrize("command", ["classify", "rank", "eval"])
def test_a_model_without_scores_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str, command: str
) -> None:
    """A model with neither predict_proba nor decision_function is one line naming it."""
    from .fakes import LabelOnlyClassifier

    path = save_model(tmp_path / "labels.skops", LabelOnlyClassifier(), TRAIN_Y)
    source = tmp_path / "in.jsonl"
    source.write_text('{"text": "spam", "label": "spam"}\n', encoding="utf-8")
    label = ["--label", "spam"] if command == "rank" else []
    args = [command, "--trusted", "tests.fakes.LabelOnlyClassifier", str(path), *label]
    status, out, err = run(["--backend", backend, *args, str(source)], capsys)
    assert (status, out) == (1, "")
    assert one_error(err).startswith(f"{path}: ")


def test_warnings_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model saved by another scikit-learn loads with one 'asyncclf: warning:' line."""
    import sklearn

    monkeypatch.setattr(sklearn, "__version__", "0.1.0")
    path = save_model(tmp_path / "old.skops", KeywordClassifier(), TRAIN_Y)
    monkeypatch.undo()
    source = tmp_path / "in.txt"
    source.write_text("spam\n", encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        status, out, err = run(["classify", "--trusted", KEYWORD, str(path), str(source)], capsys)
    assert status == 0
    assert [r["label"] for r in records(out)] == ["spam"]
    assert len(err.splitlines()) == 1
    assert err.startswith("asyncclf: warning: ")
    assert "0.1.0" in err


# -- where the model runs: --executor and --workers --------------------------------------


class Recorded(AsyncClassifier[Any]):
    """An AsyncClassifier that records every instance made, to see its executor."""

    made: ClassVar[list[AsyncClassifier[Any]]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        Recorded.made.append(self)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[AsyncClassifier[Any]]:
    """The classifiers the command line makes from now on (train two, the others one)."""
    import asyncclf._cli

    monkeypatch.setattr(Recorded, "made", [])
    monkeypatch.setattr(asyncclf._cli, "AsyncClassifier", Recorded)
    return Recorded.made


def run_all(
    backend: str,
    options: list[str],
    small: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> dict[str, str]:
    """Run train, classify, rank and eval with ``options``; return what each printed."""
    target = tmp_path / "model.skops"
    source = tmp_path / "in.txt"
    texts = [json.loads(line)["text"] for line in small.read_text("utf-8").splitlines()]
    source.write_text("\n".join(texts[:40]) + "\n", encoding="utf-8")
    commands = {
        "train": ["train", str(small), "-o", str(target)],
        "classify": ["classify", str(target), str(source)],
        "rank": ["rank", str(target), "--label", "spam", "-k", "5", str(source)],
        "eval": ["eval", str(target), str(small)],
    }
    outputs = {}
    for name, command in commands.items():
        status, out, err = run(["--backend", backend, *command, *options], capsys)
        assert (status, err) == (0, ""), name
        outputs[name] = re.sub(r"\(sha256 [0-9a-f]{64}\)", "(sha256 HEX)", out)
    return outputs


def test_processes_answer_as_threads_do(
    small: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    recorded: list[AsyncClassifier[Any]],
    backend: str,
) -> None:
    """train, classify, rank and eval print the same with --executor processes as threads."""
    threads = run_all(backend, [], small, tmp_path, capsys)
    assert [clf.executor for clf in recorded] == ["threads"] * 5
    recorded.clear()
    in_workers: list[object] = []
    run_sync = anyio.to_process.run_sync

    async def counted(func: Any, *args: Any, **kwargs: Any) -> Any:
        in_workers.append(func)
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_process, "run_sync", counted)
    options = ["--executor", "processes", "--workers", "2"]
    processes = run_all(backend, options, small, tmp_path, capsys)
    assert processes == threads
    assert len(threads["classify"].splitlines()) == 40
    assert len(recorded) == 5  # train's held-out and final models, then one a command
    executors = [clf.executor for clf in recorded]
    assert all(isinstance(executor, ProcessExecutor) for executor in executors)
    assert [executor.max_workers for executor in executors] == [2] * 5  # type: ignore[union-attr]
    assert executors[0] is executors[1]  # train's two models share the workers
    assert in_workers  # the estimator ran in worker processes


def test_workers_sizes_the_thread_limiter(
    small: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    recorded: list[AsyncClassifier[Any]],
    backend: str,
) -> None:
    """With threads, --workers N gives train's two models and classify one N-token limiter."""
    target = tmp_path / "m.skops"
    status, _, err = run(
        ["--backend", backend, "train", str(small), "-o", str(target), "--workers", "3"], capsys
    )
    assert (status, err) == (0, "")
    status, out, _ = run(
        ["--backend", backend, "classify", str(target), "--workers", "1", str(small)], capsys
    )
    assert status == 0
    assert len(out.splitlines()) == 300
    limiters = [clf.limiter for clf in recorded]
    assert [clf.executor for clf in recorded] == ["threads"] * 3
    assert [None if lim is None else lim.total_tokens for lim in limiters] == [3, 3, 1]
    assert limiters[0] is limiters[1]


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


@pytest.mark.parametrize("missing", ["asyncclf.DaskExecutor", "distributed"])
def test_dask_missing_gives_one_line_saying_what_to_install(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    missing: str,
) -> None:
    """dask:// without DaskExecutor or distributed exits 1 in one line naming the extra."""
    import importlib.util

    import asyncclf

    if missing == "asyncclf.DaskExecutor":
        monkeypatch.delattr(asyncclf, "DaskExecutor", raising=False)
    else:
        find_spec = importlib.util.find_spec

        def without_distributed(name: str, package: str | None = None) -> Any:
            return None if name == "distributed" else find_spec(name, package)

        monkeypatch.setattr(asyncclf, "DaskExecutor", object, raising=False)
        monkeypatch.setattr(importlib.util, "find_spec", without_distributed)
    model = str(tmp_path / "missing.skops")  # refused before any file is read
    status, out, err = run(
        ["--backend", backend, "classify", model, "--executor", "dask://127.0.0.1:8786"], capsys
    )
    assert (status, out) == (1, "")
    assert one_error(err) == (
        "--executor dask://HOST:PORT needs Dask support, which is not installed: "
        "pip install 'asyncclf[dask]'"
    )


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
        timeout=120,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == expected


def test_dask_answers_as_threads_do(
    small: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    recorded: list[AsyncClassifier[Any]],
    backend: str,
) -> None:
    """train, classify, rank and eval print the same with --executor dask://HOST:PORT."""
    import asyncclf

    distributed = pytest.importorskip("distributed")
    dask_executor = getattr(asyncclf, "DaskExecutor", None)
    if dask_executor is None:
        pytest.skip("this asyncclf has no DaskExecutor")
    threads = run_all(backend, [], small, tmp_path, capsys)
    recorded.clear()
    with distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as cluster:
        address = cluster.scheduler_address.replace("tcp://", "dask://")
        on_dask = run_all(backend, ["--executor", address], small, tmp_path, capsys)
    assert on_dask == threads
    executors = [clf.executor for clf in recorded]
    assert len(executors) == 5
    assert all(isinstance(executor, dask_executor) for executor in executors)
    assert {getattr(executor, "address", None) for executor in executors} == {
        cluster.scheduler_address
    }
    assert executors[0] is executors[1]  # train's two models share one client


# -- learn: online learning from a labelled stream ----------------------------------------

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
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """learn - reads the examples from stdin, with named fields."""
    rows = [{"t": row["text"], "y": row["label"]} for row in labelled(30)]
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(json.dumps(r) + "\n" for r in rows)))
    target = tmp_path / "online.skops"
    args = ["learn", "-", "-o", str(target), "--classes", "ham", "spam"]
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


def test_on_error_skip_warns_of_each_bad_line_and_counts_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str
) -> None:
    """--on-error skip learns from the good lines, one warning per bad line, counted."""
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
    status, out, err = run(["--backend", backend, *args, "--on-error", "skip"], capsys)
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
    status, out, err = run([*args, "--on-error", "skip"], capsys)
    assert status == 1
    assert err.splitlines()[-1] == f"asyncclf: {data}: no examples to learn from (2 lines skipped)"
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    status, out, err = run(["learn", str(empty), "-o", str(target), "--classes", "a", "b"], capsys)
    assert (status, out) == (1, "")
    assert one_error(err) == f"{empty}: no examples to learn from"
    assert not target.exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ([], "argument --classes: needed without --from: name every label DATA holds"),
        (["--classes", "spam"], "argument --classes: names one class"),
        (["--classes", "a", "b", "--sha256", "0" * 64], "argument --sha256: only with --from"),
        (["--classes", "a", "b", "--executor", "processes"], "argument --executor: learn runs"),
        (["--classes", "a", "b", "--batch-size", "0"], "argument --batch-size: must be an"),
        (["--classes", "a", "b", "--on-error", "yield"], "argument --on-error: invalid choice"),
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


# -- input: gzip, --where, blank lines ------------------------------------------------------

HEX = re.compile(r"sha256 [0-9a-f]{64}|\d+ examples/s")


def command_args(command: str, model: Path, data: str, tmp_path: Path) -> list[str]:
    """The arguments running ``command`` on the labelled JSON Lines ``data``."""
    return {
        "train": ["train", data, "-o", str(tmp_path / "m.skops"), "--holdout", "0"],
        "learn": ["learn", data, "-o", str(tmp_path / "o.skops"), "--classes", "ham", "spam"],
        "classify": ["classify", str(model), "--jsonl", "--with-text", data],
        "rank": ["rank", str(model), "--label", "spam", "-k", "1000", "--jsonl", data],
        "eval": ["eval", str(model), data],
    }[command]


ALL_COMMANDS = ["train", "learn", "classify", "rank", "eval"]


@pytest.mark.parametrize("command", ALL_COMMANDS)
@pytest.mark.parametrize("how", ["suffix", "magic", "stdin"])
def test_gzip_input_is_read_as_the_plain_file(
    model: Path,
    small: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    backend: str,
    command: str,
    how: str,
) -> None:
    """Input starting with gzip's magic bytes is decompressed, by any name and on stdin."""
    status, expected, err = run(
        ["--backend", backend, *command_args(command, model, str(small), tmp_path)], capsys
    )
    assert (status, err) == (0, "")
    packed = gzip.compress(small.read_bytes())
    data = tmp_path / ("data.jsonl.gz" if how == "suffix" else "data.bin")
    data.write_bytes(packed)
    name = str(data)
    if how == "stdin":
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(packed)))
        name = "-"
    status, out, err = run(
        ["--backend", backend, *command_args(command, model, name, tmp_path)], capsys
    )
    assert (status, err) == (0, "")
    shown = "<stdin>" if how == "stdin" else str(data)
    assert HEX.sub("", out).replace(shown, "DATA") == HEX.sub("", expected).replace(
        str(small), "DATA"
    )
    assert out.strip()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (gzip.compress(b"ok\n" * 3)[:-12], r"{}:\d+: corrupt gzip data \(EOFError: "),
        (gzip.compress(b"ok\nok\ncaf\xe9\n"), r"{}:3: not valid UTF-8"),
        (b"\x1f\x8b\x08garbage\n", r"{}:1: corrupt gzip data \("),
    ],
    ids=["truncated", "not-utf8-inside", "bad-header"],
)
def test_bad_gzip_input_gives_one_line_naming_file_and_line(
    model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes,
    message: str,
) -> None:
    """A truncated or corrupt gzip file, or bad UTF-8 inside one, is one line with the file."""
    data = tmp_path / "in.gz"
    data.write_bytes(content)
    status, _, err = run(["classify", str(model), str(data)], capsys)
    assert status == 1
    assert re.match(message.format(re.escape(str(data))), one_error(err))


WHERE_ROWS: list[dict[str, Any]] = [
    {"text": "free prize now", "label": "spam", "split": "train", "fold": 1},
    {"text": "see you at lunch", "label": "ham", "split": "train", "fold": 2},
    {"text": "win cash today", "label": "spam", "split": "test", "fold": 1},
    {"text": "running late", "label": "ham", "split": "train", "fold": 1},
    {"text": "no split field", "label": "ham"},
    {"text": "unlabelled test text", "split": "test", "fold": 2},
    {"text": "love you mum", "label": "ham", "split": "train", "fold": True},
    {"text": "claim your reward", "label": "spam", "split": "train", "fold": 2},
]


@pytest.mark.parametrize(
    ("where", "kept"),
    [
        (["split=train"], [0, 1, 3, 6, 7]),
        (["split=train", "fold=1"], [0, 3]),
        (["fold=2"], [1, 5, 7]),
        (["fold=true"], [6]),
        (["split=nope"], []),
    ],
    ids=["one", "two", "integer", "boolean", "none"],
)
def test_where_keeps_only_records_matching_every_condition(
    model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    backend: str,
    where: list[str],
    kept: list[int],
) -> None:
    """--where keeps the records whose fields spell every VALUE; a missing field is no match."""
    data = write_jsonl(tmp_path / "d.jsonl", WHERE_ROWS)
    conditions = [arg for condition in where for arg in ("--where", condition)]
    command = ["classify", str(model), "--jsonl", "--with-text", str(data), *conditions]
    status, out, err = run(["--backend", backend, *command], capsys)
    assert (status, err) == (0, "")
    assert [r["text"] for r in records(out)] == [WHERE_ROWS[i]["text"] for i in kept]
    assert [r["index"] for r in records(out)] == list(range(len(kept)))


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_where_filters_before_fields_are_checked_in_every_command(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """Every command reads only the --where records; others may lack the label."""
    data = write_jsonl(tmp_path / "d.jsonl", WHERE_ROWS)
    args = command_args(command, model, str(data), tmp_path)
    status, out, err = run([*args, "--where", "split=train"], capsys)
    assert (status, err) == (0, "")
    expected = {
        "train": f"read 5 examples from {data} where split=train, 2 classes:",
        "learn": "learned from 5 examples (0 skipped)",
        "eval": "examples: 5",
    }
    if command in expected:
        assert expected[command] in out
    else:
        texts = {WHERE_ROWS[i]["text"] for i in (0, 1, 3, 6, 7)}
        assert {r["text"] for r in records(out)} == texts


@pytest.mark.parametrize("command", ["train", "learn", "eval"])
def test_where_matching_nothing_says_so(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """A --where no record matches is a one-line error counting the records left out."""
    data = write_jsonl(tmp_path / "d.jsonl", WHERE_ROWS)
    args = command_args(command, model, str(data), tmp_path)
    status, _, err = run([*args, "--where", "split=tset"], capsys)
    assert status == 1
    assert one_error(err).endswith(
        "no examples (8 records not matching --where split=tset)"
        if command != "learn"
        else "no examples to learn from (8 records not matching --where split=tset)"
    )


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


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_blank_lines_are_skipped_and_counted_by_every_command(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str, command: str
) -> None:
    """Every command skips blank lines and ends with one stderr note counting them."""
    rows = [row for row in WHERE_ROWS if "label" in row]
    lines: list[dict[str, Any] | str] = [rows[0], "", rows[1], rows[2], " \t", *rows[3:], ""]
    data = write_jsonl(tmp_path / "d.jsonl.gz", lines)
    data.write_bytes(gzip.compress(data.read_bytes()))
    args = command_args(command, model, str(data), tmp_path)
    status, out, err = run(["--backend", backend, *args], capsys)
    assert status == 0
    assert err == f"asyncclf: note: {data}: skipped 3 blank lines (the first is line 2)\n"
    expected = {
        "train": f"read {len(rows)} examples from {data}, 2 classes:",
        "learn": f"learned from {len(rows)} examples (0 skipped)",
        "eval": f"examples: {len(rows)}",
    }
    if command in expected:
        assert expected[command] in out
    else:
        assert sorted(r["text"] for r in records(out)) == sorted(row["text"] for row in rows)


def test_no_blank_line_note_without_blank_lines(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without blank lines nothing is printed on stderr: the note only counts what was skipped."""
    data = write_jsonl(tmp_path / "d.txt", ["free prize", "hi mum"])
    status, out, err = run(["classify", str(model), str(data)], capsys)
    assert (status, err) == (0, "")
    assert len(records(out)) == 2


def test_other_whitespace_is_text_not_a_blank_line(
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only spaces and tabs make a line blank: a no-break space, a form feed or an
    ideographic space is a text, classified as the library classifies it."""
    data = tmp_path / "d.txt"
    data.write_text("free prize\n\u00a0\n\x0c\n\u3000\n \t\nhi mum\n", encoding="utf-8")
    status, out, err = run(["classify", str(model), str(data)], capsys)
    assert status == 0
    assert [r["index"] for r in records(out)] == [0, 1, 2, 3, 4]  # five texts classified
    assert err == f"asyncclf: note: {data}: skipped 1 blank line (the first is line 5)\n"
