"""Where the estimator's code runs: threads, worker processes or a Dask cluster.

- ``base``: CPUs, the pool of threads batches run from, per-run objects, tokens;
- ``threads``: :class:`~asyncclf.ThreadExecutor`, the default;
- ``processes``: :class:`~asyncclf.ProcessExecutor`;
- ``dask``: :class:`~asyncclf.DaskExecutor` (its worker side is ``asyncclf._work.cluster``).
"""

from __future__ import annotations

import anyio

from .base import Executor
from .processes import ProcessExecutor
from .threads import ThreadExecutor


def make_executor(executor: str | Executor, limiter: anyio.CapacityLimiter | None) -> Executor:
    """The executor named by ``executor`` (``"threads"``, ``"processes"``) or given."""
    if executor == "threads":
        return ThreadExecutor(limiter)
    if executor == "processes":
        return ProcessExecutor(limiter=limiter)
    assert isinstance(executor, Executor), "checked by check_params"
    assert limiter is None, "refused with an executor object by check_params"
    return executor
