"""Batching and streaming throughput, measured side by side in one run.

Usage: python benchmarks/throughput.py [--quick]

Each ratio is the median over repeats of (sync time / async time), the two measured back
to back, so that the machine's drift cancels.

On the 20 Newsgroups test set with the default pipeline, prints throughput as a ratio
of one synchronous vectorised ``predict_proba`` over the same texts, for naive per-text
``anyio.to_thread.run_sync``, ``stream`` and 5,000 concurrent ``classify`` callers (in
batches of the default size, in one batch of all of them, and the harness's ceiling), on
asyncio and trio, and of ``stream`` over Chinese reviews (zh_reviews, whose texts
take the character n-gram path of the default's tokeniser); then lone-call latency,
event-loop lag while streaming, and memory growth while streaming 20,000 and 200,000
texts.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
from _data import load, news_split

from asyncclf import AsyncClassifier


def best_of(repeats: int, run: Callable[[], float]) -> float:
    return min(run() for _ in range(repeats))


def paired(repeats: int, baseline: Callable[[], float], variant: Callable[[], float]) -> float:
    """Median of baseline/variant time ratios, each pair measured back to back.

    The machine's speed drifts (shared, noisy); measuring the pair side by side cancels
    most of it.
    """
    return statistics.median(baseline() / variant() for _ in range(repeats))


def timed_sync(func: Callable[[], Any]) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def timed_async(backend: str, func: Callable[[], Awaitable[Any]]) -> float:
    async def main() -> float:
        started = time.perf_counter()
        await func()
        return time.perf_counter() - started

    result: float = anyio.run(main, backend=backend)
    return result


async def lag_monitor(samples: list[float], stop: anyio.Event, period: float = 0.005) -> None:
    """Record how late the event loop wakes a task that sleeps ``period`` seconds."""
    while not stop.is_set():
        started = time.perf_counter()
        await anyio.sleep(period)
        samples.append(time.perf_counter() - started - period)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def peer_ratio(
    estimator: Any, callers: list[str], baseline: Callable[[], float], repeats: int
) -> float | None:
    """The same 5,000 concurrent callers through async-batcher (asyncio only), if installed."""
    try:
        from async_batcher.batcher import AsyncBatcher
    except ImportError:
        print("async-batcher is not installed: the peer comparison is skipped")
        return None

    class Batcher(AsyncBatcher[str, Any]):  # type: ignore[misc]
        def process_batch(self, batch: list[str]) -> Any:
            return list(estimator.predict_proba(batch))

    async def run() -> None:
        batcher = Batcher(max_batch_size=256, concurrency=2)

        async def one(text: str) -> None:
            await batcher.process(text)

        async with anyio.create_task_group() as tasks:
            for text in callers:
                tasks.start_soon(one, text)
        await batcher.stop()

    return paired(repeats, baseline, functools.partial(timed_async, "asyncio", run))


def chinese_stream(repeats: int, quick: bool) -> list[tuple[str, str, float]]:
    """The stream's ratio on zh_reviews (no spaces, character n-grams) on both backends."""
    rows = load("zh_reviews")
    train = [r for r in rows if r["split"] == "train"]
    texts = [r["text"] for r in rows if r["split"] == "test"]
    texts = texts[:1000] if quick else texts

    async def fit() -> AsyncClassifier:
        return await AsyncClassifier().fit([r["text"] for r in train], [r["label"] for r in train])

    clf: AsyncClassifier = anyio.run(fit)

    def sync_texts() -> float:
        return timed_sync(functools.partial(clf.estimator_.predict_proba, texts))

    async def stream() -> None:
        async with clf.stream(texts) as results:
            async for _ in results:
                pass

    measured = []
    for backend in ("asyncio", "trio"):
        timed_async(backend, stream)  # warm up
        ratio = paired(repeats, sync_texts, functools.partial(timed_async, backend, stream))
        measured.append((backend, f"stream, {len(texts)} Chinese reviews", ratio))
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer texts and repeats")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3

    train_x, train_y, test_x, _ = news_split()
    texts = test_x[:1500] if args.quick else test_x
    callers = texts[:5000]

    async def fit() -> AsyncClassifier:
        return await AsyncClassifier().fit(train_x, train_y)

    clf: AsyncClassifier = anyio.run(fit)
    estimator = clf.estimator_
    print(f"20 Newsgroups test texts: {len(texts)}; concurrent callers: {len(callers)}")

    base = best_of(repeats, lambda: timed_sync(lambda: estimator.predict_proba(texts)))
    print(f"sync vectorised predict_proba: {len(texts) / base:,.0f} texts/s (the 1.00 mark)")

    async def naive() -> None:
        limiter = anyio.CapacityLimiter(2)

        async def one(text: str) -> None:
            await anyio.to_thread.run_sync(estimator.predict_proba, [text], limiter=limiter)

        async with anyio.create_task_group() as tasks:
            for text in callers:
                tasks.start_soon(one, text)

    async def stream() -> None:
        async with clf.stream(texts) as results:
            async for _ in results:
                pass

    async def spawn_only() -> None:
        # The harness alone: one task per text, doing nothing. No batching library can
        # beat base / (base + this) with one task per text.
        async def one(text: str) -> None:
            await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tasks:
            for text in callers:
                tasks.start_soon(one, text)

    async def concurrent() -> None:
        async def one(text: str) -> None:
            await clf.classify(text)

        async with anyio.create_task_group() as tasks:
            for text in callers:
                tasks.start_soon(one, text)

    async def one_batch() -> None:
        # The same callers in one batch of all of them: no cost of batching remains but
        # that of the callers themselves (queueing, waiting, waking, their results).
        clf.set_params(max_batch_size=len(callers))
        try:
            await concurrent()
        finally:
            clf.set_params(max_batch_size=256)

    def sync_texts() -> float:
        return timed_sync(functools.partial(estimator.predict_proba, texts))

    def sync_callers() -> float:
        return timed_sync(functools.partial(estimator.predict_proba, callers))

    def measure(backend: str) -> list[tuple[str, str, float]]:
        def run(job: Callable[[], Awaitable[Any]]) -> Callable[[], float]:
            return functools.partial(timed_async, backend, job)

        def with_spawning() -> float:
            return sync_callers() + run(spawn_only)()

        return [
            (backend, "naive per-text to_thread", paired(1, sync_callers, run(naive))),
            (backend, "stream", paired(repeats, sync_texts, run(stream))),
            (
                backend,
                f"{len(callers)} concurrent classify",
                paired(repeats, sync_callers, run(concurrent)),
            ),
            (
                backend,
                "  the same in one batch",
                paired(repeats, sync_callers, run(one_batch)),
            ),
            (
                backend,
                "  ceiling: spawning the callers",
                paired(repeats, sync_callers, with_spawning),
            ),
        ]

    # Warm up first (threads, caches, lazily built state), so that the backend measured
    # first is not the one that pays for it.
    for backend in ("asyncio", "trio"):
        timed_async(backend, stream)
        timed_async(backend, concurrent)
    sync_texts()
    rows = measure("asyncio") + measure("trio")
    rows += chinese_stream(repeats, args.quick)
    peer = peer_ratio(estimator, callers, sync_callers, repeats)
    if peer is not None:
        rows.append(("asyncio", "async-batcher 0.2.2 (peer)", peer))
    print("\nthroughput as a ratio of one sync vectorised predict_proba (higher is better):")
    for backend, name, ratio in rows:
        print(f"  {backend:8} {name:32} {ratio:5.2f}")

    # Lone-call latency: one classify at a time, against its own compute.
    lone = texts[:200]

    async def lone_calls() -> list[float]:
        latencies = []
        for text in lone:
            started = time.perf_counter()
            await clf.classify(text)
            latencies.append(time.perf_counter() - started)
        return latencies

    compute = [timed_sync(functools.partial(estimator.predict_proba, [text])) for text in lone]
    for backend in ("asyncio", "trio"):
        latencies = anyio.run(lone_calls, backend=backend)
        overhead = [lat - own for lat, own in zip(latencies, compute, strict=True)]
        print(
            f"\nlone classify on {backend}: p50 {statistics.median(latencies) * 1e3:.2f} ms, "
            f"p99 {percentile(latencies, 0.99) * 1e3:.2f} ms; own compute p50 "
            f"{statistics.median(compute) * 1e3:.2f} ms; overhead p50 "
            f"{statistics.median(overhead) * 1e3:.2f} ms (max_latency "
            f"{clf.max_latency * 1e3:.1f} ms)"
        )

    # Event-loop lag while streaming.
    for backend in ("asyncio", "trio"):

        async def lagged() -> list[float]:
            samples: list[float] = []
            stop = anyio.Event()
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(lag_monitor, samples, stop)
                await stream()
                stop.set()
            return samples

        samples = anyio.run(lagged, backend=backend)
        print(
            f"event-loop lag while streaming on {backend}: p50 "
            f"{statistics.median(samples) * 1e3:.2f} ms, p99 {percentile(samples, 0.99) * 1e3:.2f}"
            f" ms, max {max(samples) * 1e3:.2f} ms ({len(samples)} samples)"
        )

    # Memory growth while streaming: short SMS texts so that 200,000 take seconds.
    sms = [r["text"] for r in load("sms_spam")]
    sms_labels = [r["label"] for r in load("sms_spam")]
    small: AsyncClassifier = anyio.run(lambda: AsyncClassifier().fit(sms, sms_labels))

    def endless(n: int) -> Iterator[str]:
        for i in range(n):
            yield sms[i % len(sms)]

    async def stream_n(n: int) -> tuple[int, float]:
        count = 0
        tracemalloc.start()
        tracemalloc.reset_peak()
        base_mem, _ = tracemalloc.get_traced_memory()
        started = time.perf_counter()
        async with small.stream(endless(n)) as results:
            async for _ in results:
                count += 1
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert count == n
        return peak - base_mem, time.perf_counter() - started

    print()
    for n in (20_000, 200_000) if not args.quick else (2_000, 20_000):
        growth, seconds = anyio.run(stream_n, n)
        print(
            f"streaming {n:,} SMS texts: peak traced memory growth {growth / 2**20:.2f} MiB "
            f"({seconds:.1f} s)"
        )


if __name__ == "__main__":
    main()
