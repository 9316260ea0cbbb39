"""Small deterministic estimators for tests: fast, and controllable from a test."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, ClassifierMixin

DEADLINE = 300
"""Seconds: the safety net of every wait in the tests (``fail_after``, a thread's
``Event.wait``), so that a hung test fails instead of hanging, and a slow machine
never fails one. Never a measure of speed: a test asserts behaviour, not time."""

NEVER = 2 * DEADLINE
"""Seconds longer than any test waits: a ``max_latency`` or a held fit that a test
proves is not waited out (it would fail at ``DEADLINE`` first)."""


class Gate:
    """Lets a test hold a worker thread inside an estimator method, then release it.

    Deep copies (``sklearn.base.clone`` makes them) share the same gate.
    """

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.calls = 0
        self.threads: set[int] = set()

    def __deepcopy__(self, memo: dict[int, Any]) -> Gate:
        return self

    def close(self) -> None:
        """Hold the next calls that pass through (until ``release`` is set again)."""
        self.release.clear()
        self.entered.clear()

    async def wait_entered(self) -> None:
        """Wait, off the event loop, until a worker thread is held in the gate."""
        import anyio.to_thread

        assert await anyio.to_thread.run_sync(self.entered.wait, DEADLINE)

    def pass_through(self) -> None:
        self.calls += 1
        self.threads.add(threading.get_ident())
        self.entered.set()
        if not self.release.wait(timeout=DEADLINE):
            msg = "the test never released the gate"
            raise RuntimeError(msg)


async def settle(clf: Any) -> None:
    """Wait until every worker run of ``clf`` has ended and given its token back.

    A cancelled caller returns while its batch still runs; the batch holds a limiter
    token until its thread ends. Taking every token proves they all came back.
    """
    limiter = clf.limiter_
    holders = [object() for _ in range(int(limiter.total_tokens))]
    for holder in holders:
        await limiter.acquire_on_behalf_of(holder)
    for holder in holders:
        limiter.release_on_behalf_of(holder)


class KeywordClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Scores each class by how often its name occurs in the text.

    Raises ``ValueError`` for a text that contains ``fail_on``. Methods named in
    ``block`` pass through ``gate`` first, so a test can hold them in the worker.
    """

    def __init__(
        self, fail_on: str = "BOOM", gate: Gate | None = None, block: Sequence[str] = ()
    ) -> None:
        self.fail_on = fail_on
        self.gate = gate
        self.block = block

    def _maybe_block(self, method: str) -> None:
        if self.gate is not None and method in self.block:
            self.gate.pass_through()

    def fit(self, X: Sequence[str], y: Sequence[Any]) -> KeywordClassifier:
        self._maybe_block("fit")
        self.classes_ = np.unique(np.asarray(y))
        self._fit_thread_id = threading.get_ident()  # private: not part of the model_id
        self.n_fits_ = getattr(self, "n_fits_", 0) + 1
        return self

    def partial_fit(
        self, X: Sequence[str], y: Sequence[Any], classes: Sequence[Any] | None = None
    ) -> KeywordClassifier:
        self._maybe_block("partial_fit")
        if classes is not None:
            self.classes_ = np.unique(np.asarray(classes))
        self.n_updates_ = getattr(self, "n_updates_", 0) + 1
        return self

    def predict_proba(self, X: Sequence[str]) -> NDArray[np.float64]:
        self._maybe_block("predict_proba")
        return self._proba(X)

    def _proba(self, X: Sequence[str]) -> NDArray[np.float64]:
        return self._proba_with(self.classes_, X)

    def _proba_with(self, classes: Any, X: Sequence[str]) -> NDArray[np.float64]:
        for text in X:
            if self.fail_on and self.fail_on in text:
                msg = f"cannot score {text!r}"
                raise ValueError(msg)
        counts = np.array(
            [[text.count(str(label)) + 1.0 for label in classes] for text in X],
            dtype=np.float64,
        ).reshape(len(X), len(classes))
        result: NDArray[np.float64] = counts / counts.sum(axis=1, keepdims=True)
        return result

    def predict(self, X: Sequence[str]) -> NDArray[Any]:
        self._maybe_block("predict")
        result: NDArray[Any] = self.classes_[self._proba(X).argmax(axis=1)]
        return result


class DecisionOnlyClassifier(KeywordClassifier):
    """A keyword classifier with ``decision_function`` but no ``predict_proba``."""

    def decision_function(self, X: Sequence[str]) -> NDArray[np.float64]:
        self._maybe_block("decision_function")
        scores = np.log(self._proba(X))
        if len(self.classes_) == 2:
            result: NDArray[np.float64] = scores[:, 1] - scores[:, 0]
            return result
        return scores

    def __getattribute__(self, name: str) -> Any:
        if name == "predict_proba":
            raise AttributeError(name)
        return super().__getattribute__(name)


class LabelOnlyClassifier(KeywordClassifier):
    """A keyword classifier with ``predict`` only: no scores to rank by."""

    def __getattribute__(self, name: str) -> Any:
        if name == "predict_proba":
            raise AttributeError(name)
        return super().__getattribute__(name)


class NaNClassifier(KeywordClassifier):
    """A keyword classifier whose scores are ``value`` (NaN) for texts with ``NAN``."""

    def __init__(self, value: float = np.nan) -> None:
        super().__init__()
        self.value = value

    def predict_proba(self, X: Sequence[str]) -> NDArray[np.float64]:
        rows = super().predict_proba(X)
        rows[[i for i, text in enumerate(X) if "NAN" in text]] = self.value
        return rows


SHARED_ERROR = ValueError("the model server is down")
"""One exception object, raised by every call of a ``SharedErrorClassifier``."""


class SharedErrorClassifier(KeywordClassifier):
    """A classifier that raises the very same exception object on every call."""

    def predict_proba(self, X: Sequence[str]) -> NDArray[np.float64]:
        self._maybe_block("predict_proba")
        raise SHARED_ERROR


LABELS = ["ham", "spam", "eggs"]
TRAIN_X = ["ham and more ham", "spam spam", "eggs", "ham", "spam", "eggs eggs"]
TRAIN_Y = ["ham", "spam", "eggs", "ham", "spam", "eggs"]


class RecordingClassifier(KeywordClassifier):
    """A keyword classifier that records each ``predict_proba`` batch and its context."""

    def __init__(
        self,
        fail_on: str = "BOOM",
        gate: Gate | None = None,
        block: Sequence[str] = (),
        log: CallLog | None = None,
    ) -> None:
        super().__init__(fail_on=fail_on, gate=gate, block=block)
        self.log = log

    def predict_proba(self, X: Sequence[str]) -> NDArray[np.float64]:
        if self.log is not None:
            self.log.record(list(X))
        return super().predict_proba(X)


class CallLog:
    """What a RecordingClassifier saw: batches, threads, sklearn config, OpenMP threads."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.threads: set[int] = set()
        self.assume_finite: list[bool] = []
        self.native_threads: list[int] = []

    def __deepcopy__(self, memo: dict[int, Any]) -> CallLog:
        return self

    def record(self, texts: list[str]) -> None:
        import sklearn
        from threadpoolctl import threadpool_info

        self.batches.append(texts)
        self.threads.add(threading.get_ident())
        self.assume_finite.append(bool(sklearn.get_config()["assume_finite"]))
        self.native_threads.extend(
            int(pool["num_threads"]) for pool in threadpool_info() if pool["user_api"] == "openmp"
        )

    @property
    def seen(self) -> list[str]:
        return [text for batch in self.batches for text in batch]


class InterruptingClassifier(KeywordClassifier):
    """A keyword classifier whose predict_proba raises ``interrupt`` (a BaseException)."""

    def __init__(
        self,
        fail_on: str = "BOOM",
        gate: Gate | None = None,
        block: Sequence[str] = (),
        interrupt: type[BaseException] = KeyboardInterrupt,
    ) -> None:
        super().__init__(fail_on=fail_on, gate=gate, block=block)
        self.interrupt = interrupt

    def predict_proba(self, X: Sequence[str]) -> NDArray[np.float64]:
        self._maybe_block("predict_proba")
        raise self.interrupt


class MisshapenClassifier(KeywordClassifier):
    """A keyword classifier whose predict_proba returns ``shape``: "flat" rows, one
    "column" for every class, or "none" at all."""

    def __init__(self, shape: str = "flat") -> None:
        super().__init__()
        self.shape = shape

    def predict_proba(self, X: Sequence[str]) -> Any:
        rows = super().predict_proba(X)
        if self.shape == "flat":
            return rows[:, 0]
        if self.shape == "column":
            return rows[:, :1]
        return None


class CodedError(Exception):
    """An exception whose __init__ builds its message from another argument."""

    def __init__(self, code: int) -> None:
        super().__init__(f"the model server returned HTTP {code}")
        self.code = code


class CodedErrorClassifier(KeywordClassifier):
    """A keyword classifier whose predict_proba raises ``CodedError(503)``."""

    def predict_proba(self, X: Sequence[str]) -> NDArray[np.float64]:
        self._maybe_block("predict_proba")
        raise CodedError(503)


class LockedError(Exception):
    """An exception holding a lock, which cannot be pickled."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class LockedErrorClassifier(KeywordClassifier):
    """A keyword classifier raising :class:`LockedError` for any batch with ``boom``."""

    def predict_proba(self, X: Sequence[str]) -> NDArray[np.float64]:
        if any("boom" in text for text in X):
            msg = "boom found"
            raise LockedError(msg)
        return super().predict_proba(X)


class BadStrError(Exception):
    """An exception whose ``str()`` raises."""

    def __str__(self) -> str:
        msg = "__str__ exploded"
        raise RuntimeError(msg)


def _refuse_to_load() -> None:
    msg = "cannot unpickle me"
    raise ValueError(msg)


class _LoadsBadly:
    """Pickles fine, fails to unpickle."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _refuse_to_load, ()


class LoadFailsError(Exception):
    """An exception holding something that pickles but does not unpickle."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.payload = _LoadsBadly()


def trouble(kind: str) -> Exception:
    """An exception hard to send between processes, of the given ``kind``."""
    if kind == "badstr":
        return BadStrError()
    if kind == "loadfails":
        return LoadFailsError("load fails")
    if kind == "oserror":
        return FileNotFoundError(2, "No such file or directory", "/nope/x.bin")
    return CodedError(503)


class TroubleClassifier(KeywordClassifier):
    """A keyword classifier raising ``trouble(kind)`` for any batch with ``boom``."""

    def __init__(self, kind: str = "coded") -> None:
        super().__init__()
        self.kind = kind

    def predict_proba(self, X: Sequence[str]) -> NDArray[np.float64]:
        if any("boom" in text for text in X):
            raise trouble(self.kind)
        return super().predict_proba(X)


class FitErrorClassifier(KeywordClassifier):
    """A keyword classifier whose fit raises ``CodedError(503)`` (``error="coded"``) or
    a :class:`LockedError` (``error="locked"``), which cannot be pickled."""

    def __init__(self, error: str = "coded") -> None:
        super().__init__()
        self.error = error

    def fit(self, X: Sequence[str], y: Sequence[Any]) -> FitErrorClassifier:
        if self.error == "coded":
            raise CodedError(503)
        msg = "fit locked"
        raise LockedError(msg)


class SlowPredictClassifier(KeywordClassifier):
    """A keyword classifier whose predict_proba sleeps ``seconds`` first (picklable)."""

    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__()
        self.seconds = seconds

    def predict_proba(self, X: Sequence[str]) -> NDArray[np.float64]:
        import time

        time.sleep(self.seconds)
        return super().predict_proba(X)


class SlowFitClassifier(KeywordClassifier):
    """A keyword classifier whose fit sleeps ``seconds`` first (picklable: no gate)."""

    def __init__(self, seconds: float = 0.0) -> None:
        super().__init__()
        self.seconds = seconds

    def fit(self, X: Sequence[str], y: Sequence[Any]) -> SlowFitClassifier:
        import time

        time.sleep(self.seconds)
        super().fit(X, y)
        return self


class DyingClassifier(KeywordClassifier):
    """A keyword classifier whose process dies (``os._exit``) on a text with ``DIE``:
    use it only with worker processes."""

    def predict_proba(self, X: Sequence[str]) -> NDArray[np.float64]:
        import os

        if any("DIE" in text for text in X):
            os._exit(3)
        return super().predict_proba(X)


class EventGatedFitClassifier(KeywordClassifier):
    """A keyword classifier whose fit, in a Dask worker, sets the ``distributed.Event``
    named ``f"{event}-entered"`` and then waits for the one named ``event`` (no gate
    when ``event`` is empty): the cluster's counterpart of ``Gate``."""

    def __init__(self, event: str = "") -> None:
        super().__init__()
        self.event = event

    def fit(self, X: Sequence[str], y: Sequence[Any]) -> EventGatedFitClassifier:
        if self.event:
            import importlib

            distributed: Any = importlib.import_module("distributed")
            distributed.Event(f"{self.event}-entered").set()
            if not distributed.Event(self.event).wait(timeout=NEVER):
                msg = "the test never set the event"
                raise RuntimeError(msg)
        super().fit(X, y)
        return self


UNPICKLED: dict[str, int] = {}
"""How many times this process unpickled a fitted ``UnpickleCountingClassifier``, by tag."""


class UnpickleCountingClassifier(KeywordClassifier):
    """A keyword classifier that counts, per process and ``tag``, how many times a
    fitted copy of it is unpickled (see ``unpickled``)."""

    def __init__(self, tag: str = "") -> None:
        super().__init__()
        self.tag = tag

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "classes_" in state:
            UNPICKLED[state["tag"]] = UNPICKLED.get(state["tag"], 0) + 1
        super().__setstate__(state)


def unpickled(tag: str) -> int:
    """How many times this process unpickled a fitted classifier tagged ``tag``."""
    return UNPICKLED.get(tag, 0)


class MemoryClassifier(ClassifierMixin, BaseEstimator):  # type: ignore[misc]
    """Learns incrementally by remembering each text's last label; predicts the label
    remembered for a text, else the first class. Progressive accuracy is then exact:
    an example is right when its text came before with the same label.

    ``partial_fit`` marks the model as being updated while it runs (for ``pause``
    seconds): a prediction from a model under update raises, so a test can tell that
    serving never reads the model being learned. ``sizes_`` lists its batch sizes.
    """

    def __init__(self, pause: float = 0.0, fail_on: str = "BOOM") -> None:
        self.pause = pause
        self.fail_on = fail_on

    def partial_fit(
        self, X: Sequence[str], y: Sequence[Any], classes: Sequence[Any] | None = None
    ) -> MemoryClassifier:
        if classes is not None:
            self.classes_ = np.asarray(list(classes))
        self.updating_ = True
        if any(self.fail_on and self.fail_on in text for text in X):
            msg = f"cannot learn from {self.fail_on!r}"
            raise ValueError(msg)
        time.sleep(self.pause)
        memory = getattr(self, "memory_", {})
        memory.update(zip(X, y, strict=True))
        self.memory_ = memory
        self.sizes_ = [*getattr(self, "sizes_", []), len(X)]
        self.updating_ = False
        return self

    def fit(self, X: Sequence[str], y: Sequence[Any]) -> MemoryClassifier:
        self.memory_ = {}
        self.sizes_ = []
        return self.partial_fit(X, y, classes=sorted(set(y)))

    def predict(self, X: Sequence[str]) -> NDArray[Any]:
        result: NDArray[Any] = np.asarray(self.classes_)[self.predict_proba(X).argmax(axis=1)]
        return result

    def predict_proba(self, X: Sequence[str]) -> NDArray[np.float64]:
        if getattr(self, "updating_", False):
            msg = "read while being updated"
            raise AssertionError(msg)
        classes = list(np.asarray(self.classes_).tolist())
        rows = np.zeros((len(X), len(classes)))
        memory = getattr(self, "memory_", {})
        for i, text in enumerate(X):
            rows[i, classes.index(memory[text]) if text in memory else 0] = 1.0
        return rows


class DuckClassifier:
    """A classifier by duck typing: fit, predict_proba and classes_, but not a
    scikit-learn estimator (no BaseEstimator, no tags). Scores like KeywordClassifier."""

    def fit(self, X: Sequence[str], y: Sequence[Any]) -> DuckClassifier:
        self.classes_ = np.unique(np.asarray(y))
        return self

    def predict_proba(self, X: Sequence[str]) -> NDArray[np.float64]:
        return KeywordClassifier(fail_on="")._proba_with(self.classes_, X)

    def predict(self, X: Sequence[str]) -> NDArray[Any]:
        result: NDArray[Any] = self.classes_[self.predict_proba(X).argmax(axis=1)]
        return result
