"""Model files on the command line: -o checked first, --sha256, --trusted, bad models."""

from __future__ import annotations

import errno
import hashlib
import json
import warnings
import zipfile
from pathlib import Path

import anyio
import pytest

from asyncclf import AsyncClassifier, PersistenceError
from asyncclf._cli import main

from ..fakes import TRAIN_X, TRAIN_Y, KeywordClassifier
from .conftest import KEYWORD, one_error, records, run, save_model


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


def test_trusted_types_can_be_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A model holding a non-sklearn type loads only with --trusted naming it."""

    from asyncclf import AsyncClassifier

    from ..fakes import TRAIN_Y, KeywordClassifier

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


@pytest.mark.parametrize("command", ["classify", "rank", "eval"])
def test_a_model_without_scores_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str, command: str
) -> None:
    """A model with neither predict_proba nor decision_function is one line naming it."""
    from ..fakes import LabelOnlyClassifier

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
