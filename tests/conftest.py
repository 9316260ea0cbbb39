"""Shared fixtures: both async backends, the three executors, a hypothesis profile and
the shared datasets."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_process
import pytest
from hypothesis import HealthCheck, settings

from asyncclf import AsyncClassifier, DaskExecutor, Executor, ProcessExecutor

from .own_executor import OwnThreadsExecutor

settings.register_profile(
    "asyncclf",
    deadline=None,
    max_examples=int(os.environ.get("ASYNCCLF_HYPOTHESIS_EXAMPLES", "40")),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("asyncclf")

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every async test once on asyncio and once on trio."""
    backend: str = request.param
    return backend


# -- the executors: the behaviour suite runs on each ------------------------------------

EXECUTORS = ("threads", "processes", "dask", "own")


class Classifiers:
    """Makes classifiers whose estimator runs on one executor: ``"threads"``, worker
    ``"processes"``, a ``"dask"`` cluster, or ``"own"``, a user's executor written from
    the docs alone (``tests/own_executor.py``).

    Each classifier gets an executor of its own, as ``executor="processes"`` gives it,
    so that no limiter or model version is shared between them by accident.
    """

    def __init__(self, name: str, client: Any = None) -> None:
        self.name = name
        self._client = client

    def __repr__(self) -> str:
        return f"<Classifiers on {self.name}>"

    @property
    def in_process(self) -> bool:
        """Whether the estimator runs in this process, so that its exceptions reach the
        caller as they are, never pickled (threads, and the own executor's threads)."""
        return self.name in ("threads", "own")

    def executor(self, limiter: anyio.CapacityLimiter | None = None) -> str | Executor:
        """A new executor of this kind, for ``AsyncClassifier(executor=...)`` or ``load``,
        with ``limiter`` if given (``"threads"`` takes it from the classifier)."""
        if self.name == "own":
            return OwnThreadsExecutor(limiter)
        if self.name == "processes":
            return ProcessExecutor(max_workers=2, limiter=limiter)
        if self.name == "dask":
            return DaskExecutor(self._client, limiter=limiter)
        return "threads"

    def __call__(self, estimator: Any = None, **params: Any) -> AsyncClassifier:
        """``AsyncClassifier(estimator, **params)`` on a new executor of this kind."""
        limiter = params.pop("limiter", None)
        executor = self.executor(limiter)
        if isinstance(executor, str):
            params["limiter"] = limiter
        return AsyncClassifier(estimator, executor=executor, **params)


def executors(*, everywhere: bool = False, **xfail: str) -> list[Any]:
    """The executor parameters for ``make``: threads in the default tier, worker
    processes and a Dask cluster in the slow one, unless ``everywhere`` (the default
    tier's sample of the contract on every executor). Each one named in ``xfail`` is
    expected to fail (strictly) for the reason given:
    ``@pytest.mark.parametrize("make", executors(dask="..."), indirect=True)``."""
    params = []
    for name in EXECUTORS:
        marks = [] if everywhere or name == "threads" else [pytest.mark.slow]
        if name in xfail:
            marks.append(pytest.mark.xfail(strict=True, reason=xfail[name]))
        params.append(pytest.param(name, marks=marks))
    return params


EVERYWHERE = executors(everywhere=True)
"""Every executor in the default tier: ``@pytest.mark.parametrize("make", EVERYWHERE,
indirect=True)`` on the tests that sample the contract on processes and Dask."""


@pytest.fixture(params=executors())
def make(request: pytest.FixtureRequest) -> Classifiers:
    """Run the test once per executor: it builds its classifiers with ``make(...)``
    (threads in the default tier, processes and Dask in the slow one; see ``executors``).

    An anyio test keeps its module's event loop (see ``module_event_loop``), so that
    the worker processes started for one test serve the next ones.
    """
    name: str = request.param
    if "anyio_backend" in request.fixturenames:
        request.getfixturevalue("process_pool" if name == "processes" else "module_event_loop")
    client = request.getfixturevalue("dask_client") if name == "dask" else None
    return Classifiers(name, client)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Run each module's tests that need no anyio event loop before those that do.

    ``module_event_loop`` keeps a module's loop until the module ends, and a test that
    runs event loops of its own (``anyio.run``) cannot start one while another is
    kept. pytest has already grouped the items by backend; this moves the others
    ahead of them, in their order.
    """
    modules: dict[object, int] = {}
    for item in items:
        modules.setdefault(getattr(item, "module", None), len(modules))
    items.sort(
        key=lambda item: (
            modules[getattr(item, "module", None)],
            "anyio_backend" in getattr(item, "fixturenames", ()),
        )
    )


@pytest.fixture(scope="module")
async def module_event_loop(anyio_backend: str) -> None:
    """Keep one event loop for a module's tests on one backend.

    anyio's pytest plugin keeps its event loop until the last async fixture made in
    it is torn down, and ``anyio.to_process`` keeps its worker processes as long as
    the event loop: this fixture, made in the loop and kept for the module, lets every
    test share the processes instead of starting new ones (and importing scikit-learn
    in them) each time.
    """


@pytest.fixture(scope="module")
async def process_pool(module_event_loop: None, anyio_backend: str) -> None:
    """Set up anyio's pool of worker processes in the module's event loop, empty.

    On asyncio, anyio kills the pool's workers when the task that first used the pool
    ends; under pytest that task runs one test (or one hypothesis example), not the
    whole loop, and the next test would be handed a killed worker. Here the first use
    is this fixture's, with a worker that exits at once: that kill finds no worker, and
    those the tests start live as long as the loop.
    """
    if anyio_backend == "asyncio":
        with pytest.raises(anyio.BrokenWorkerProcess):
            await anyio.to_process.run_sync(os._exit, 0)


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Any]:
    """A cluster of two single-threaded worker processes on 127.0.0.1, and a client,
    for the whole session (test_dask.py damages a cluster of its own)."""
    distributed: Any = pytest.importorskip(
        "distributed", reason="DaskExecutor needs dask.distributed: pip install 'asyncclf[dask]'"
    )
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",  # a free port: 8787 may be taken
    )
    with cluster, distributed.Client(cluster) as client:
        yield client


Rows = list[dict[str, str]]


def load_dataset(name: str) -> Rows:
    """Load ``../shared/datasets/<name>``, or skip the test with the reason."""
    path = DATASETS / name / "data.jsonl.gz"
    if not path.exists():
        pytest.skip(f"the shared dataset {name} is not at {path} (only in the project's CI)")
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


@pytest.fixture(scope="session")
def sms_rows() -> Rows:
    """The SMS spam collection from ../shared (skips when absent)."""
    return load_dataset("sms_spam")


@pytest.fixture(scope="session")
def zh_rows() -> Rows:
    """Chinese product reviews, with their seeded split, from ../shared (skips when absent)."""
    return load_dataset("zh_reviews")


@pytest.fixture(scope="session")
def news_rows() -> Rows:
    """20 Newsgroups from ../shared (skips when absent)."""
    return load_dataset("20newsgroups")
