"""Stream throughput on threads and on a Dask cluster, side by side in one run.

Usage: python benchmarks/dask_stream.py [--quick]

Fits the default ``AsyncClassifier`` on the 20 Newsgroups training set (in threads),
then serves that same model from threads and from ``DaskExecutor`` on a
``LocalCluster`` of two single-threaded worker processes (loopback only). Prints the
throughput of ``stream`` over the test set as a ratio of one single-thread vectorised
``predict_proba`` over the same texts, on asyncio and trio: each ratio is the median
of back-to-back pairs (sync time / stream time), so the machine's drift cancels. The
cluster is measured with its default limiter (a token per worker thread) and with
twice that, which keeps a batch queued behind each running one. Also
prints what crosses to each worker once per model version, how long the first
stream took (the one that sends the model), and what a plain process pool of as many
processes gets from the machine at that moment over the same texts (no asyncclf, no
Dask): on a shared machine two busy processes do not always get two cores.
"""

from __future__ import annotations

import argparse
import functools
import pickle
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from _data import news_split
from _pool import machine_pool, pool_ceiling
from distributed import Client, LocalCluster

from asyncclf import AsyncClassifier, DaskExecutor
from asyncclf._work import packing


def timed_sync(func: Callable[[], Any]) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def paired(repeats: int, baseline: Callable[[], float], variant: Callable[[], float]) -> float:
    """Median of baseline/variant time ratios, each pair measured back to back."""
    return statistics.median(baseline() / variant() for _ in range(repeats))


def timed_stream(
    clf: AsyncClassifier, texts: list[str], backend: str, tokens: int | None = None
) -> float:
    """Seconds to stream ``texts``; with ``tokens``, under a limiter of that many tokens
    (the default read-ahead then has room for a batch per token and one filling)."""

    async def stream() -> float:
        # A limiter belongs to one event loop: a new one in each run, or the default.
        clf.set_params(limiter=None if tokens is None else anyio.CapacityLimiter(tokens))
        started = time.perf_counter()
        count = 0
        async with clf.stream(texts) as results:
            async for _ in results:
                count += 1
        assert count == len(texts)
        return time.perf_counter() - started

    elapsed: float = anyio.run(stream, backend=backend)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer texts and repeats")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    train_x, train_y, test_x, _ = news_split()
    texts = test_x[:1500] if args.quick else test_x

    async def fit() -> AsyncClassifier:
        return await AsyncClassifier().fit(train_x, train_y)

    started = time.perf_counter()
    threads: AsyncClassifier = anyio.run(fit)
    print(f"fit on {len(train_x)} texts in threads: {time.perf_counter() - started:.1f} s")
    estimator = threads.estimator_
    packed = pickle.dumps(packing.pack(estimator), protocol=pickle.HIGHEST_PROTOCOL)
    print(f"a model version crosses to each worker once: {len(packed) / 2**20:.1f} MiB")

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "news.skops"
        digest = anyio.run(threads.save, path)
        cluster = LocalCluster(  # type: ignore[no-untyped-call]
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",  # a free port: 8787 may be taken
        )
        with cluster, Client(cluster) as client:  # type: ignore[no-untyped-call]

            async def load() -> AsyncClassifier:
                # The same model, served from the cluster.
                return await AsyncClassifier.load(
                    path, sha256=digest, executor=DaskExecutor(client)
                )

            on_dask: AsyncClassifier = anyio.run(load)
            first = timed_stream(on_dask, texts, "asyncio")
            print(
                f"first stream on the cluster (sends the model, workers unpickle it): "
                f"{first:.2f} s for {len(texts)} texts"
            )

            def sync() -> float:
                return timed_sync(functools.partial(estimator.predict_proba, texts))

            for backend in ("asyncio", "trio"):  # warm up threads, caches, both loops
                timed_stream(threads, texts, backend)
                timed_stream(on_dask, texts, backend)
            sync()
            rows = []
            with machine_pool(estimator, 2) as pool:
                for backend in ("asyncio", "trio"):
                    for name, clf, tokens in (
                        ("threads", threads, None),
                        ("DaskExecutor, 2 x 1 thread", on_dask, None),
                        ("  the same, 4 tokens", on_dask, 4),
                    ):
                        variant = functools.partial(timed_stream, clf, texts, backend, tokens)
                        rows.append((backend, name, paired(repeats, sync, variant)))
                    ceilings = [
                        pool_ceiling(pool, estimator, texts, threads.max_batch_size)
                        for _ in range(repeats)
                    ]
                    rows.append(("", "plain pool of 2 processes", statistics.median(ceilings)))
            base = min(sync() for _ in range(repeats))

    print(f"\n20 Newsgroups test texts: {len(texts)}")
    print(f"sync vectorised predict_proba: {len(texts) / base:,.0f} texts/s (the 1.00 mark)")
    print("stream throughput as a ratio of it (higher is better):")
    for backend, name, ratio in rows:
        print(f"  {backend:8} {name:28} {ratio:5.2f}")


if __name__ == "__main__":
    main()
