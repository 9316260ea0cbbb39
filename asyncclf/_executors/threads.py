"""Where the estimator's synchronous code runs by default: worker threads of this process."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.from_thread

from .base import _POOL, Executor

T = TypeVar("T")


class ThreadExecutor(Executor):
    """Run the estimator in worker threads of this process, under one limiter.

    The default (``executor="threads"``). Each call holds a token of the classifier's
    own :class:`anyio.CapacityLimiter` while its thread runs (never anyio's global
    40-thread default), carries the caller's ``sklearn.get_config()`` into the thread
    (scikit-learn's configuration is thread-local) and caps BLAS/OpenMP threads.

    Args:
        limiter: The limiter calls share; ``None`` makes one with a token per CPU (at
            least 2, so that a prediction never waits behind a fit).
    """

    def submit(self, call: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run ``call()`` in a thread of asyncclf's pool."""
        return _POOL.submit(call)

    async def fit(
        self,
        func: Callable[..., Any],
        *args: Any,
        on_step: Callable[[int], object] | None = None,
    ) -> Any:
        """Run a fit in a worker thread and return the fitted estimator.

        ``training.fit`` given ``on_step`` fits a scikit-learn ``Pipeline`` a step at
        a time and calls ``on_step(n)`` on the event loop as each step ends; a
        cancelled fit stops at the next step's end. Otherwise cancelling takes effect
        when the thread finishes, and the result is discarded.
        """
        if on_step is not None:
            report = on_step

            def step_done(done: int) -> None:  # in the worker thread
                anyio.from_thread.check_cancelled()  # a cancelled fit stops here
                anyio.from_thread.run_sync(report, done)

            args += (step_done,)
        return await self.run(func, *args)
