"""The ``asyncclf`` command line, built on the public API.

Every command streams its input in bounded memory except ``train`` (a fit needs all
the data). Problems with the input or the model end the command with one line on
stderr naming the file and line, and exit status 1; no traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import AbstractContextManager, aclosing, nullcontext
from typing import IO, Any, TextIO

import anyio
import anyio.to_thread

from ._classifier import AsyncClassifier
from ._errors import AsyncClfError

__all__ = ["main"]

_READ_CHUNK = 1 << 16
"""Bytes of input read per worker-thread call."""


class CommandError(Exception):
    """An error to print as one line and exit with status 1."""


# -- input -------------------------------------------------------------------------------


def _open_input(path: str) -> tuple[str, TextIO]:
    if path == "-":
        return "<stdin>", sys.stdin
    try:
        return path, open(path, encoding="utf-8")
    except OSError as exc:
        msg = f"{path}: cannot open: {exc.strerror or exc}"
        raise CommandError(msg) from exc


async def _lines(path: str) -> AsyncIterator[tuple[str, int, str]]:
    """Yield ``(name, line number, line)`` without its newline, reading off the loop."""
    name, file = _open_input(path)
    limiter = anyio.CapacityLimiter(1)
    lineno = 0
    try:
        while True:
            try:
                chunk = await anyio.to_thread.run_sync(file.readlines, _READ_CHUNK, limiter=limiter)
            except (OSError, UnicodeDecodeError) as exc:
                msg = f"{name}:{lineno + 1}: cannot read: {exc}"
                raise CommandError(msg) from exc
            if not chunk:
                return
            for line in chunk:
                lineno += 1
                yield name, lineno, line.rstrip("\r\n")
    finally:
        if file is not sys.stdin:
            file.close()


def _field(record: dict[str, Any], field: str, name: str, lineno: int, kind: str) -> Any:
    if field not in record:
        msg = f"{name}:{lineno}: no {field!r} field (use --{kind}-field to name another)"
        raise CommandError(msg)
    value = record[field]
    if kind == "text" and not isinstance(value, str):
        msg = f"{name}:{lineno}: field {field!r} is {type(value).__name__}, not a string"
        raise CommandError(msg)
    if kind == "label" and not isinstance(value, (str, int, bool)):
        msg = f"{name}:{lineno}: field {field!r} is {type(value).__name__}, not a label"
        raise CommandError(msg)
    return value


def _record(line: str, name: str, lineno: int) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        msg = f"{name}:{lineno}: invalid JSON ({exc.msg} at column {exc.colno})"
        raise CommandError(msg) from None
    if not isinstance(record, dict):
        msg = f"{name}:{lineno}: expected a JSON object, got {type(record).__name__}"
        raise CommandError(msg)
    return record


async def _texts(path: str, jsonl: bool, text_field: str) -> AsyncGenerator[str, None]:
    async for name, lineno, line in _lines(path):
        if jsonl:
            yield _field(_record(line, name, lineno), text_field, name, lineno, "text")
        else:
            yield line


async def _examples(path: str, text_field: str, label_field: str) -> AsyncIterator[tuple[str, Any]]:
    async for name, lineno, line in _lines(path):
        if not line.strip():
            continue
        record = _record(line, name, lineno)
        yield (
            _field(record, text_field, name, lineno, "text"),
            _field(record, label_field, name, lineno, "label"),
        )


# -- progress and output ---------------------------------------------------------------


def _progress(description: str, total: int | None = None) -> AbstractContextManager[Any]:
    """A tqdm bar on stderr when it is a terminal and tqdm is installed; else nothing."""
    if not sys.stderr.isatty() or importlib.util.find_spec("tqdm") is None:
        return nullcontext(None)
    from tqdm.auto import tqdm

    return tqdm(desc=description, total=total, unit=" texts", file=sys.stderr)  # type: ignore[no-any-return]


def _emit(out: IO[str], record: dict[str, Any]) -> None:
    out.write(json.dumps(record, ensure_ascii=False) + "\n")


async def _load(path: str, trusted: Sequence[str]) -> AsyncClassifier:
    return await AsyncClassifier.load(path, trusted=trusted)


# -- commands --------------------------------------------------------------------------


async def _train(args: argparse.Namespace, out: Callable[[str], object]) -> None:
    texts: list[str] = []
    labels: list[Any] = []
    async for text, label in _examples(args.data, args.text_field, args.label_field):
        texts.append(text)
        labels.append(label)
    counts: dict[Any, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    source = "<stdin>" if args.data == "-" else args.data
    out(f"read {len(texts)} examples from {source}, {len(counts)} classes:")
    for label, count in sorted(counts.items(), key=lambda item: str(item[0])):
        out(f"  {label}: {count}")
    if args.holdout > 0:
        order = list(range(len(texts)))
        random.Random(args.seed).shuffle(order)
        cut = round(len(order) * (1 - args.holdout))
        train, test = order[:cut], order[cut:]
        if test and len({labels[i] for i in train}) >= 2:
            held = await AsyncClassifier().fit(
                [texts[i] for i in train], [labels[i] for i in train]
            )
            accuracy = await held.score([texts[i] for i in test], [labels[i] for i in test])
            out(
                f"held-out accuracy: {accuracy:.4f} ({len(test)} examples, "
                f"{args.holdout:.0%} held out, seed {args.seed})"
            )
    clf = await AsyncClassifier().fit(texts, labels)
    await clf.save(args.output)
    out(f"trained on all {len(texts)} examples; model saved to {args.output}")


async def _classify(args: argparse.Namespace, stdout: IO[str]) -> None:
    clf = await _load(args.model, args.trusted)
    lines = _texts(args.input, args.jsonl, args.text_field)
    with _progress("classify") as bar:
        async with aclosing(lines), clf.stream(lines) as results:
            async for p in results:
                record = {"index": p.index, "label": p.label, "score": p.score}
                if args.with_text:
                    record["text"] = p.text
                _emit(stdout, record)
                if bar is not None:
                    bar.update()


async def _rank(args: argparse.Namespace, stdout: IO[str]) -> None:
    clf = await _load(args.model, args.trusted)
    async with aclosing(_texts(args.input, args.jsonl, args.text_field)) as lines:
        best = await clf.top_k(lines, args.label, args.k)
    for ranked in best:
        _emit(stdout, {"index": ranked.index, "score": ranked.score, "text": ranked.text})


async def _eval(args: argparse.Namespace, out: Callable[[str], object]) -> None:
    from sklearn.metrics import accuracy_score, classification_report, f1_score

    clf = await _load(args.model, args.trusted)
    truth: list[Any] = []

    async def texts() -> AsyncGenerator[str, None]:
        async for text, label in _examples(args.data, args.text_field, args.label_field):
            truth.append(label)
            yield text

    predicted: list[Any] = []
    with _progress("eval") as bar:
        async with aclosing(texts()) as source, clf.stream(source) as results:
            async for p in results:
                predicted.append(p.label)
                if bar is not None:
                    bar.update()
    if not truth:
        msg = f"{args.data}: no examples"
        raise CommandError(msg)
    out(f"examples: {len(truth)}")
    out(f"accuracy: {accuracy_score(truth, predicted):.4f}")
    out(f"macro-F1: {f1_score(truth, predicted, average='macro'):.4f}")
    out(classification_report(truth, predicted, digits=4, zero_division=0).rstrip())


# -- parser ----------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="asyncclf", description="Async text classification with scikit-learn."
    )
    parser.add_argument("--version", action="version", version=f"asyncclf {__version__}")
    parser.add_argument(
        "--backend", choices=["asyncio", "trio"], default="asyncio", help="event loop to run on"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def fields(command: argparse.ArgumentParser, label: bool) -> None:
        command.add_argument("--text-field", default="text", help="JSON field of the text")
        if label:
            command.add_argument("--label-field", default="label", help="JSON field of the label")

    def model(command: argparse.ArgumentParser) -> None:
        command.add_argument("model", metavar="MODEL", help="a model file saved by train")
        command.add_argument(
            "--trusted",
            action="append",
            default=[],
            metavar="TYPE",
            help="a type to trust in MODEL, repeatable (only for files from a trusted source)",
        )

    def texts(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "input", nargs="?", default="-", metavar="INPUT", help="one text per line; - is stdin"
        )
        command.add_argument(
            "--jsonl", action="store_true", help="INPUT is JSON Lines with a text field"
        )
        fields(command, label=False)

    train = commands.add_parser("train", help="train the default classifier on JSON Lines")
    train.add_argument("data", metavar="DATA", help="JSON Lines with text and label; - is stdin")
    train.add_argument("-o", "--output", required=True, metavar="MODEL", help="model file")
    train.add_argument(
        "--holdout", type=float, default=0.2, help="fraction held out to report accuracy"
    )
    train.add_argument("--seed", type=int, default=0, help="seed of the held-out split")
    fields(train, label=True)

    classify = commands.add_parser("classify", help="label each input line (JSON Lines out)")
    model(classify)
    texts(classify)
    classify.add_argument("--with-text", action="store_true", help="include the text")

    rank = commands.add_parser("rank", help="the k texts most likely to have a label")
    model(rank)
    rank.add_argument("--label", required=True, help="the label to rank by")
    rank.add_argument("-k", type=int, default=10, help="how many texts to keep (default 10)")
    texts(rank)

    evaluate = commands.add_parser("eval", help="accuracy, macro-F1 and a per-class report")
    model(evaluate)
    evaluate.add_argument("data", metavar="DATA", help="JSON Lines with text and label")
    fields(evaluate, label=True)

    commands.add_parser(
        "demo", help="train on the bundled SMS corpus, then classify and rank concurrently"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    # argparse gives an optional positional (INPUT) its value only right after MODEL;
    # accept it after the options too, as in "rank MODEL --label L -k 5 INPUT".
    if extra and getattr(args, "input", None) == "-" and len(extra) == 1:
        args.input = extra.pop()
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.backend == "trio" and importlib.util.find_spec("trio") is None:
        print("asyncclf: trio is not installed; 'pip install trio' first.", file=sys.stderr)
        return 1
    if args.command == "rank" and args.k < 0:
        print("asyncclf: -k must be >= 0", file=sys.stderr)
        return 2
    if args.command == "train" and not 0 <= args.holdout < 1:
        print("asyncclf: --holdout must be in [0, 1)", file=sys.stderr)
        return 2

    async def run() -> None:
        if args.command == "demo":
            from ._demo import run_demo

            await run_demo()
        elif args.command == "train":
            await _train(args, print)
        elif args.command == "classify":
            await _classify(args, sys.stdout)
        elif args.command == "rank":
            await _rank(args, sys.stdout)
        else:
            await _eval(args, print)

    try:
        anyio.run(run, backend=args.backend)
    except (CommandError, AsyncClfError) as exc:
        print(f"asyncclf: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. piped into head
        return 0
    except KeyboardInterrupt:
        print("asyncclf: interrupted", file=sys.stderr)
        return 130
    return 0
