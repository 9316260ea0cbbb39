"""The ``asyncclf`` command line, built on the public API.

Every command streams its input in bounded memory except ``train`` (a fit needs all
the data). Problems with the input, the model or the output end the command with one
line on stderr, ``asyncclf: FILE[:LINE]: what went wrong``, and exit status 1; no
traceback. Usage errors exit with status 2, as argparse does.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import random
import re
import sys
import tempfile
import urllib.parse
import warnings
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    aclosing,
    asynccontextmanager,
)
from typing import Any

import anyio
import anyio.to_thread

from ._classifier import AsyncClassifier
from ._cli_io import (
    CommandError,
    Output,
    Reading,
    about,
    answer,
    check_score,
    display_name,
    failure,
    label_kind,
    progress_bar,
    read_examples,
    read_texts,
)
from ._errors import AsyncClfError, PersistenceError
from ._executors.processes import ProcessExecutor
from ._model import final_step, online_estimator
from ._types import LearnReport
from ._version import __version__

__all__ = ["main"]

Placement = dict[str, Any]
"""The ``executor=`` and ``limiter=`` arguments of every classifier a command makes."""

_DASK = "tcp://"
"""How ``--executor dask://HOST:PORT`` is stored: as the scheduler's address."""


def _placement(
    executor: str, workers: int | None
) -> Callable[[], AbstractAsyncContextManager[Placement]]:
    """Return what makes a command's executor, in the event loop (limiters need one).

    Dask support is looked up now, before any work: it is optional (``asyncclf[dask]``).
    """

    @asynccontextmanager
    async def local() -> AsyncIterator[Placement]:
        if executor == "processes":
            yield {"executor": ProcessExecutor(max_workers=workers)}
        else:
            yield {"limiter": None if workers is None else anyio.CapacityLimiter(workers)}

    if executor in ("threads", "processes"):
        return local
    import asyncclf  # at run time: DaskExecutor is optional

    dask_executor = getattr(asyncclf, "DaskExecutor", None)
    if dask_executor is None or importlib.util.find_spec("distributed") is None:
        raise _no_dask()

    @asynccontextmanager
    async def cluster() -> AsyncIterator[Placement]:
        try:
            made = dask_executor(executor)
        except ImportError as exc:  # a part of Dask is missing after all
            raise _no_dask() from exc
        async with AsyncExitStack() as stack:
            try:  # connect now, so that failing to is not blamed on an input file
                await stack.enter_async_context(made)  # and close the client at the end
            except ImportError as exc:
                raise _no_dask() from exc
            except (AsyncClfError, OSError) as exc:
                why = failure(exc.__cause__ or exc)
                msg = f"{_dask_url(executor)}: cannot connect to the Dask scheduler: {why}"
                raise CommandError(msg) from exc
            yield {"executor": made}

    return cluster


def _no_dask() -> CommandError:
    msg = (
        "--executor dask://HOST:PORT needs Dask support, which is not installed: "
        "pip install 'asyncclf[dask]'"
    )
    return CommandError(msg)


def _dask_url(address: str) -> str:
    return "dask://" + address.removeprefix(_DASK)


async def _open(path: str, args: argparse.Namespace, placement: Placement) -> AsyncClassifier:
    """Load the model file ``path`` with the command's --trusted and --sha256."""
    try:
        return await AsyncClassifier.load(
            path, trusted=args.trusted, sha256=args.sha256, **placement
        )
    except Exception as exc:  # load parses an untrusted file: any failure is about it
        if isinstance(exc, AsyncClfError):
            raise about(path, exc) from exc
        msg = f"{path}: not a readable model file ({failure(exc)})"
        raise CommandError(msg) from exc


async def _load(args: argparse.Namespace, placement: Placement) -> AsyncClassifier:
    """Load MODEL, which must score texts (classify, rank and eval all need scores)."""
    clf = await _open(args.model, args, placement)
    estimator = clf.estimator_
    if not (hasattr(estimator, "predict_proba") or hasattr(estimator, "decision_function")):
        msg = (
            f"{args.model}: its {type(estimator).__name__} has neither predict_proba nor "
            f"decision_function; this command needs scores"
        )
        raise CommandError(msg)
    return clf


def _check_output(path: str, data: str) -> None:
    """Fail unless a model can be written to ``path``, before any work is done."""
    if os.path.isdir(path):
        msg = f"{path}: is a directory; name the model file to write"
        raise CommandError(msg)
    if os.path.exists(path) and not os.path.isfile(path):
        msg = f"{path}: is not a regular file; name the model file to write"
        raise CommandError(msg)
    try:
        same = data != "-" and os.path.samefile(path, data)
    except OSError:  # either does not exist (yet)
        same = False
    if same:
        msg = f"{path}: is the training data; name another file for the model"
        raise CommandError(msg)
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        msg = f"{path}: cannot write the model: {directory} {what}"
        raise CommandError(msg)
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        msg = f"{path}: cannot write the model in {directory}: {exc.strerror or exc}"
        raise CommandError(msg) from None


# -- commands --------------------------------------------------------------------------


async def _fit(
    texts: list[str], labels: list[Any], source: str, placement: Placement
) -> AsyncClassifier:
    try:
        return await AsyncClassifier(**placement).fit(texts, labels)
    except AsyncClfError as exc:
        raise about(source, exc) from exc
    except ValueError as exc:  # scikit-learn's word for data it cannot train on
        msg = f"{source}: cannot train on these examples: {exc}"
        raise CommandError(msg) from exc


async def _held_out(
    texts: list[str], labels: list[Any], holdout: float, seed: int, placement: Placement
) -> str:
    """Return the report of the accuracy on a seeded held-out part of the examples."""
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    cut = round(len(order) * (1 - holdout))
    train, test = order[:cut], order[cut:]
    kept = len({labels[i] for i in train})
    if not test or kept < 2:
        why = "no example is held out" if not test else f"the rest has {kept} class(es)"
        return f"held-out accuracy: not computed ({why}; try another --holdout)"
    try:
        held = await AsyncClassifier(**placement).fit(
            [texts[i] for i in train], [labels[i] for i in train]
        )
    except ValueError as exc:  # e.g. too few examples of a class left to train on
        return f"held-out accuracy: not computed ({_one_line(str(exc))})"
    accuracy = await held.score([texts[i] for i in test], [labels[i] for i in test])
    share = f"{len(test)} examples, {holdout:.0%} held out, seed {seed}"
    return f"held-out accuracy: {accuracy:.4f} ({share})"


async def _save(clf: AsyncClassifier, path: str) -> str:
    """Save the model to ``path``; return its SHA-256 digest."""
    try:
        return await clf.save(path)
    except OSError as exc:
        msg = f"{path}: cannot write the model: {exc.strerror or exc}"
        raise CommandError(msg) from exc
    except AsyncClfError as exc:
        raise about(path, exc) from exc


def _note(reading: Reading, name: str) -> None:
    """Print the line about the blank lines skipped in ``name``, if any, on stderr."""
    note = reading.note(name)
    if note is not None:
        print(f"asyncclf: note: {note}", file=sys.stderr)


async def _train(args: argparse.Namespace, out: Output, placement: Placement) -> None:
    source = display_name(args.data)
    await anyio.to_thread.run_sync(_check_output, args.output, args.data)
    texts: list[str] = []
    labels: list[Any] = []
    reading = Reading(args.where)
    examples = read_examples(args.data, args.text_field, args.label_field, reading)
    async with aclosing(examples):
        async for _, text, label in examples:
            texts.append(text)
            labels.append(label)
    counts: dict[Any, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    if not texts:
        msg = f"{source}: no examples{reading.left_out()}"
        raise CommandError(msg)
    if len(counts) < 2:
        only = json.dumps(labels[0])
        msg = f"{source}: every example has the label {only}; training needs 2 classes or more"
        raise CommandError(msg)
    chosen = f" where {reading.conditions()}" if reading.where else ""
    out.line(f"read {len(texts)} examples from {source}{chosen}, {len(counts)} classes:")
    for label, count in sorted(counts.items(), key=lambda item: str(item[0])):
        out.line(f"  {label}: {count}")
    if args.holdout > 0:
        out.line(await _held_out(texts, labels, args.holdout, args.seed, placement))
    clf = await _fit(texts, labels, source, placement)
    digest = await _save(clf, args.output)
    out.line(
        f"trained on all {len(texts)} examples; model saved to {args.output} (sha256 {digest})"
    )
    out.flush()
    _note(reading, source)


async def _classify(args: argparse.Namespace, out: Output, placement: Placement) -> None:
    clf = await _load(args, placement)
    name = display_name(args.input)
    where: deque[int] = deque()
    reading = Reading(args.where)
    texts = read_texts(args.input, args.jsonl, args.text_field, reading, where)
    with progress_bar("classify") as bar:
        async with aclosing(texts), clf.stream(texts, on_error="yield") as results:
            async for p in results:
                at = f"{name}:{where.popleft()}"
                label, score = answer(p, at)
                record = {"index": p.index, "label": label, "score": score}
                if args.with_text:
                    record["text"] = p.text
                out.record(record, at)
                if bar is not None:
                    bar.update()
    out.flush()
    _note(reading, name)


def _resolve_label(given: str, classes: list[Any], model: str) -> Any:
    """Return the class of the model that ``--label given`` names, or fail."""

    def spellings(label: Any) -> set[str]:
        return {str(label), json.dumps(label)} if isinstance(label, bool) else {str(label)}

    matches = [label for label in classes if given in spellings(label)]
    if len(matches) == 1:
        return matches[0]
    listing = ", ".join(json.dumps(label, default=str) for label in classes)
    what = "no class" if not matches else f"{len(matches)} classes"
    msg = f"{model}: --label {given} names {what}; the model's classes are {listing}"
    raise CommandError(msg)


async def _rank(args: argparse.Namespace, out: Output, placement: Placement) -> None:
    clf = await _load(args, placement)
    label = _resolve_label(args.label, clf.classes_.tolist(), args.model)
    name = display_name(args.input)
    reading = Reading(args.where)
    try:
        texts = read_texts(args.input, args.jsonl, args.text_field, reading)
        async with aclosing(texts) as lines:
            best = await clf.top_k(lines, label, k=args.k)
    except CommandError:
        raise
    except AsyncClfError as exc:
        raise about(name, exc) from exc
    except Exception as exc:  # the estimator's own, which top_k passes through
        msg = f"{name}: the model failed on a text: {failure(exc)}"
        raise CommandError(msg) from exc
    for ranked in best:  # all before writing any: a NaN score ranks last
        check_score(ranked.score, f"{name}: the text at index {ranked.index}")
    for ranked in best:
        at = f"{name}: the text at index {ranked.index}"
        out.record({"index": ranked.index, "score": ranked.score, "text": ranked.text}, at)
    out.flush()
    _note(reading, name)


async def _eval(args: argparse.Namespace, out: Output, placement: Placement) -> None:
    from sklearn.metrics import accuracy_score, classification_report, f1_score

    clf = await _load(args, placement)
    name = display_name(args.data)
    kinds = {label_kind(label) for label in clf.classes_.tolist()}
    kind = kinds.pop() if len(kinds) == 1 else None
    truth: list[Any] = []
    where: deque[int] = deque()
    reading = Reading(args.where)

    async def texts() -> AsyncGenerator[str, None]:
        examples = read_examples(args.data, args.text_field, args.label_field, reading, kind)
        async with aclosing(examples):
            async for lineno, text, label in examples:
                truth.append(label)
                where.append(lineno)
                yield text

    predicted: list[Any] = []
    with progress_bar("eval") as bar:
        async with aclosing(texts()) as source, clf.stream(source, on_error="yield") as results:
            async for p in results:
                predicted.append(answer(p, f"{name}:{where.popleft()}")[0])
                if bar is not None:
                    bar.update()
    if not truth:
        msg = f"{name}: no examples{reading.left_out()}"
        raise CommandError(msg)
    try:
        accuracy = accuracy_score(truth, predicted)
        macro_f1 = f1_score(truth, predicted, average="macro")
        report = classification_report(truth, predicted, digits=4, zero_division=0)
    except ValueError as exc:
        msg = f"{name}: cannot compare the labels with the model's: {exc}"
        raise CommandError(msg) from exc
    out.line(f"examples: {len(truth)}")
    out.line(f"accuracy: {accuracy:.4f}")
    out.line(f"macro-F1: {macro_f1:.4f}")
    out.line(report.rstrip())
    out.flush()
    _note(reading, name)


def _spell(labels: Sequence[Any]) -> str:
    return ", ".join(json.dumps(label, default=str) for label in labels)


def _class_named(given: str, kind: str | None, whose: str) -> Any:
    """Return the label that ``--classes given`` names, of the labels' ``kind``."""
    if kind == "integer":
        if re.fullmatch(r"[+-]?[0-9]+", given) and -(1 << 63) <= int(given) < 1 << 63:
            return int(given)
    elif kind == "boolean":
        if given in ("true", "True", "false", "False"):
            return given in ("true", "True")
    else:
        return given
    msg = f"--classes {given}: {whose} are {kind}s; name the classes as such"
    raise CommandError(msg)


def _file_digest(path: str) -> str:
    sha256 = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            sha256.update(chunk)
    return sha256.hexdigest()


def _scores(report: LearnReport, window: int) -> str:
    last = min(window, report.seen)
    return f"progressive accuracy {report.accuracy:.4f}, last {last}: {report.window_accuracy:.4f}"


async def _learn(args: argparse.Namespace, out: Output, placement: Placement) -> None:
    source = display_name(args.data)
    await anyio.to_thread.run_sync(_check_output, args.output, args.data)
    kind: str | None = None
    if args.start is None:
        clf = AsyncClassifier(online_estimator(), **placement)
    else:
        clf = await _open(args.start, args, placement)
        final = final_step(clf.estimator_)
        if not hasattr(final, "partial_fit"):
            msg = (
                f"{args.start}: its {type(final).__name__} cannot learn incrementally (it has "
                f"no partial_fit); continue from a model saved by learn, or leave out --from"
            )
            raise CommandError(msg)
        kinds = {label_kind(label) for label in clf.classes_.tolist()}
        kind = kinds.pop() if len(kinds) == 1 else None

    skipping = args.on_error == "skip"
    skipped = 0
    bar: Any = None

    def skip(error: CommandError) -> None:
        nonlocal skipped
        skipped += 1
        line = f"asyncclf: warning: {error}; skipped"
        if bar is not None:
            bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr)

    reading = Reading(args.where)

    def nothing() -> CommandError:
        also = f" ({skipped} lines skipped)" if skipped else ""
        return CommandError(f"{source}: no examples to learn from{also}{reading.left_out()}")

    examples = read_examples(
        args.data, args.text_field, args.label_field, reading, kind, skip if skipping else None
    )
    async with aclosing(examples):
        first = await anext(examples, None)  # the labels' kind says what --classes mean
        if first is None:
            raise nothing()
        if args.start is None:
            whose = f"the labels of {source} (line {first[0]})"
            named = [_class_named(given, label_kind(first[2]), whose) for given in args.classes]
            classes = list(dict.fromkeys(named))
            if len(classes) < 2:
                msg = f"--classes names one class, {_spell(classes)}; a classifier needs 2 or more"
                raise CommandError(msg)
            fix = f"; name every label of {source} in --classes"
        else:
            classes = clf.classes_.tolist()
            if args.classes:
                named = [_class_named(given, kind, "the model's labels") for given in args.classes]
                if set(named) != set(classes):
                    msg = (
                        f"{args.start}: --classes {_spell(list(dict.fromkeys(named)))} differ "
                        f"from the model's classes, {_spell(classes)}; leave out --classes"
                    )
                    raise CommandError(msg)
            fix = (
                "; a model learns online with the classes it has (to add one, learn anew "
                "without --from)"
            )
        known = set(classes)

        async def pairs() -> AsyncGenerator[tuple[str, Any], None]:
            example: tuple[int, str, Any] | None = first
            while example is not None:
                lineno, text, label = example
                if label in known:
                    yield text, label
                else:
                    msg = (
                        f"{source}:{lineno}: label {json.dumps(label)} is not one of the "
                        f"classes, {_spell(classes)}{fix}"
                    )
                    if not skipping:
                        raise CommandError(msg)
                    skip(CommandError(msg))
                example = await anext(examples, None)

        start = "a new model" if args.start is None else f"{args.start} (version {clf.version})"
        out.line(f"learning from {source}, starting from {start}; classes: {_spell(classes)}")
        out.flush()
        last: LearnReport | None = None
        with progress_bar("learn", unit=" examples") as bar:
            lines = bar is None or not sys.stdout.isatty()  # else the bar is on the screen
            learning = clf.learn(
                pairs(),
                classes=classes if args.start is None else None,
                batch_size=args.batch_size,
                publish_every=args.publish_every,
                window=args.window,
                checkpoint=args.output,
                checkpoint_every=args.checkpoint_every,
            )
            try:
                async with learning as reports:
                    async for report in reports:
                        also = f", {skipped} skipped" if skipped else ""
                        if bar is not None:
                            bar.set_postfix_str(
                                f"accuracy {report.accuracy:.3f}, last "
                                f"{min(args.window, report.seen)}: "
                                f"{report.window_accuracy:.3f}, version {report.version}{also}",
                                refresh=False,
                            )
                            bar.update(report.seen - (0 if last is None else last.seen))
                        last = report
                        if report.published and lines:
                            out.line(
                                f"{report.seen} examples{also}: {_scores(report, args.window)}; "
                                f"model version {report.version}"
                            )
                            out.flush()
            except CommandError:
                raise
            except PersistenceError as exc:  # saving a checkpoint
                raise about(args.output, exc) from exc
            except AsyncClfError as exc:
                raise about(source, exc) from exc
            except Exception as exc:  # the estimator's own, which learn passes through
                msg = f"{source}: cannot learn from these examples: {failure(exc)}"
                raise CommandError(msg) from exc
            finally:
                bar = None  # the bar closes: warnings from now on are plain lines
    if last is None:
        raise nothing()
    try:  # learn saved the final model there when the stream ended
        digest = await anyio.to_thread.run_sync(_file_digest, args.output)
    except OSError as exc:
        msg = f"{args.output}: cannot read the model back: {exc.strerror or exc}"
        raise CommandError(msg) from exc
    out.line(
        f"learned from {last.seen} examples ({skipped} skipped) at "
        f"{last.examples_per_second:.0f} examples/s: {_scores(last, args.window)}; "
        f"model version {clf.version} saved to {args.output} (sha256 {digest})"
    )
    out.flush()
    _note(reading, source)


# -- parser ----------------------------------------------------------------------------


def _count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        msg = f"must be an integer >= 0, not {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return number


def _fraction(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not 0 <= number < 1:
        msg = f"must be a number in [0, 1), not {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return number


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        msg = f"must be an integer >= 1, not {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return number


def _executor(value: str) -> str:
    """Return ``threads``, ``processes`` or the Dask scheduler's ``tcp://`` address."""
    if value in ("threads", "processes"):
        return value
    if not value.startswith("dask://"):
        msg = f"must be threads, processes or dask://HOST:PORT, not {value!r}"
        raise argparse.ArgumentTypeError(msg)
    url = urllib.parse.urlsplit(value)
    try:
        port = url.port
    except ValueError:  # not a number, or out of range
        port = None
    extra = url.path or url.query or url.fragment or url.username or url.password
    if not url.hostname or not port or extra:
        msg = (
            f"must be dask://HOST:PORT, a Dask scheduler's host and port (such as "
            f"dask://127.0.0.1:8786), not {value!r}"
        )
        raise argparse.ArgumentTypeError(msg)
    return _DASK + url.netloc


def _condition(value: str) -> tuple[str, str]:
    """Return the field and the value of ``--where FIELD=VALUE``."""
    name, equals, wanted = value.partition("=")
    if not equals or not name:
        msg = f"must be FIELD=VALUE (such as split=train), not {value!r}"
        raise argparse.ArgumentTypeError(msg)
    return name, wanted


def _sha256(value: str) -> str:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        msg = "must be 64 hexadecimal digits, the SHA-256 digest train prints"
        raise argparse.ArgumentTypeError(msg)
    return value.lower()


def _parser() -> argparse.ArgumentParser:
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
        command.add_argument(
            "--where",
            type=_condition,
            action="append",
            default=[],
            metavar="FIELD=VALUE",
            help="keep only the JSON records whose FIELD is VALUE (a string as is, other "
            "values as JSON: 3, true, null); repeatable, all must match",
        )

    def model(command: argparse.ArgumentParser) -> None:
        command.add_argument("model", metavar="MODEL", help="a model file saved by train")
        trust(command, "MODEL")

    def trust(command: argparse.ArgumentParser, model: str) -> None:
        command.add_argument(
            "--trusted",
            action="append",
            default=[],
            metavar="TYPE",
            help=f"a type to trust in {model}, repeatable (only for files from a trusted source)",
        )
        command.add_argument(
            "--sha256",
            type=_sha256,
            metavar="HEX",
            help=f"refuse {model} unless its SHA-256 digest is HEX (train and learn print it)",
        )

    def workers(command: argparse.ArgumentParser, threads_only: bool = False) -> None:
        command.add_argument(
            "--executor",
            type=_executor,
            default="threads",
            metavar="threads" if threads_only else "{threads,processes,dask://HOST:PORT}",
            help="threads only: learn runs in worker threads of this process"
            if threads_only
            else "where the model runs: worker threads (default), worker processes on this "
            "machine, or the Dask cluster whose scheduler is at HOST:PORT",
        )
        command.add_argument(
            "--workers",
            type=_positive,
            metavar="N",
            help="at most N model calls at once"
            if threads_only
            else "threads: at most N model calls at once; processes: N worker processes "
            "(default: one per CPU); not for dask",
        )
        command.set_defaults(command_parser=command)  # for errors about both options

    def texts(command: argparse.ArgumentParser) -> None:
        command.add_argument(
            "input",
            nargs="?",
            default="-",
            metavar="INPUT",
            help="one text per line (gzip too); - is stdin",
        )
        command.add_argument(
            "--jsonl", action="store_true", help="INPUT is JSON Lines with a text field"
        )
        fields(command, label=False)

    train = commands.add_parser("train", help="train the default classifier on JSON Lines")
    train.add_argument(
        "data", metavar="DATA", help="JSON Lines with text and label, or gzip of it; - is stdin"
    )
    train.add_argument("-o", "--output", required=True, metavar="MODEL", help="model file")
    train.add_argument(
        "--holdout", type=_fraction, default=0.2, help="fraction held out to report accuracy"
    )
    train.add_argument("--seed", type=int, default=0, help="seed of the held-out split")
    fields(train, label=True)
    workers(train)

    learn = commands.add_parser(
        "learn",
        help="learn online from JSON Lines, printing progressive accuracy",
        usage="%(prog)s DATA -o MODEL [--from MODEL] [--classes LABEL [LABEL ...]] [options]",
        description="Learn from each example in turn (test, then train), saving MODEL as it "
        "goes and at the end.",
    )
    learn.add_argument(
        "data",
        nargs="?",
        metavar="DATA",
        help="JSON Lines with text and label, or gzip of it; - is stdin",
    )
    learn.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="MODEL",
        help="model file, saved every --checkpoint-every examples and at the end",
    )
    learn.add_argument(
        "--from",
        dest="start",
        metavar="MODEL",
        help="learn on from this model file (saved by learn); it keeps its classes",
    )
    learn.add_argument(
        "--classes",
        nargs="+",
        action="extend",
        default=[],
        metavar="LABEL",
        help="every label DATA holds; needed without --from",
    )
    trust(learn, "the --from MODEL")
    learn.add_argument(
        "--on-error",
        choices=["raise", "skip"],
        default="raise",
        help="a bad line (bad JSON, a missing field, a label outside the classes) ends "
        "the command (raise, the default) or is skipped with a warning (skip)",
    )
    learn.add_argument(
        "--batch-size", type=_positive, default=256, metavar="N", help="largest mini-batch (256)"
    )
    learn.add_argument(
        "--publish-every",
        type=_positive,
        default=1000,
        metavar="N",
        help="publish the model learned every N examples, and report (1000)",
    )
    learn.add_argument(
        "--checkpoint-every",
        type=_positive,
        metavar="N",
        help="save MODEL at the first publish after every N examples (default: --publish-every)",
    )
    learn.add_argument(
        "--window",
        type=_positive,
        default=1000,
        metavar="N",
        help="examples the recent accuracy is measured over (1000)",
    )
    fields(learn, label=True)
    workers(learn, threads_only=True)

    classify = commands.add_parser("classify", help="label each input line (JSON Lines out)")
    model(classify)
    texts(classify)
    classify.add_argument("--with-text", action="store_true", help="include the text")
    workers(classify)

    rank = commands.add_parser("rank", help="the k texts most likely to have a label")
    model(rank)
    rank.add_argument("--label", required=True, help="the label to rank by, as train prints it")
    rank.add_argument("-k", type=_count, default=10, help="how many texts to keep (default 10)")
    texts(rank)
    workers(rank)

    evaluate = commands.add_parser("eval", help="accuracy, macro-F1 and a per-class report")
    model(evaluate)
    evaluate.add_argument(
        "data", metavar="DATA", help="JSON Lines with text and label, or gzip of it"
    )
    fields(evaluate, label=True)
    workers(evaluate)

    commands.add_parser(
        "demo", help="train on the bundled SMS corpus, then classify and rank concurrently"
    )
    return parser


def _check_learn(args: argparse.Namespace) -> None:
    """Refuse what the learn command's parser cannot (exit status 2)."""
    error = args.command_parser.error
    if args.data is None:
        if args.classes:
            error(
                "the following arguments are required: DATA (--classes takes every word up "
                "to the next option: put DATA before it)"
            )
        error("the following arguments are required: DATA")
    if args.executor != "threads":
        error(
            "argument --executor: learn runs in worker threads of this process, one "
            "mini-batch after another; processes and dask:// are not for learn"
        )
    if args.start is None:
        if not args.classes:
            error(
                "argument --classes: needed without --from: name every label DATA holds "
                "(e.g. --classes ham spam)"
            )
        if len(set(args.classes)) < 2:
            error("argument --classes: names one class; a classifier needs 2 or more")
        if args.sha256 is not None or args.trusted:
            which = "--sha256" if args.sha256 is not None else "--trusted"
            error(f"argument {which}: only with --from MODEL, the model it applies to")


def _one_line(message: str) -> str:
    return " ".join(part for part in message.splitlines() if part) or "failed"


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
    executor: str = getattr(args, "executor", "threads")
    if executor.startswith(_DASK) and args.workers is not None:
        args.command_parser.error(
            "argument --workers: not for --executor dask://: a Dask cluster has the "
            "workers it was started with"
        )
    if args.command == "learn":
        _check_learn(args)
    if getattr(args, "where", None) and getattr(args, "jsonl", True) is False:
        args.command_parser.error(
            "argument --where: needs JSON records: add --jsonl (INPUT is plain text, one "
            "text per line, without it)"
        )
    if args.backend == "trio" and importlib.util.find_spec("trio") is None:
        print("asyncclf: trio is not installed; 'pip install trio' first.", file=sys.stderr)
        return 1
    if sys.stdout is None:  # started with standard output closed
        print("asyncclf: <stdout>: closed; nowhere to write the results", file=sys.stderr)
        return 1
    out = Output(sys.stdout)
    try:
        make_placement = _placement(executor, getattr(args, "workers", None))
    except CommandError as exc:
        print(f"asyncclf: {exc}", file=sys.stderr)
        return 1

    def show(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        print(f"asyncclf: warning: {_one_line(str(message))}", file=sys.stderr)

    async def run() -> None:
        if args.command == "demo":
            from ._demo import run_demo

            await run_demo()
            return
        command = {
            "train": _train,
            "learn": _learn,
            "classify": _classify,
            "rank": _rank,
            "eval": _eval,
        }
        async with make_placement() as placement:
            await command[args.command](args, out, placement)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show  # one line, like errors
            anyio.run(run, backend=args.backend)
    except (CommandError, AsyncClfError) as exc:
        print(f"asyncclf: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. piped into head: stop quietly
        try:  # and keep Python from reporting the pipe again when it flushes at exit
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass
        return 0
    except KeyboardInterrupt:
        print("asyncclf: interrupted", file=sys.stderr)
        return 130
    return 0
