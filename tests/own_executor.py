"""An executor written from docs/scaling.md alone: the public seam, nothing private."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import TypeVar

import anyio

import asyncclf

T = TypeVar("T")


class OwnThreadsExecutor(asyncclf.Executor):
    """Runs each call on a thread of its own, started by hand: no pool, no delegation."""

    def __init__(self, limiter: anyio.CapacityLimiter | None = None) -> None:
        super().__init__(limiter)
        self.submitted = 0

    def submit(self, call: Callable[[], T]) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to the caller through the future
                future.set_exception(exc)

        threading.Thread(target=run, name="own-executor", daemon=True).start()
        self.submitted += 1
        return future
