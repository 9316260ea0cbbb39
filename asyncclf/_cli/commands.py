"""The commands that train a model or use one: train, classify, rank, eval and demo.

Each takes the parsed arguments, the standard output and the placement of its
classifiers; all but ``train`` stream their input in bounded memory.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

import anyio
import anyio.to_thread

from .._classifier import AsyncClassifier
from .._errors import AsyncClfError
from .errors import CommandError, about, failure, one_line
from .models import check_output, load_scoring, save
from .output import Output, answer, check_score, note, progress_bar
from .placement import Placement
from .reading import Reading, display_name, label_kind, read_examples, read_texts

Command = Callable[[argparse.Namespace, Output, Placement], Awaitable[None]]
"""A command: it runs with the parsed arguments, stdout and its classifiers' placement."""


async def _fit(
    texts: list[str], labels: list[Any], source: str, placement: Placement
) -> AsyncClassifier:
    """Fit a new default classifier; data it cannot train on is one line naming ``source``."""
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
        return f"held-out accuracy: not computed ({one_line(str(exc))})"
    accuracy = await held.score([texts[i] for i in test], [labels[i] for i in test])
    share = f"{len(test)} examples, {holdout:.0%} held out, seed {seed}"
    return f"held-out accuracy: {accuracy:.4f} ({share})"


async def train(args: argparse.Namespace, out: Output, placement: Placement) -> None:
    """Train the default classifier on DATA (held in memory) and save it to -o."""
    source = display_name(args.data)
    await anyio.to_thread.run_sync(check_output, args.output, args.data)
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
    digest = await save(clf, args.output)
    out.line(
        f"trained on all {len(texts)} examples; model saved to {args.output} (sha256 {digest})"
    )
    out.flush()
    note(reading, source)


async def classify(args: argparse.Namespace, out: Output, placement: Placement) -> None:
    """Write the label and score of each text of INPUT as a JSON line, in order."""
    clf = await load_scoring(args, placement)
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
    note(reading, name)


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


async def rank(args: argparse.Namespace, out: Output, placement: Placement) -> None:
    """Write the k texts of INPUT scoring highest for --label, best first."""
    clf = await load_scoring(args, placement)
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
    note(reading, name)


async def evaluate(args: argparse.Namespace, out: Output, placement: Placement) -> None:
    """Print the accuracy, macro-F1 and per-class report of MODEL on DATA."""
    from sklearn.metrics import accuracy_score, classification_report, f1_score

    clf = await load_scoring(args, placement)
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
    note(reading, name)


async def demo(args: argparse.Namespace, out: Output, placement: Placement) -> None:
    """Run the demo: it prints on its own and places its classifiers itself."""
    from .._demo import run_demo

    await run_demo()
