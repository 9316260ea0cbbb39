"""The parent side of :class:`~asyncclf.DaskExecutor`'s traffic with a cluster: model
versions sent once, a fit's cancellable submission, the client's errors, and Dask
imported only when first needed (an optional extra)."""

from __future__ import annotations

import contextlib
import functools
import importlib
import threading
import uuid
from collections.abc import Iterator
from typing import Any

from .._errors import AsyncClfError
from .._work import packing
from .._work.cluster import DaskModel

INSTALL = "DaskExecutor needs dask.distributed: pip install 'asyncclf[dask]'."


@contextlib.contextmanager
def reaching(address: str) -> Iterator[None]:
    """Turn the client's failure to reach the scheduler into an ``AsyncClfError``."""
    try:
        yield
    except (OSError, distributed_module("client").ClosedClientError) as exc:
        msg = f"The Dask scheduler at {address!r} cannot be reached: {exc}"
        raise AsyncClfError(msg) from exc


def shipments_in(args: tuple[Any, ...]) -> list[Shipment]:
    """The model versions named in ``args``: directly, or by a batch's partial."""
    found: list[Shipment] = []
    for arg in args:
        inner = arg.args if isinstance(arg, functools.partial) else (arg,)
        found.extend(item for item in inner if isinstance(item, Shipment))
    return found


def scatter_lists(client: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """``args`` with its lists (a fit's texts and labels) scattered: Dask resolves the
    futures in the worker, and the task stays small (Dask warns past 10 MB)."""
    at = [i for i, arg in enumerate(args) if isinstance(arg, list)]
    if not at:
        return args
    futures = client.scatter([args[i] for i in at], hash=False)
    replaced = list(args)
    for i, future in zip(at, futures, strict=True):
        replaced[i] = future
    return tuple(replaced)


def distributed_module(module: str = "") -> Any:
    """``distributed`` (or its ``module``), imported on first use: an optional extra."""
    try:
        return importlib.import_module(f"distributed.{module}" if module else "distributed")
    except ImportError as exc:
        raise ModuleNotFoundError(INSTALL, name="distributed") from exc


def close_client(client: Any) -> None:
    with contextlib.suppress(Exception):
        client.close()


class Submission:
    """A fit's Dask future, so that a cancelled caller can cancel it from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._future: Any = None
        self._cancelled = False

    def started(self, future: Any) -> bool:
        """Record ``future``; False (and cancel it) if the caller was cancelled first."""
        with self._lock:
            self._future = future
            if not self._cancelled:
                return True
        future.cancel()
        return False

    @property
    def cancelled(self) -> bool:
        """Whether the caller was cancelled."""
        return self._cancelled

    def cancel(self) -> None:
        """Cancel the future, now or as soon as it is submitted."""
        with self._lock:
            self._cancelled = True
            future = self._future
        if future is not None:
            with contextlib.suppress(Exception):
                future.cancel()


# -- a model version on its way to the cluster ---------------------------------------


class Shipment(DaskModel):
    """A model version sent to the cluster once, on demand, as pickled packed bytes.

    Pickled, it is a :class:`DaskModel` (its key). It keeps the estimator (the served
    model holds it anyway), so a version lost with every worker holding it is sent
    again. The scattered data is released when the served model is gone.
    """

    __slots__ = ("_estimator", "_future", "_lock")

    def __init__(self, estimator: Any) -> None:
        super().__init__(uuid.uuid4().hex)
        self._estimator = estimator
        self._future: Any = None
        self._lock = threading.Lock()

    @property
    def sent(self) -> bool:
        """Whether the model's bytes were scattered to the cluster (and not forgotten)."""
        return self._future is not None

    def scattered(self, client: Any) -> Any:
        """The future of the model's bytes on the cluster, scattered if needed (in a thread)."""
        with self._lock:
            if self._future is None or self._future.status != "finished":
                # Dask's own pickling: cloudpickle for what plain pickle would name by
                # reference but a worker cannot import (classes defined in __main__).
                content = distributed_module("protocol.pickle").dumps(packing.pack(self._estimator))
                [self._future] = client.scatter([content], broadcast=True, hash=False)
            return self._future

    def forget(self, future: Any) -> None:
        """Scatter the bytes again next time, unless another task did since ``future``."""
        with self._lock:
            if self._future is future:
                self._future = None

    def release(self) -> None:
        with self._lock:
            self._future = None
