"""Online learning: asyncclf's ``learn`` against River, side by side in one run.

Usage: python benchmarks/online.py [--quick]

The same stream for everybody: a dataset's rows in a fixed shuffle (``random.Random(0)``),
SMS Spam (5,574) and 20 Newsgroups (18,846, all of it), learned test-then-train over
every example (each predicted before it is learned from; a prediction before anything
was learned counts as wrong). Printed per stream: progressive accuracy and examples/s of

* River (``pip install 'asyncclf[bench]'``; skipped with a note when absent), one
  example at a time (``predict_one`` then ``learn_one``): ``BagOfWords | MultinomialNB``, its
  canonical text pipeline, and ``TFIDF | MultinomialNB`` with the two smoothings that
  were River's most accurate on these streams in a search of 16 River pipelines
  (``alpha=0.1`` on SMS, ``alpha=0.01`` on 20 Newsgroups);
* ``AsyncClassifier(online_estimator()).learn(...)`` on asyncio and trio, from a sync
  iterable of the pairs, mini-batches growing 1, 2, 4, ... 256.

Then, on 20 Newsgroups: 5,000 ``classify`` calls (100 callers, 50 calls each) made while
the stream is learned: errors, whether each caller's versions never went back, and the
latency percentiles; and the peak memory traced while learning from the SMS stream
once and ten times over (memory must not grow with the stream).
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import random
import time
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import anyio
from _data import load

from asyncclf import AsyncClassifier, online_estimator

Pairs = list[tuple[str, str]]


def stream(name: str, limit: int | None) -> Pairs:
    rows = load(name)
    random.Random(0).shuffle(rows)
    pairs = [(row["text"], row["label"]) for row in rows]
    return pairs[:limit] if limit else pairs


def river_pipelines() -> dict[str, Callable[[], Any]] | None:
    try:
        # Imported as Any: River is not a dependency, and is untyped.
        text: Any = importlib.import_module("river.feature_extraction")
        bayes: Any = importlib.import_module("river.naive_bayes")
    except ImportError:
        return None
    return {
        "River BagOfWords | MultinomialNB": lambda: text.BagOfWords() | bayes.MultinomialNB(),
        "River TFIDF | MultinomialNB(alpha=0.1)": lambda: (
            text.TFIDF() | bayes.MultinomialNB(alpha=0.1)
        ),
        "River TFIDF | MultinomialNB(alpha=0.01)": lambda: (
            text.TFIDF() | bayes.MultinomialNB(alpha=0.01)
        ),
    }


def river_run(make: Callable[[], Any], pairs: Pairs) -> tuple[float, float]:
    """Progressive accuracy and examples/s of a River pipeline, one example at a time."""
    model = make()
    hits = 0
    started = time.perf_counter()
    for text, label in pairs:
        hits += model.predict_one(text) == label
        model.learn_one(text, label)
    return hits / len(pairs), len(pairs) / (time.perf_counter() - started)


async def asyncclf_run(pairs: Pairs) -> tuple[float, float]:
    """Progressive accuracy and examples/s of ``learn`` with the online default."""
    clf = AsyncClassifier(online_estimator())
    classes = sorted({label for _, label in pairs})
    started = time.perf_counter()
    async with clf.learn(pairs, classes=classes) as reports:
        last = [report async for report in reports][-1]
    return last.accuracy, len(pairs) / (time.perf_counter() - started)


async def serving_while_learning(pairs: Pairs, callers: int, calls: int) -> str:
    """classify from ``callers`` tasks, ``calls`` each, while ``pairs`` are learned."""
    clf = AsyncClassifier(online_estimator())
    classes = sorted({label for _, label in pairs})
    # Serve a first model, from the first 1,000 examples, before the stream starts.
    async with clf.learn(pairs[:1000], classes=classes) as reports:
        async for _ in reports:
            pass
    probes = [text for text, _ in pairs[1000:1100]]
    latencies: list[float] = []
    errors = 0
    monotonic = True
    versions: set[int] = set()
    done = anyio.Event()

    async def caller(i: int) -> None:
        nonlocal errors, monotonic
        seen: list[int] = []
        for call in range(calls):
            started = time.perf_counter()
            try:
                prediction = await clf.classify(probes[(i + call) % len(probes)])
            except Exception:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)
            seen.append(prediction.version)
            if not done.is_set():
                await anyio.sleep(0.25)  # spread over the learning, not all at its start
        monotonic = monotonic and seen == sorted(seen)
        versions.update(seen)

    started = time.perf_counter()
    async with anyio.create_task_group() as tasks:
        for i in range(callers):
            tasks.start_soon(caller, i)
        async with clf.learn(pairs[1000:]) as reports:
            reports_seen = [report async for report in reports]
        learned = time.perf_counter() - started
        done.set()
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1e3

    return (
        f"{len(latencies) + errors:,} classify calls from {callers} callers while learning "
        f"{len(pairs) - 1000:,} examples in {learned:.1f} s "
        f"(accuracy {reports_seen[-1].accuracy:.4f}): "
        f"{errors} errors; versions seen {min(versions)}-{max(versions)}, never going back "
        f"for any caller: {monotonic}; latency p50 {pct(0.5):.1f} ms, p99 {pct(0.99):.1f} ms, "
        f"max {ordered[-1] * 1e3:.1f} ms"
    )


def cycled(pairs: Pairs, times: int) -> Iterator[tuple[str, str]]:
    return itertools.chain.from_iterable(itertools.repeat(pairs, times))


def peak_memory(pairs: Iterable[tuple[str, str]], classes: list[str]) -> float:
    """Peak memory traced (MiB) above the start while learning from ``pairs``."""

    async def learn() -> None:
        clf = AsyncClassifier(online_estimator())
        async with clf.learn(pairs, classes=classes) as reports:
            async for _ in reports:
                pass

    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    anyio.run(learn)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (peak - base) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter streams")
    args = parser.parse_args()
    limits = {"sms_spam": 2000, "20newsgroups": 3000} if args.quick else {}

    river = river_pipelines()
    if river is None:
        print("River is not installed (pip install 'asyncclf[bench]'): its rows are skipped")
    for name in ("sms_spam", "20newsgroups"):
        pairs = stream(name, limits.get(name))
        print(f"\n{name}: {len(pairs):,} examples, test-then-train (accuracy, examples/s)")
        rows: list[tuple[str, float, float]] = []
        for label, make in (river or {}).items():
            rows.append((label, *river_run(make, pairs)))
        for backend in ("asyncio", "trio"):
            accuracy, speed = anyio.run(asyncclf_run, pairs, backend=backend)
            rows.append((f"asyncclf learn, online_estimator(), {backend}", accuracy, speed))
        best_river = max(
            (r for r in rows if r[0].startswith("River")), key=lambda r: r[1], default=None
        )
        for label, accuracy, speed in rows:
            ratio = ""
            if best_river is not None and not label.startswith("River"):
                ratio = f"  ({speed / best_river[2]:.1f}x the most accurate River's speed)"
            print(f"  {label:48} {accuracy:.4f}  {speed:9,.0f}{ratio}")

    news = stream("20newsgroups", limits.get("20newsgroups"))
    print()
    for backend in ("asyncio", "trio"):
        line = anyio.run(serving_while_learning, news, 100, 50, backend=backend)
        print(f"{backend}: {line}")

    sms = stream("sms_spam", limits.get("sms_spam"))
    classes = sorted({label for _, label in sms})
    once = peak_memory(cycled(sms, 1), classes)
    ten = peak_memory(cycled(sms, 10), classes)
    print(
        f"\npeak traced memory while learning: {len(sms):,} SMS examples {once:.1f} MiB, "
        f"ten times as many {ten:.1f} MiB"
    )


if __name__ == "__main__":
    main()
