"""Where a command's model runs: the executor or limiter --executor and --workers choose."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

import anyio

from .._errors import AsyncClfError
from .._executors.processes import ProcessExecutor
from .errors import CommandError, failure

Placement = dict[str, Any]
"""The ``executor=`` and ``limiter=`` arguments of every classifier a command makes."""

DASK = "tcp://"
"""How ``--executor dask://HOST:PORT`` is stored: as the scheduler's address."""


def placement(
    executor: str, workers: int | None
) -> Callable[[], AbstractAsyncContextManager[Placement]]:
    """Return what makes a command's executor, in the event loop (limiters need one).

    Dask support is looked up now, before any work: it is optional (``asyncclf[dask]``).
    """

    @asynccontextmanager
    async def local() -> AsyncIterator[Placement]:
        if executor == "processes":
            yield {"executor": ProcessExecutor(max_workers=workers)}
        else:
            yield {"limiter": None if workers is None else anyio.CapacityLimiter(workers)}

    if executor in ("threads", "processes"):
        return local
    try:  # at run time: importing distributed is for dask:// alone
        from .._executors.dask import DaskExecutor
    except ImportError:
        raise _no_dask() from None
    if importlib.util.find_spec("distributed") is None:
        raise _no_dask()

    @asynccontextmanager
    async def cluster() -> AsyncIterator[Placement]:
        try:
            made = DaskExecutor(executor)
        except ImportError as exc:  # a part of Dask is missing after all
            raise _no_dask() from exc
        async with AsyncExitStack() as stack:
            try:  # connect now, so that failing to is not blamed on an input file
                await stack.enter_async_context(made)  # and close the client at the end
            except ImportError as exc:
                raise _no_dask() from exc
            except (AsyncClfError, OSError) as exc:
                why = failure(exc.__cause__ or exc)
                msg = f"{_dask_url(executor)}: cannot connect to the Dask scheduler: {why}"
                raise CommandError(msg) from exc
            yield {"executor": made}

    return cluster


def _no_dask() -> CommandError:
    msg = (
        "--executor dask://HOST:PORT needs Dask support, which is not installed: "
        "pip install 'asyncclf[dask]'"
    )
    return CommandError(msg)


def _dask_url(address: str) -> str:
    return "dask://" + address.removeprefix(DASK)
