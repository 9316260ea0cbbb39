"""The command's input: lines, UTF-8, gzip, --where and blank lines, in every command."""

from __future__ import annotations

import gzip
import io
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from .conftest import ALL_COMMANDS, command_args, one_error, records, run, write_jsonl


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


HEX = re.compile(r"sha256 [0-9a-f]{64}|\d+ examples/s")


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
    model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str, command: str
) -> None:
    """Every command reads only the --where records; others may lack the label."""
    data = write_jsonl(tmp_path / "d.jsonl", WHERE_ROWS)
    args = command_args(command, model, str(data), tmp_path)
    status, out, err = run(["--backend", backend, *args, "--where", "split=train"], capsys)
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
