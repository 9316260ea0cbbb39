"""Per-caller cost of the batching machinery alone, with an estimator that does nothing.

Usage: python benchmarks/overhead.py [--rounds R] [--callers N ...] [--no-gc]

N concurrent single-text callers are started the cheapest native way (``asyncio.gather``
on asyncio, a nursery on trio) and each awaits one call. Printed per caller, in µs, the
median over R interleaved rounds (min-max in brackets):

* bare tasks: each caller only awaits one checkpoint (the harness's floor);
* asyncclf: ``await clf.classify(text)`` with the default settings;
* async-batcher and batched (asyncio only), the peers, when installed
  (``pip install 'asyncclf[bench]'``), set up as
  asyncclf is: batches of up to 256, a no-op batch function.

The estimator returns constant probabilities without looking at the texts, so only
the batching machinery is timed. No assertion: these are figures to read side by side.

``--no-gc`` turns CPython's cyclic garbage collector off while a round runs (and
collects between rounds). With it on, the cost per caller grows with the number of
callers for every contender, the bare tasks included: each full collection walks
every live task, and more callers mean more collections over more tasks. Off, it
shows what grows with the callers in the machinery itself.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from asyncclf import AsyncClassifier

Contender = Callable[[list[str]], Awaitable[float]]
"""Run one caller per text; return the seconds from the first start to the last end
(set-up and shutdown, such as async-batcher's ``stop()``, are not timed)."""


class NoOpClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Two classes, equal probabilities for every text, at once."""

    def fit(self, X: list[str], y: list[str]) -> NoOpClassifier:
        self.classes_ = np.array(sorted(set(y)))
        return self

    def predict_proba(self, X: list[str]) -> Any:
        return np.full((len(X), len(self.classes_)), 1 / len(self.classes_))


async def spawn(backend: str, call: Callable[[str], Awaitable[Any]], texts: list[str]) -> float:
    """Seconds to run ``call(text)`` for every text concurrently, started the cheapest
    native way."""
    started = time.perf_counter()
    if backend == "asyncio":
        await asyncio.gather(*(call(text) for text in texts))
    else:
        import trio

        async with trio.open_nursery() as nursery:
            for text in texts:
                nursery.start_soon(call, text)
    return time.perf_counter() - started


async def checkpoint(text: str) -> None:
    await anyio.lowlevel.checkpoint()


def bare(backend: str) -> Contender:
    async def run(texts: list[str]) -> float:
        return await spawn(backend, checkpoint, texts)

    return run


def asyncclf(backend: str, clf: AsyncClassifier) -> Contender:
    async def run(texts: list[str]) -> float:
        return await spawn(backend, clf.classify, texts)

    return run


def async_batcher() -> Contender | None:
    try:
        from async_batcher.batcher import AsyncBatcher
    except ImportError:
        return None

    class Batcher(AsyncBatcher[str, Any]):  # type: ignore[misc]
        def process_batch(self, batch: list[str]) -> Any:
            return [0.5] * len(batch)

    async def run(texts: list[str]) -> float:
        batcher = Batcher(max_batch_size=256, concurrency=2)
        elapsed = await spawn("asyncio", batcher.process, texts)
        await batcher.stop()
        return elapsed

    return run


def batched() -> Contender | None:
    try:
        from batched import aio
    except ImportError:
        return None

    async def run(texts: list[str]) -> float:
        @aio.dynamically(batch_size=256, timeout_ms=2.0)  # type: ignore[untyped-decorator]
        def process(items: list[str]) -> list[float]:
            return [0.5] * len(items)

        return await spawn("asyncio", process, texts)

    return run


def timed(backend: str, contender: Contender, texts: list[str], collect: bool = True) -> float:
    gc.collect()
    if not collect:
        gc.disable()
    try:
        elapsed: float = anyio.run(contender, texts, backend=backend)
    finally:
        gc.enable()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--callers", type=int, nargs="+", default=[1_000, 10_000])
    parser.add_argument("--no-gc", action="store_true", help="time with the cyclic GC off")
    args = parser.parse_args()
    print(f"cyclic garbage collector: {'off' if args.no_gc else 'on'} while timing")

    async def fitted() -> AsyncClassifier:
        return await AsyncClassifier(NoOpClassifier()).fit(["a", "b"], ["x", "y"])

    clf = anyio.run(fitted)
    for count in args.callers:
        texts = [f"text {i}" for i in range(count)]
        for backend in ("asyncio", "trio"):
            contenders: dict[str, Contender | None]
            contenders = {
                "bare tasks (floor)": bare(backend),
                "asyncclf classify": asyncclf(backend, clf),
            }
            if backend == "asyncio":
                contenders["async-batcher"] = async_batcher()
                contenders["batched"] = batched()
            present: dict[str, Contender] = {
                name: c for name, c in contenders.items() if c is not None
            }
            for contender in present.values():
                timed(backend, contender, texts[:100])  # warm up
            samples: dict[str, list[float]] = {name: [] for name in present}
            for _ in range(args.rounds):  # interleaved: drift hits every contender alike
                for name, contender in present.items():
                    elapsed = timed(backend, contender, texts, not args.no_gc)
                    samples[name].append(elapsed / count * 1e6)
            floor = statistics.median(samples["bare tasks (floor)"])
            print(f"{count:,} callers on {backend}, µs per caller (median [min-max]):")
            for name, values in samples.items():
                median = statistics.median(values)
                above = "" if name.startswith("bare") else f"  ({median - floor:+.1f} above)"
                print(f"  {name:22} {median:6.1f} [{min(values):.1f}-{max(values):.1f}]{above}")
            for name in contenders.keys() - present.keys():
                print(f"  {name}: not installed, skipped")


if __name__ == "__main__":
    main()
