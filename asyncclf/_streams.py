"""Ordered, bounded streams of predictions over sync or async iterables.

Inside ``open_stream`` three parties pass items along two bounded channels::

    reader --(queued requests)--> driver --(outcomes)--> consumer

* the reader pulls texts from the source, checks them, and queues each in the
  batcher's lane at once (so batches fill), then passes it on, waiting when
  ``max_in_flight`` items are ahead of the consumer: that is the backpressure;
* the driver waits for each request in order, leading the lane's batches, so the
  next batch computes while the consumer handles the last one;
* the consumer (the caller's ``async for``) turns each outcome into a result.

Leaving the ``async with`` block cancels reader and driver and withdraws every request
still queued, so nothing keeps running for a stream that nobody reads.
"""

from __future__ import annotations

from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Hashable,
    Iterable,
)
from contextlib import aclosing, asynccontextmanager
from typing import Any, Generic, Literal, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._batching import Batcher, Outcome, Request
from ._errors import InvalidInputError
from ._validation import check_text

__all__ = ["open_stream"]

T = TypeVar("T")
Convert = Callable[[int, str, Any, Any], T]
"""``(index, text, row, tag) -> result`` for a text the estimator answered."""
Fail = Callable[[int, str, Exception, Any], T]
"""``(index, text, error, tag) -> result`` for a text that failed, with on_error="yield"."""

# What travels the channels: a text and its request, or the error to raise at that point.
_Queued = tuple[int, str, "Request | None", "Exception | None"]
_Done = tuple[int, str, "Outcome | None", "Exception | None"]


async def _iterate(source: Iterable[str] | AsyncIterable[str]) -> AsyncGenerator[Any, None]:
    if isinstance(source, AsyncIterable):
        async for item in source:
            yield item
    elif isinstance(source, Iterable):
        for item in source:
            yield item
    else:
        msg = f"source must be an iterable or async iterable of str, not {type(source).__name__}."
        raise InvalidInputError(msg)


class _Results(Generic[T]):
    """The async iterator a stream yields: one result per input, in order."""

    def __init__(
        self,
        receive: MemoryObjectReceiveStream[_Done],
        convert: Convert[T],
        fail: Fail[T] | None,
    ) -> None:
        self._receive = receive
        self._convert = convert
        self._fail = fail
        self._finished = False

    def __aiter__(self) -> _Results[T]:
        return self

    async def __anext__(self) -> T:
        if self._finished:
            raise StopAsyncIteration
        try:
            index, text, outcome, error = await self._receive.receive()
        except anyio.EndOfStream:
            self._finished = True
            raise StopAsyncIteration from None
        tag = None
        if outcome is not None:
            tag, error = outcome.tag, outcome.error
            if error is None:
                return self._convert(index, text, outcome.rows()[0], tag)
        assert error is not None
        if self._fail is None or index < 0:
            self._finished = True
            raise error
        return self._fail(index, text, error, tag)


@asynccontextmanager
async def open_stream(
    batcher: Batcher,
    key: Hashable,
    source: Iterable[str] | AsyncIterable[str],
    convert: Convert[T],
    *,
    on_error: Literal["raise", "yield"] = "raise",
    fail: Fail[T] | None = None,
    max_in_flight: int,
) -> AsyncIterator[_Results[T]]:
    """Stream ``convert``-ed results for the texts of ``source``; see the module docs."""
    if on_error not in ("raise", "yield"):
        msg = f"on_error must be 'raise' or 'yield', not {on_error!r}."
        raise ValueError(msg)
    if isinstance(max_in_flight, bool) or not isinstance(max_in_flight, int) or max_in_flight < 1:
        msg = f"max_in_flight must be an int >= 1, not {max_in_flight!r}."
        raise ValueError(msg)
    pending: deque[Request] = deque()
    # The reader holds one item and the driver one, beyond the channels' buffers.
    queued_send, queued_receive = anyio.create_memory_object_stream[_Queued](
        max(0, max_in_flight // 2 - 1)
    )
    done_send, done_receive = anyio.create_memory_object_stream[_Done](
        max(0, max_in_flight - max_in_flight // 2 - 1)
    )

    async def read(send: MemoryObjectSendStream[_Queued]) -> None:
        async with send, aclosing(_iterate(source)) as items:
            index = 0
            try:
                async for item in items:
                    try:
                        text = check_text(item, index)
                    except InvalidInputError as exc:
                        await send.send((index, "" if item is None else repr(item), None, exc))
                    else:
                        await batcher.reserve(1, wait=True)
                        request = batcher.enqueue(key, [text])
                        pending.append(request)
                        await send.send((index, text, request, None))
                    index += 1
            except Exception as exc:
                # The source itself failed: the consumer raises it in its turn.
                await send.send((-1, "", None, exc))

    async def drive(
        receive: MemoryObjectReceiveStream[_Queued], send: MemoryObjectSendStream[_Done]
    ) -> None:
        async with receive, send:
            async for index, text, request, error in receive:
                outcome = None
                if request is not None:
                    outcome = await batcher.wait(request)
                    pending.popleft()
                await send.send((index, text, outcome, error))

    fail_or_raise = fail if on_error == "yield" else None
    raised: BaseException | None = None
    with done_receive:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(read, queued_send)
            tasks.start_soon(drive, queued_receive, done_send)
            try:
                yield _Results(done_receive, convert, fail_or_raise)
            except BaseException as exc:
                # Re-raised below, outside the task group, so that the caller gets its
                # own exception rather than one wrapped in an exception group.
                raised = exc
            finally:
                tasks.cancel_scope.cancel()
                while pending:
                    batcher.withdraw(pending.popleft())
    if raised is not None:
        raise raised
