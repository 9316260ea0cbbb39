"""Where the model runs: --executor threads, processes or dask://, and --workers."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import json
import pickle
import re
import sys
from pathlib import Path
from typing import Any, ClassVar

import anyio
import anyio.to_process
import anyio.to_thread
import pytest

from asyncclf import AsyncClassifier, ProcessExecutor, ThreadExecutor

from .conftest import one_error, run


def run_all(
    backend: str,
    options: list[str],
    small: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> dict[str, str]:
    """Run train, classify, rank and eval with ``options``; return what each printed."""
    target = tmp_path / "model.skops"
    source = tmp_path / "in.txt"
    texts = [json.loads(line)["text"] for line in small.read_text("utf-8").splitlines()]
    source.write_text("\n".join(texts[:40]) + "\n", encoding="utf-8")
    commands = {
        "train": ["train", str(small), "-o", str(target)],
        "classify": ["classify", str(target), str(source)],
        "rank": ["rank", str(target), "--label", "spam", "-k", "5", str(source)],
        "eval": ["eval", str(target), str(small)],
    }
    outputs = {}
    for name, command in commands.items():
        status, out, err = run(["--backend", backend, *command, *options], capsys)
        assert (status, err) == (0, ""), name
        outputs[name] = re.sub(r"\(sha256 [0-9a-f]{64}\)", "(sha256 HEX)", out)
    return outputs


@pytest.mark.parametrize("runs", [pytest.param("in workers", marks=pytest.mark.slow), "here"])
def test_processes_answer_as_threads_do(
    small: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    recorded: list[AsyncClassifier[Any]],
    backend: str,
    runs: str,
) -> None:
    """train, classify, rank and eval print the same with --executor processes as threads.

    The estimator runs in worker processes, or ``here``: the worker-side functions run
    in a thread of this process, their arguments and results pickled as for a worker,
    which checks the command's use of the executor without starting processes.
    """
    threads = run_all(backend, [], small, tmp_path, capsys)
    assert [clf.executor for clf in recorded] == ["threads"] * 5
    recorded.clear()
    in_workers: list[object] = []
    run_sync = anyio.to_process.run_sync

    async def counted(func: Any, *args: Any, **kwargs: Any) -> Any:
        in_workers.append(func)
        if runs == "in workers":
            return await run_sync(func, *args, **kwargs)
        crossed = pickle.loads(pickle.dumps(args))  # as to a worker process and back
        return pickle.loads(pickle.dumps(await anyio.to_thread.run_sync(func, *crossed)))

    monkeypatch.setattr(anyio.to_process, "run_sync", counted)
    options = ["--executor", "processes", "--workers", "2"]
    processes = run_all(backend, options, small, tmp_path, capsys)
    assert processes == threads
    assert len(threads["classify"].splitlines()) == 40
    assert len(recorded) == 5  # train's held-out and final models, then one a command
    executors = [clf.executor for clf in recorded]
    assert all(isinstance(executor, ProcessExecutor) for executor in executors)
    assert [executor.max_workers for executor in executors] == [2] * 5  # type: ignore[union-attr]
    assert executors[0] is executors[1]  # train's two models share the workers
    assert in_workers  # the estimator ran where the process executor sends it


def test_workers_sizes_the_thread_limiter(
    small: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    recorded: list[AsyncClassifier[Any]],
    backend: str,
) -> None:
    """With threads, --workers N gives train's two models and classify one N-token limiter."""
    target = tmp_path / "m.skops"
    status, _, err = run(
        ["--backend", backend, "train", str(small), "-o", str(target), "--workers", "3"], capsys
    )
    assert (status, err) == (0, "")
    status, out, _ = run(
        ["--backend", backend, "classify", str(target), "--workers", "1", str(small)], capsys
    )
    assert status == 0
    assert len(out.splitlines()) == 300
    limiters = [clf.limiter for clf in recorded]
    assert [clf.executor for clf in recorded] == ["threads"] * 3
    assert [None if lim is None else lim.total_tokens for lim in limiters] == [3, 3, 1]
    assert limiters[0] is limiters[1]


@pytest.mark.parametrize("missing", ["asyncclf._executors.dask", "distributed"])
def test_dask_missing_gives_one_line_saying_what_to_install(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    missing: str,
) -> None:
    """dask:// without asyncclf's Dask support or distributed exits 1 in one line naming
    the extra."""
    if missing == "asyncclf._executors.dask":
        monkeypatch.setitem(sys.modules, "asyncclf._executors.dask", None)  # importing it fails
    else:
        find_spec = importlib.util.find_spec

        def without_distributed(name: str, package: str | None = None) -> Any:
            return None if name == "distributed" else find_spec(name, package)

        monkeypatch.setattr(importlib.util, "find_spec", without_distributed)
    model = str(tmp_path / "missing.skops")  # refused before any file is read
    status, out, err = run(
        ["--backend", backend, "classify", model, "--executor", "dask://127.0.0.1:8786"], capsys
    )
    assert (status, out) == (1, "")
    assert one_error(err) == (
        "--executor dask://HOST:PORT needs Dask support, which is not installed: "
        "pip install 'asyncclf[dask]'"
    )


@pytest.mark.slow
def test_dask_answers_as_threads_do(
    small: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    recorded: list[AsyncClassifier[Any]],
    backend: str,
) -> None:
    """train, classify, rank and eval print the same with --executor dask://HOST:PORT."""
    from asyncclf._executors.dask import DaskExecutor as dask_executor

    distributed = pytest.importorskip("distributed")
    threads = run_all(backend, [], small, tmp_path, capsys)
    recorded.clear()
    with distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as cluster:
        address = cluster.scheduler_address.replace("tcp://", "dask://")
        on_dask = run_all(backend, ["--executor", address], small, tmp_path, capsys)
    assert on_dask == threads
    executors = [clf.executor for clf in recorded]
    assert len(executors) == 5
    assert all(isinstance(executor, dask_executor) for executor in executors)
    assert {getattr(executor, "address", None) for executor in executors} == {
        cluster.scheduler_address
    }
    assert executors[0] is executors[1]  # train's two models share one client


class FakeDask(ThreadExecutor):
    """A DaskExecutor stand-in running in threads, recording how the command uses it."""

    made: ClassVar[list[FakeDask]] = []
    refuse: ClassVar[BaseException | None] = None

    def __init__(self, address: str) -> None:
        super().__init__()
        self.address = address
        self.entered = self.exited = 0
        FakeDask.made.append(self)

    async def __aenter__(self) -> FakeDask:
        self.entered += 1
        if FakeDask.refuse is not None:
            raise FakeDask.refuse
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.exited += 1


@pytest.fixture
def fake_dask(monkeypatch: pytest.MonkeyPatch) -> list[FakeDask]:
    """Put FakeDask in the place of DaskExecutor; return the instances made."""
    from asyncclf._executors import dask as _dask

    find_spec = importlib.util.find_spec

    def with_distributed(name: str, package: str | None = None) -> Any:
        if name == "distributed":  # found, whether installed or not
            return importlib.machinery.ModuleSpec("distributed", None)
        return find_spec(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", with_distributed)
    monkeypatch.setattr(_dask, "DaskExecutor", FakeDask)
    monkeypatch.setattr(FakeDask, "made", [])
    monkeypatch.setattr(FakeDask, "refuse", None)
    return FakeDask.made


def test_dask_url_places_every_model_on_one_connected_executor(
    small: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    recorded: list[AsyncClassifier[Any]],
    fake_dask: list[FakeDask],
    backend: str,
) -> None:
    """--executor dask://HOST:PORT makes one DaskExecutor a command for the scheduler's
    tcp:// address, connected before the command runs and closed after it."""
    threads = run_all(backend, [], small, tmp_path, capsys)
    recorded.clear()
    on_dask = run_all(backend, ["--executor", "dask://127.0.0.1:8786"], small, tmp_path, capsys)
    assert on_dask == threads
    assert [made.address for made in fake_dask] == ["tcp://127.0.0.1:8786"] * 4
    assert [(made.entered, made.exited) for made in fake_dask] == [(1, 1)] * 4
    executors = [clf.executor for clf in recorded]
    assert executors == [fake_dask[0], fake_dask[0], *fake_dask[1:]]


@pytest.mark.parametrize(
    ("error", "why"),
    [
        (OSError("Timed out trying to connect"), "OSError: Timed out trying to connect"),
        (ImportError("no module named distributed"), None),
    ],
    ids=["unreachable", "not-installed"],
)
def test_dask_that_cannot_connect_gives_one_line(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fake_dask: list[FakeDask],
    backend: str,
    error: BaseException,
    why: str | None,
) -> None:
    """A scheduler the command cannot reach is one line naming its dask:// URL, before
    any input is read; Dask missing at connection time says what to install."""
    FakeDask.refuse = error
    missing = str(tmp_path / "missing.jsonl")
    args = ["train", missing, "-o", str(tmp_path / "m.skops")]
    status, out, err = run(
        ["--backend", backend, *args, "--executor", "dask://10.0.0.5:8786"], capsys
    )
    assert (status, out) == (1, "")
    assert one_error(err) == (
        f"dask://10.0.0.5:8786: cannot connect to the Dask scheduler: {why}"
        if why is not None
        else "--executor dask://HOST:PORT needs Dask support, which is not installed: "
        "pip install 'asyncclf[dask]'"
    )
    assert [(made.entered, made.exited) for made in fake_dask] == [(1, 0)]
