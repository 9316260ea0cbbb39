"""The learn command: learn online from labelled JSON Lines, reporting progressive accuracy."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import Any

import anyio
import anyio.to_thread

from .._classifier import AsyncClassifier
from .._errors import AsyncClfError, PersistenceError
from .._model import final_step, online_estimator
from .._types import LearnReport
from .errors import CommandError, about, failure
from .models import check_output, file_digest, open_model
from .output import Output, note, progress_bar
from .placement import Placement
from .reading import Reading, display_name, label_kind, read_examples


def _spell(labels: Sequence[Any]) -> str:
    """Spell labels as JSON, joined by commas, as errors list them."""
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


def _scores(report: LearnReport, window: int) -> str:
    """The progressive and recent accuracy of ``report``, as learn prints them."""
    last = min(window, report.seen)
    return f"progressive accuracy {report.accuracy:.4f}, last {last}: {report.window_accuracy:.4f}"


async def learn(args: argparse.Namespace, out: Output, placement: Placement) -> None:
    """Learn from each example of DATA in turn (test, then train), saving -o as it goes."""
    source = display_name(args.data)
    await anyio.to_thread.run_sync(check_output, args.output, args.data)
    kind: str | None = None
    if args.start is None:
        clf = AsyncClassifier(online_estimator(), **placement)
    else:
        clf = await open_model(args.start, args, placement)
        final = final_step(clf.estimator_)
        if not hasattr(final, "partial_fit"):
            msg = (
                f"{args.start}: its {type(final).__name__} cannot learn incrementally (it has "
                f"no partial_fit); continue from a model saved by learn, or leave out --from"
            )
            raise CommandError(msg)
        kinds = {label_kind(label) for label in clf.classes_.tolist()}
        kind = kinds.pop() if len(kinds) == 1 else None

    skipping = args.on_error == "yield"  # as learn(on_error="yield"): skip, and say so
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
        digest = await anyio.to_thread.run_sync(file_digest, args.output)
    except OSError as exc:
        msg = f"{args.output}: cannot read the model back: {exc.strerror or exc}"
        raise CommandError(msg) from exc
    out.line(
        f"learned from {last.seen} examples ({skipped} skipped) at "
        f"{last.examples_per_second:.0f} examples/s: {_scores(last, args.window)}; "
        f"model version {clf.version} saved to {args.output} (sha256 {digest})"
    )
    out.flush()
    note(reading, source)
