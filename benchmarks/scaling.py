"""Threads against worker processes, side by side in one run (20 Newsgroups, default).

Usage: python benchmarks/scaling.py [--quick]

Prints, for ``executor="threads"`` and ``executor="processes"`` (one worker per core):
the event loop's longest stall while the 20 Newsgroups fit runs, how long a cancelled
fit takes to return, stream and 5,000-caller ``classify`` throughput as ratios of one
single-thread vectorised ``predict_proba`` over the same texts (the median of three
back-to-back pairs), and the resident memory of each worker process.

Beside the processes' figures it prints what the machine gives at that moment: a plain
``concurrent.futures.ProcessPoolExecutor`` with as many processes, mapping
``predict_proba`` over the same texts in ``max_batch_size`` chunks (no asyncclf), as
a ratio of the same single-thread call. On a shared machine this ceiling moves from
run to run (two busy processes do not always get two cores), so compare the two.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_process
import anyio.to_thread
from _data import news_split
from _pool import machine_pool, pool_ceiling
from throughput import lag_monitor, timed_sync

from asyncclf import AsyncClassifier
from asyncclf._executors.processes import _Shipment
from asyncclf._work.handles import ModelHandle


def worker_rss() -> list[float]:
    """MiB resident in each of anyio's worker processes, children of this one."""
    me = os.getpid()
    sizes = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != me:
                continue
            if b"anyio" not in (stat.parent / "cmdline").read_bytes():
                continue  # the ceiling's pool
            status = (stat.parent / "status").read_text()
        except (OSError, IndexError, ValueError):
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                sizes.append(int(line.split()[1]) / 1024)
    return sorted(sizes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer texts and repeats")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    train_x, train_y, test_x, _ = news_split()
    texts = test_x[:1500] if args.quick else test_x
    callers = texts[:5000]
    workers = len(os.sched_getaffinity(0))

    with contextlib.ExitStack() as stack:
        for executor in ("threads", "processes"):
            clf = AsyncClassifier(executor=executor)
            samples: list[float] = []

            async def fit(clf: AsyncClassifier = clf, samples: list[float] = samples) -> float:
                stop = anyio.Event()
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(lag_monitor, samples, stop)
                    started = time.perf_counter()
                    await clf.fit(train_x, train_y)
                    elapsed = time.perf_counter() - started
                    stop.set()
                return elapsed

            elapsed = anyio.run(fit)
            p99 = statistics.quantiles(samples, n=100)[-1]
            print(
                f"{executor:9}: 20 Newsgroups fit {elapsed:.2f} s; event-loop stall during it: "
                f"max {max(samples) * 1e3:.1f} ms, p99 {p99 * 1e3:.1f} ms "
                f"({len(samples)} wake-ups of a 5 ms sleeper)"
            )

            async def cancelled_fit(clf: AsyncClassifier = clf) -> tuple[float, int]:
                version = clf.version
                with anyio.move_on_after(1.0):
                    await clf.fit(train_x, train_y)
                cancelled_at = time.perf_counter()
                return cancelled_at, version

            started = time.perf_counter()
            returned, version = anyio.run(cancelled_fit)
            late = returned - started - 1.0
            print(
                f"{executor:9}: a fit cancelled after 1 s returned {late:.2f} s after the "
                f"cancellation; model version still {clf.version} (was {version})"
            )

            estimator = clf.estimator_
            written, size, loaded, lone = anyio.run(shipping, clf, texts[0])
            if executor == "processes":
                print(
                    f"processes: a model version crosses once: file written in {written:.2f} s "
                    f"({size:.1f} MiB), loaded by a worker in {loaded:.2f} s"
                )
            print(
                f"{executor:9}: a lone one-text classify (max_latency=0): p50 {lone * 1e3:.1f} ms"
            )
            if executor == "processes":
                pool = stack.enter_context(machine_pool(estimator, workers))

            async def throughput(
                clf: AsyncClassifier = clf, estimator: Any = estimator
            ) -> tuple[float, float, list[float]]:
                # One event loop for all of it: worker processes live as long as their loop.
                async def stream() -> None:
                    async with clf.stream(texts) as results:
                        async for _ in results:
                            pass

                async def concurrent() -> None:
                    async def one(text: str) -> None:
                        await clf.classify(text)

                    async with anyio.create_task_group() as tasks:
                        for text in callers:
                            tasks.start_soon(one, text)

                async def ratio(job: Callable[[], Awaitable[None]], batch: list[str]) -> float:
                    ratios = []
                    for _ in range(repeats):
                        base = timed_sync(functools.partial(estimator.predict_proba, batch))
                        started = time.perf_counter()
                        await job()
                        ratios.append(base / (time.perf_counter() - started))
                    return statistics.median(ratios)

                await stream()  # warm up: workers start, the model ships to each
                return await ratio(stream, texts), await ratio(concurrent, callers), worker_rss()

            for backend in ("asyncio", "trio"):
                streamed, crowd, rss = anyio.run(throughput, backend=backend)
                print(
                    f"{executor:9} on {backend:7}: stream {streamed:.2f}, {len(callers)} "
                    f"concurrent classify {crowd:.2f} (x one single-thread vectorised "
                    "predict_proba)"
                )
                if executor == "processes":
                    sizes = ", ".join(f"{size:.0f}" for size in rss)
                    print(f"  worker processes' resident memory (MiB): {sizes}")
                    ceilings = [
                        pool_ceiling(pool, estimator, texts, clf.max_batch_size)
                        for _ in range(repeats)
                    ]
                    print(
                        f"  the machine now: a plain pool of {workers} processes over the same "
                        f"chunks {statistics.median(ceilings):.2f} "
                        f"({', '.join(f'{c:.2f}' for c in ceilings)})"
                    )


def _resolve_timed(key: str, path: str) -> float:
    """In a worker process: seconds to load a model version from its file."""
    started = time.perf_counter()
    ModelHandle(key, path).resolve()
    return time.perf_counter() - started


async def shipping(clf: AsyncClassifier, text: str) -> tuple[float, float, float, float]:
    """What a model version costs to cross to a worker, and a batch on top: the seconds
    to write its file (once per version), its size in MiB, the seconds a worker takes
    to load it (once per worker), and the median latency of a lone one-text batch."""
    with tempfile.TemporaryDirectory() as directory:
        shipment = _Shipment(clf.estimator_, directory)
        started = time.perf_counter()
        await anyio.to_thread.run_sync(shipment.write)
        written = time.perf_counter() - started
        size = (await anyio.Path(shipment.path).stat()).st_size / 2**20
        loaded = await anyio.to_process.run_sync(_resolve_timed, shipment.key, shipment.path)
    clf.set_params(max_latency=0)
    await clf.classify(text)  # workers started, the model loaded
    latencies = []
    for _ in range(30):
        started = time.perf_counter()
        await clf.classify(text)
        latencies.append(time.perf_counter() - started)
    clf.set_params(max_latency=0.002)
    return written, size, loaded, statistics.median(latencies)


if __name__ == "__main__":
    main()
