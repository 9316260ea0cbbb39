"""Coalesce concurrent prediction calls into vectorised estimator calls.

How a batch forms, with no background task:

* A call puts a :class:`Request` (its texts) in the *lane* of its kind of computation
  and waits. Requests of one lane are answered in arrival order.
* Whoever waits while the lane has no leader becomes its leader. The leader waits up to
  ``max_latency`` for the lane to fill to ``max_batch_size`` texts, then for a limiter
  token, takes as many requests from the front as fit in ``max_batch_size`` and hands
  leadership on to the next waiting request, so the next batch forms while this one
  runs. Under load, requests pile up while every token is busy and batches grow on
  their own.
* The batch runs in a worker thread, shielded from cancellation, so a leader cancelled
  mid-run still delivers everybody else's results. If the estimator raises, the batch
  is bisected in the same thread until every failing text is found: only the request
  holding it gets the exception, everyone else gets a correct result.
* A request cancelled while queued is withdrawn before any batch takes it; one cancelled
  while its batch runs loses only its own result.

Calls with more than ``max_batch_size`` texts skip the queue and run in chunks of that
size: they are already vectorised.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Literal

import anyio
import anyio.lowlevel
import numpy as np

from ._errors import AsyncClfError, OverloadedError
from ._executors import ThreadExecutor
from ._types import BatchStatistics

__all__ = ["Batcher", "Outcome", "Request"]

Compute = Callable[[list[str]], Any]
"""A vectorised function of a list of texts returning one row per text."""
Prepare = Callable[[Hashable], tuple[Compute, Any]]
"""Given a lane key, return the function to run now and a tag (the model) for results."""

# A run of consecutive texts [start, stop) of one batch and its rows, or the exception
# the estimator raised for that (single) text.
Segment = tuple[int, int, Any]


class Outcome:
    """The rows computed for one request and the tag (model) that computed them."""

    __slots__ = ("segments", "tag")

    def __init__(self, segments: list[Segment], tag: Any) -> None:
        self.segments = segments
        self.tag = tag

    @property
    def error(self) -> Exception | None:
        """The first failure among this request's texts, if any."""
        for _, _, rows in self.segments:
            if isinstance(rows, Exception):
                return rows
        return None

    def rows(self) -> Any:
        """Return the rows for the request's texts, or raise the first failure."""
        error = self.error
        if error is not None:
            raise error
        if len(self.segments) == 1:
            return self.segments[0][2]
        return np.concatenate([rows for _, _, rows in self.segments])


class Request:
    """Texts waiting in a lane for their rows."""

    __slots__ = ("event", "lane", "outcome", "queued_at", "taken", "texts")

    def __init__(self, lane: _Lane, texts: list[str]) -> None:
        self.lane = lane
        self.texts = texts
        self.outcome: Outcome | None = None
        self.event: anyio.Event | None = None
        self.queued_at = time.perf_counter()
        self.taken = False
        """Whether a batch took it (or it was withdrawn): it can no longer grow."""

    def _wake(self) -> None:
        if self.event is not None:
            self.event.set()


@dataclass(eq=False)
class _Lane:
    key: Hashable
    queue: deque[Request] = field(default_factory=deque)
    size: int = 0
    leading: bool = False
    full: anyio.Event | None = None


def run_isolated(compute: Compute, texts: list[str]) -> tuple[list[Segment], int]:
    """Run ``compute`` on ``texts``; bisect on failure to blame single texts.

    Returns the segments covering ``texts`` in order and the number of calls made.
    """
    segments: list[Segment] = []
    calls = 0

    def attempt(start: int, stop: int) -> None:
        nonlocal calls
        calls += 1
        chunk = texts if stop - start == len(texts) else texts[start:stop]
        try:
            rows = compute(chunk)
            if len(rows) != stop - start:
                msg = f"The estimator returned {len(rows)} rows for {stop - start} texts."
                raise AsyncClfError(msg)
        except Exception as exc:
            if stop - start == 1:
                segments.append((start, stop, exc))
                return
            middle = (start + stop) // 2
            attempt(start, middle)
            attempt(middle, stop)
        else:
            segments.append((start, stop, rows))

    attempt(0, len(texts))
    return segments, calls


def _slice(segments: list[Segment], start: int, stop: int) -> list[Segment]:
    """The parts of ``segments`` that cover [start, stop), renumbered from 0."""
    picked: list[Segment] = []
    for seg_start, seg_stop, rows in segments:
        lo, hi = max(start, seg_start), min(stop, seg_stop)
        if lo >= hi:
            continue
        if not isinstance(rows, BaseException) and (lo, hi) != (seg_start, seg_stop):
            rows = rows[lo - seg_start : hi - seg_start]
        picked.append((lo - start, hi - start, rows))
    return picked


class _Summary:
    """Count, mean and maximum of a series, in O(1) memory."""

    __slots__ = ("count", "maximum", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.maximum = 0.0

    def add(self, value: float, weight: int = 1) -> None:
        self.count += weight
        self.total += value * weight
        self.maximum = max(self.maximum, value)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


class Batcher:
    """Merge requests into batches bounded by size and latency; see the module docs."""

    def __init__(
        self,
        executor: ThreadExecutor,
        prepare: Prepare,
        *,
        max_batch_size: int,
        max_latency: float,
        max_queue: int,
        overload: Literal["wait", "raise"],
    ) -> None:
        self.executor = executor
        self.prepare = prepare
        self.max_batch_size = max_batch_size
        self.max_latency = max_latency
        self.max_queue = max_queue
        self.overload = overload
        self._lanes: dict[Hashable, _Lane] = {}
        self._queued = 0
        self._room: anyio.Event | None = None
        self._batches = 0
        self._items = 0
        self._failed = 0
        self._sizes = _Summary()
        self._waits = _Summary()
        self._runs = _Summary()

    # -- queue capacity -------------------------------------------------------------

    async def reserve(self, n: int, *, wait: bool | None = None) -> None:
        """Wait until ``n`` more texts fit in the queue, or raise ``OverloadedError``.

        ``wait`` overrides the ``overload`` setting (streams always wait).
        """
        if wait is None:
            wait = self.overload == "wait"
        while self._queued + n > self.max_queue and self._queued > 0:
            if not wait:
                msg = (
                    f"The queue holds {self._queued} texts and max_queue is {self.max_queue}; "
                    f"retry later, raise max_queue, or use overload='wait'."
                )
                raise OverloadedError(msg)
            if self._room is None:
                self._room = anyio.Event()
            await self._room.wait()
        self._queued += n

    def _release(self, n: int) -> None:
        self._queued -= n
        if self._room is not None:
            self._room.set()
            self._room = None

    # -- requests -------------------------------------------------------------------

    def enqueue(self, key: Hashable, texts: list[str]) -> Request:
        """Queue ``texts`` (already ``reserve``d) in the lane ``key``; do not wait."""
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = _Lane(key)
        request = Request(lane, texts)
        lane.queue.append(request)
        lane.size += len(texts)
        if lane.full is not None and lane.size >= self.max_batch_size:
            lane.full.set()
        return request

    def extend(self, request: Request, text: str) -> bool:
        """Add one (``reserve``d) text to a request still queued and not full.

        Returns False, adding nothing, when a batch has taken the request or it holds
        ``max_batch_size`` texts: then queue a new request instead. Streams use this to
        queue texts one by one at the cost of a list append.
        """
        if request.taken or len(request.texts) >= self.max_batch_size:
            return False
        request.texts.append(text)
        lane = request.lane
        lane.size += 1
        if lane.full is not None and lane.size >= self.max_batch_size:
            lane.full.set()
        return True

    def withdraw(self, request: Request) -> None:
        """Take a request that nobody will wait for out of its lane, if still queued."""
        lane = request.lane
        if not request.taken:
            request.taken = True
            lane.queue.remove(request)
            lane.size -= len(request.texts)
            self._release(len(request.texts))

    async def wait(self, request: Request) -> Outcome:
        """Wait for ``request``'s outcome, leading batches when the lane needs a leader.

        Cancelling withdraws the request if no batch has taken it yet; a batch already
        running completes for everybody else.
        """
        lane = request.lane
        try:
            while request.outcome is None:
                if not lane.leading:
                    await self._lead(lane)
                else:
                    request.event = anyio.Event()
                    await request.event.wait()
                    request.event = None
        except BaseException:
            request.event = None
            self.withdraw(request)
            if not lane.leading:
                self._wake_next(lane)
            raise
        return request.outcome

    async def submit(self, key: Hashable, texts: list[str]) -> Outcome:
        """Compute the rows for ``texts`` in lane ``key``, batched with other callers."""
        if len(texts) > self.max_batch_size:
            return await self._run_chunks(key, texts)
        await self.reserve(len(texts))
        return await self.wait(self.enqueue(key, texts))

    # -- batches --------------------------------------------------------------------

    def _wake_next(self, lane: _Lane) -> None:
        """Hand leadership of ``lane`` to the first request that has a waiter."""
        for request in lane.queue:
            if request.event is not None:
                request.event.set()
                return

    async def _lead(self, lane: _Lane) -> None:
        lane.leading = True
        try:
            if lane.size < self.max_batch_size and self.max_latency > 0:
                lane.full = anyio.Event()
                with anyio.move_on_after(self.max_latency):
                    await lane.full.wait()
                lane.full = None
            async with self.executor.slot():
                batch = self._take(lane)
                lane.leading = False
                self._wake_next(lane)
                if batch:
                    with anyio.CancelScope(shield=True):
                        await self._run(lane.key, batch)
            # A leader cancelled while its batch ran has delivered everybody's results;
            # now it takes its own cancellation.
            await anyio.lowlevel.checkpoint_if_cancelled()
        finally:
            lane.full = None
            if lane.leading:
                lane.leading = False
                self._wake_next(lane)

    def _take(self, lane: _Lane) -> list[Request]:
        batch: list[Request] = []
        size = 0
        now = time.perf_counter()
        while lane.queue and size + len(lane.queue[0].texts) <= self.max_batch_size:
            request = lane.queue.popleft()
            request.taken = True
            size += len(request.texts)
            batch.append(request)
            self._waits.add(now - request.queued_at, len(request.texts))
        lane.size -= size
        self._release(size)
        return batch

    async def _run(self, key: Hashable, batch: list[Request]) -> None:
        """Run ``batch`` (holding a token) and give every request its outcome."""
        texts = batch[0].texts if len(batch) == 1 else [t for r in batch for t in r.texts]
        try:
            compute, tag = self.prepare(key)
            segments = await self._compute(compute, texts)
        except BaseException as exc:
            # Nothing may hang: every request learns that its batch could not run.
            failure = (
                exc
                if isinstance(exc, Exception)
                else AsyncClfError(f"The batch was interrupted by {exc!r}.")
            )
            for request in batch:
                request.outcome = Outcome([(0, len(request.texts), failure)], None)
                request._wake()
            if failure is exc:
                return
            raise
        start = 0
        for request in batch:
            stop = start + len(request.texts)
            request.outcome = Outcome(_slice(segments, start, stop), tag)
            request._wake()
            start = stop

    async def _compute(self, compute: Compute, texts: list[str]) -> list[Segment]:
        started = time.perf_counter()
        segments, calls = await self.executor.run_in_slot(run_isolated, compute, texts)
        self._runs.add(time.perf_counter() - started)
        self._batches += calls
        self._items += len(texts)
        self._sizes.add(len(texts))
        self._failed += sum(
            stop - start for start, stop, rows in segments if isinstance(rows, BaseException)
        )
        return segments

    async def _run_chunks(self, key: Hashable, texts: list[str]) -> Outcome:
        """Run a call larger than a batch in ``max_batch_size`` chunks, one at a time.

        The model is chosen once, so every chunk is answered by the same model.
        """
        compute, tag = self.prepare(key)
        segments: list[Segment] = []
        for start in range(0, len(texts), self.max_batch_size):
            chunk = texts[start : start + self.max_batch_size]
            async with self.executor.slot():
                chunk_segments = await self._compute(compute, chunk)
            segments.extend((start + a, start + b, rows) for a, b, rows in chunk_segments)
        return Outcome(segments, tag)

    # -- observability --------------------------------------------------------------

    def statistics(self) -> BatchStatistics:
        """Return a snapshot of the counters."""
        return BatchStatistics(
            batches=self._batches,
            items=self._items,
            failed_items=self._failed,
            queue_depth=self._queued,
            max_batch_size_seen=int(self._sizes.maximum),
            mean_batch_size=self._sizes.mean,
            mean_wait=self._waits.mean,
            max_wait=self._waits.maximum,
            mean_run=self._runs.mean,
            max_run=self._runs.maximum,
        )
