"""Code that runs in a worker: top-level, synchronous, picklable, no anyio.

Whatever executes the estimator (a thread today; a process or a cluster later) calls
these functions with small arguments: the estimator, the kind of computation, the
caller's scikit-learn settings, the texts.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import pickle
import sys
import threading
import time
import traceback
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import numpy as np
import sklearn
from joblib.hashing import NumpyHasher
from numpy.typing import NDArray
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError as _SklearnNotFittedError
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import ThreadpoolController

from ._errors import (
    AsyncClfError,
    NotFittedError,
    UnsupportedEstimatorError,
    describe,
    own_copy,
    rebuild,
    same_exception,
)

__all__ = [
    "KINDS",
    "Compute",
    "ModelHandle",
    "Raised",
    "Segment",
    "Span",
    "WorkerTraceback",
    "call_in_files",
    "call_in_worker",
    "call_portable",
    "compute",
    "dump",
    "fingerprint",
    "fit",
    "fit_packed",
    "fit_steps",
    "identified",
    "learn_step",
    "learning_parts",
    "load",
    "load_unpacked",
    "pack",
    "partial_fit",
    "partial_fit_packed",
    "portable",
    "resolve",
    "returned",
    "run_batch",
    "served_copy",
    "snapshot",
    "timed_batch",
    "unpack",
    "update",
    "vectorisers",
    "vocabulary_of",
]

T = TypeVar("T")

Compute = Callable[[list[str]], Any]
"""A vectorised function of a list of texts returning one row per text."""

# A run of consecutive texts [start, stop) of one batch and its rows, or the exception
# the estimator raised for that (single) text.
Segment = tuple[int, int, Any]
# A request's texts [start, stop) in its batch, and whether each text needs its own
# outcome (a stream's texts) rather than one for the whole request.
Span = tuple[int, int, bool]


class _TorchThreads:
    """PyTorch's intra-op pool, driven like one of threadpoolctl's library controllers.

    ``torch.set_num_threads`` sets the calling thread's OpenMP team and MKL's count
    for that thread, so it is capped per call like OpenMP. threadpoolctl's own OpenMP
    cap reaches torch's bundled libgomp, but not a count the user set with
    ``torch.set_num_threads`` (torch re-applies it on a thread's first torch call),
    nor MKL's per-thread count (measured: 2 threads ran under a cap of 1).
    """

    user_api = "torch"

    def get_num_threads(self) -> int:
        return int(sys.modules["torch"].get_num_threads())

    def set_num_threads(self, threads: int) -> None:
        sys.modules["torch"].set_num_threads(threads)


class _NativeThreadCap:
    """Cap BLAS, OpenMP and PyTorch threads while asyncclf work runs.

    OpenMP's thread count is per thread, and so is PyTorch's (if imported: this never
    imports it), so each worker call sets and restores its own.
    BLAS pools (OpenBLAS, MKL, BLIS) are process-wide, so limits set and restored
    independently by overlapping calls would race (one call restoring the original
    while another still runs): there the first active call sets the cap and the last
    one restores it. Each library is set on its own: threadpoolctl's ``limit()`` object
    restores every library at once, which undoes the other kind's setting.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active = 0
        self._libraries: list[Any] = []
        self._modules = -1
        self._saved_blas: list[tuple[Any, int]] = []
        self._saved_torch: list[tuple[Any, int]] = []

    def _refresh(self) -> None:
        # Finding the loaded libraries takes milliseconds, so it is redone only when
        # modules were imported since (a new native library may have come with them).
        if self._modules != len(sys.modules):
            self._libraries = ThreadpoolController().lib_controllers
            if "torch" in sys.modules:
                self._libraries.append(_TorchThreads())
            self._modules = len(sys.modules)

    @staticmethod
    def _cap(libraries: list[Any], threads: int) -> list[tuple[Any, int]]:
        saved = [(library, library.get_num_threads()) for library in libraries]
        for library, current in saved:
            if current is not None and current > threads:
                library.set_num_threads(threads)
        return saved

    @staticmethod
    def _restore(saved: list[tuple[Any, int]]) -> None:
        for library, original in saved:
            if original is not None:
                library.set_num_threads(original)

    @contextmanager
    def __call__(self, threads: int) -> Iterator[None]:
        with self._lock:
            if self._active == 0:
                self._refresh()
                blas = [lib for lib in self._libraries if lib.user_api == "blas"]
                self._saved_blas = self._cap(blas, threads)
                # torch's count is per thread, but a thread's first torch call starts
                # from the process's last set count, which a call running elsewhere may
                # have capped: every call restores the count read before any ran.
                torch = [lib for lib in self._libraries if lib.user_api == "torch"]
                self._saved_torch = [(lib, lib.get_num_threads()) for lib in torch]
            self._active += 1
            openmp = [lib for lib in self._libraries if lib.user_api == "openmp"]
            saved_torch = self._saved_torch
        saved_openmp = self._cap(openmp, threads)
        for library, original in saved_torch:
            library.set_num_threads(min(original, threads))
        try:
            yield
        finally:
            self._restore(saved_openmp)
            self._restore(saved_torch)
            with self._lock:
                self._active -= 1
                if self._active == 0:
                    self._restore(self._saved_blas)
                    self._saved_blas = []


_native_thread_cap = _NativeThreadCap()


def call_in_worker(
    config: dict[str, Any], threads: int, func: Callable[..., T], args: tuple[Any, ...]
) -> T:
    """Run ``func(*args)`` under the caller's sklearn ``config``, BLAS/OpenMP capped."""
    with sklearn.config_context(**config), _native_thread_cap(threads):
        return func(*args)


def call_portable(
    config: dict[str, Any], threads: int, func: Callable[..., T], args: tuple[Any, ...]
) -> T | Raised:
    """:func:`call_in_worker` in another process, whose exceptions cross back whole
    (see :func:`portable`): those in the result (a batch's failed texts), and the one
    it raised, returned as :class:`Raised` for :func:`returned` to raise in the parent."""
    try:
        result = call_in_worker(config, threads, func, args)
    except Exception as exc:
        return Raised(exc)
    except BaseException as exc:
        # SystemExit or KeyboardInterrupt from estimator code: it fails this call, as
        # in a worker thread, and neither ends the worker nor reaches the parent's loop.
        msg = f"The worker was interrupted by {exc!r}."
        return Raised(AsyncClfError(msg))
    crossing: T = portable(result)
    return crossing


class Raised:
    """The exception a worker call raised, on its way back to the parent as a value."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:
        return Raised, (_Crossing(self.error),)


def returned(result: T | Raised) -> T:
    """What :func:`call_portable` returned, in the parent: raise what it raised."""
    if isinstance(result, Raised):
        raise result.error
    return result


def portable(result: Any) -> Any:
    """``result`` with each exception in it, inside tuples and lists, made to cross a
    process boundary whole.

    Unpickling an exception calls ``__init__`` again with its ``args``, which garbles the
    message of one whose ``__init__`` builds it from other arguments; and an exception
    holding something unpicklable (a lock, a socket) would fail the whole batch's
    reply. Each arrives instead as :func:`~asyncclf._errors.rebuild` makes it, or, if it
    cannot cross, as an :class:`AsyncClfError` naming its type and message.
    """
    if isinstance(result, BaseException):
        return _Crossing(result)
    if type(result) is tuple or type(result) is list:
        return type(result)(portable(item) for item in result)
    return result


class _Crossing:
    """An exception on its way back from a worker process (see :func:`portable`).

    Pickled, it becomes the bytes of a faithful copy that was checked to unpickle here
    (see :func:`~asyncclf._errors.faithful_copy`), to be given its traceback in the
    worker as its cause in the parent; or, when no copy crosses, what
    :func:`_stranded` says instead. Nothing about the exception can fail the rest of
    the reply.
    """

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:
        error = self.error
        kind = type(error)
        name = f"{kind.__module__}.{kind.__qualname__}"
        try:
            trace = "".join(traceback.format_exception(error))
        except Exception as exc:
            trace = f"(its traceback could not be formatted: {exc!r})"
        # Pickled as it is, if that gives it back whole (built-in exceptions keep what
        # they hold outside args); else its type, args and attributes, rebuilt without
        # __init__ (see own_copy). Either is tried here, so that it surely unpickles.
        why = "no copy of it survives pickling"
        try:
            content = pickle.dumps(error, protocol=pickle.HIGHEST_PROTOCOL)
            if same_exception(pickle.loads(content), error):
                return _arrived, (content, trace)
        except Exception as exc:
            why = repr(exc)
        try:
            parts = (kind, error.args, getattr(error, "__dict__", {}))
            content = pickle.dumps(parts, protocol=pickle.HIGHEST_PROTOCOL)
            if same_exception(rebuild(*pickle.loads(content)), error):
                return _rebuilt_here, (content, trace)
        except Exception as exc:
            why = repr(exc)
        return _stranded, (name, describe(error), why, trace)


class WorkerTraceback(Exception):
    """The cause of an exception raised in a worker process: its traceback there, as
    text (as ``concurrent.futures`` does for its process pools)."""

    def __str__(self) -> str:
        return f"\n{self.args[0]}" if self.args else ""


def _arrived(content: bytes, trace: str) -> BaseException:
    """An estimator's exception, unpickled in the parent, its cause the traceback it
    had in the worker."""
    error: BaseException = pickle.loads(content)
    error.__cause__ = WorkerTraceback(trace)
    return error


def _rebuilt_here(content: bytes, trace: str) -> BaseException:
    """An estimator's exception, rebuilt in the parent without its ``__init__``."""
    error: BaseException = rebuild(*pickle.loads(content))
    error.__cause__ = WorkerTraceback(trace)
    return error


def _stranded(kind: str, message: str, why: str, trace: str) -> AsyncClfError:
    """What a caller gets for an estimator exception that could not cross back."""
    error = AsyncClfError(
        f"The estimator raised {kind}: {message} (the exception itself could not be sent "
        f"back from the worker: {why})"
    )
    error.__cause__ = WorkerTraceback(trace)
    return error


def scores(estimator: Any, texts: list[str]) -> NDArray[np.float64]:
    """One column per class: probabilities if the estimator has them, else decisions."""
    if hasattr(estimator, "predict_proba"):
        return np.asarray(estimator.predict_proba(texts), dtype=np.float64)
    decision = np.asarray(estimator.decision_function(texts), dtype=np.float64)
    return np.column_stack([-decision, decision]) if decision.ndim == 1 else decision


KINDS = ("predict", "predict_proba", "decision_function", "scores")
"""The computations a prediction batch can run."""


class ModelHandle:
    """A model version as it crosses to a worker process: a key and a file, not the model.

    The parent writes each version to a file once (``ProcessExecutor``); a worker loads
    it on first use and keeps the newest versions in memory, so a batch carries this
    small handle, never the model.
    """

    __slots__ = ("key", "path")

    KEEP = 2
    """Versions a worker keeps loaded: the serving one and the one before (batches
    formed just before a swap still name it)."""

    def __init__(self, key: str, path: str) -> None:
        self.key = key
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return ModelHandle, (self.key, self.path)

    def resolve(self) -> Any:
        """Return the model, from this worker's cache or from its file."""
        model = _LOADED.get(self.key)
        if model is None:
            with _from_parent():
                model = unpack(load(self.path))
            while len(_LOADED) >= self.KEEP:
                del _LOADED[next(iter(_LOADED))]
            _LOADED[self.key] = model
        return model


_LOADED: dict[str, Any] = {}
"""The model versions this worker process holds, oldest first."""


def resolve(model: Any) -> Any:
    """The estimator itself, whether given or named by a :class:`ModelHandle`."""
    return model.resolve() if isinstance(model, ModelHandle) else model


def compute(model: Any, kind: str, settings: dict[str, Any], texts: list[str]) -> Any:
    """Run the computation ``kind`` on ``texts`` under the caller's sklearn ``settings``.

    Raises:
        AsyncClfError: scores (``predict_proba``, ``decision_function``) that do not
            have one column per class, so no column is read as another class's.
    """
    estimator = resolve(model)
    with sklearn.config_context(**settings):
        rows = scores(estimator, texts) if kind == "scores" else getattr(estimator, kind)(texts)
    if kind != "predict":
        shape = np.shape(rows)
        classes = len(estimator.classes_)
        binary_decision = kind == "decision_function" and classes == 2 and len(shape) == 1
        if not binary_decision and shape[1:] != (classes,):
            method = "predict_proba or decision_function" if kind == "scores" else kind
            msg = (
                f"The estimator's {method} returned rows of shape {shape[1:]} for "
                f"{classes} classes; expected one column per class."
            )
            raise AsyncClfError(msg)
    return rows


def served_copy(estimator: Any) -> tuple[Any, str]:
    """A deep copy of a fitted classifier to serve, and its fingerprint; or
    NotFittedError."""
    if isinstance(estimator, BaseEstimator):  # others are judged by their classes_ alone
        try:
            check_is_fitted(estimator)
        except _SklearnNotFittedError:
            msg = f"{type(estimator).__name__} is not fitted; fit it before serving it."
            raise NotFittedError(msg) from None
    if getattr(estimator, "classes_", None) is None:
        msg = f"{type(estimator).__name__} has no classes_: is it a fitted classifier?"
        raise UnsupportedEstimatorError(msg)
    return snapshot(estimator)


def fit(
    estimator: Any,
    texts: list[str],
    labels: list[Hashable],
    step_done: Callable[[int], object] | None = None,
) -> Any:
    """Fit ``estimator`` (a fresh clone) and return it.

    With ``step_done``, a scikit-learn ``Pipeline`` (not a subclass, whose ``fit`` may
    differ) without ``memory`` is fitted a step at a time as its own ``fit`` does: its
    steps validated, each transformer's ``fit_transform`` (or ``fit`` then
    ``transform``) feeding the next, then the last step's ``fit``. ``step_done(n)`` is
    called as each of the first steps ends, ``n`` the steps fitted so far (the last
    step's end is the fit's); it may raise to stop the fit there.
    """
    if step_done is None or type(estimator) is not Pipeline or estimator.memory is not None:
        estimator.fit(texts, labels)
        return estimator
    estimator._validate_steps()
    features: Any = texts
    for done, (_, step) in enumerate(estimator.steps[:-1], start=1):
        if step is not None and step != "passthrough":
            if hasattr(step, "fit_transform"):
                features = step.fit_transform(features, labels)
            else:
                features = step.fit(features, labels).transform(features)
        step_done(done)
    final = estimator.steps[-1][1]
    if final is not None and final != "passthrough":
        final.fit(features, labels)
    return estimator


def fit_steps(estimator: Any) -> int:
    """How many steps :func:`fit` reports for ``estimator``: a pipeline's, else 1."""
    return len(estimator.steps) if isinstance(estimator, Pipeline) else 1


def partial_fit(
    serving: Any, fresh: Any, texts: list[str], labels: list[Hashable], classes: Any
) -> Any:
    """Copy the serving estimator (or take a fresh one), update the copy, return it.

    ``serving`` may be a :class:`ModelHandle` (in a worker process).
    """
    estimator = fresh if serving is None else copy.deepcopy(resolve(serving))
    update(estimator, texts, labels, classes)
    return estimator


def learning_parts(estimator: Any) -> tuple[Callable[[list[str]], Any], Any]:
    """What learns incrementally in ``estimator``, and the transform that feeds it: a
    pipeline's last step and the steps before it (which must be fitted or stateless),
    or the estimator itself and no transform."""
    if not isinstance(estimator, Pipeline):
        return (lambda texts: texts), estimator
    head = estimator[:-1]
    for name, step in head.steps:
        try:
            check_is_fitted(step)
        except _SklearnNotFittedError:
            msg = (
                f"partial_fit needs the pipeline's transformers to be stateless (such as "
                f"HashingVectorizer) or fitted by an earlier fit; step {name!r} is not."
            )
            raise UnsupportedEstimatorError(msg) from None
    return head.transform, estimator[-1]


def update(estimator: Any, texts: list[str], labels: list[Hashable], classes: Any) -> None:
    """``partial_fit`` ``estimator`` in place (a pipeline: its last step)."""
    transform, final = learning_parts(estimator)
    final.partial_fit(transform(texts), labels, classes=classes)


def learn_step(
    learner: Any,
    texts: list[str],
    labels: list[Hashable],
    classes: list[Hashable],
    trained: bool,
    publish: bool,
) -> tuple[list[bool], Any]:
    """Test, then train: predict ``texts`` with ``learner`` (if ``trained``), then update
    it in place with them, the texts transformed once for both. Return which
    predictions were right, and a copy of the updated learner to serve if ``publish``
    (else None). Runs in this process: the learner is the caller's own object."""
    transform, final = learning_parts(learner)
    X = transform(texts)
    if trained:
        predicted = np.asarray(final.predict(X)).tolist()
        hits = [guess == truth for guess, truth in zip(predicted, labels, strict=True)]
    else:
        hits = [False] * len(texts)  # nothing learned yet: no prediction is right
    final.partial_fit(X, labels, classes=classes)
    return hits, snapshot(learner) if publish else None


def snapshot(estimator: Any) -> tuple[Any, str]:
    """A deep copy of ``estimator`` to serve, and its fingerprint."""
    served = copy.deepcopy(estimator)
    return served, fingerprint(served)


def identified(estimator: Any) -> tuple[Any, str]:
    """``estimator`` and its fingerprint (see :func:`fingerprint`)."""
    return estimator, fingerprint(estimator)


class _Fingerprint(NumpyHasher):  # type: ignore[misc]
    """joblib's hasher, blind to private ``_..._id`` ints: object ids, which differ from
    process to process (scikit-learn's text vectorisers keep ``_stop_words_id``)."""

    def _batch_setitems(self, items: Any, *args: Any) -> None:
        kept = [
            (key, value)
            for key, value in items
            if not (
                isinstance(key, str)
                and key.startswith("_")
                and key.endswith("_id")
                and type(value) is int
            )
        ]
        super()._batch_setitems(iter(kept), *args)


def fingerprint(estimator: Any) -> str:
    """A model's identity: 16 hex digits of a hash of all it learned and was set to.

    joblib's hash (made for cache keys that hold across processes: it hashes arrays by
    their bytes, sorts dicts and sets, and ignores which objects are shared), with
    SHA-1, of the estimator with its vocabularies replaced by their terms in column
    order, and without private ``_..._id`` ints (see :class:`_Fingerprint`); memory-mapped
    arrays count as the arrays they hold. The same
    model gives the same fingerprint in any process with the same scikit-learn,
    however its vocabularies' dicts were built (fitted, or rebuilt by ``load``); a
    refit on other data or with other settings gives another. (Sorting a dict of
    130,000 terms took joblib 0.4 s; in column order they cost a few ms.)

    Not a security check: pin a file's SHA-256 for that. An estimator this cannot hash
    (one that cannot be pickled, or whose vocabulary holds other terms than strings)
    gets a random fingerprint, unique to this copy.
    """
    try:
        return _fingerprint(estimator)
    except Exception:  # pickling raises PicklingError, or what a __reduce__ raises
        return os.urandom(8).hex()


NETWORK_STATE = "_asyncclf_state_"
"""An estimator with this method (and ``_asyncclf_restore_``, a classmethod) is a
network: ``state()`` returns a JSON-able description of it and its weights as numpy
arrays, and ``restore(description, arrays)`` builds it back. Model files store it so
(see ``_persistence``), and its fingerprint hashes that (see docs/estimators.md)."""


def _fingerprint(estimator: Any) -> str:
    hasher = _Fingerprint(hash_name="sha1", coerce_mmap=True)
    if hasattr(estimator, NETWORK_STATE):
        # What the network's file would hold: pickling a torch module (as joblib's
        # hash would) took 18 s for 2**20 x 100 weights and gave other bytes each time.
        description, arrays = getattr(estimator, NETWORK_STATE)()
        content = (json.dumps(description, sort_keys=True), sorted(arrays.items()))
        return str(hasher.hash(content))[:16]
    packed, vocabularies = pack(estimator)
    ordered = {}
    for name, arrays in vocabularies.items():
        order = np.argsort(arrays["columns"], kind="stable")
        terms = list(vocabulary_of(arrays))
        # One bytes object and two arrays: hashed in a call each, where a list of
        # terms would cost a Python call per term.
        ordered[name] = (
            arrays["columns"][order],
            arrays["lengths"][order],
            "".join([terms[i] for i in order.tolist()]).encode("utf-8", "surrogatepass"),
        )
    return str(hasher.hash((packed, ordered)))[:16]


def _nan_rows(rows: Any) -> list[int]:
    """Positions of rows holding NaN or infinity in a float result (not a score)."""
    if not isinstance(rows, np.ndarray) or rows.dtype.kind not in "fc" or not len(rows):
        return []
    bad = ~np.isfinite(rows.reshape(len(rows), -1)).all(axis=1)
    return np.flatnonzero(bad).tolist() if bad.any() else []


def run_batch(
    compute: Compute, texts: list[str], spans: list[Span], limit: int
) -> tuple[list[Segment], int]:
    """Compute rows for ``texts``; when the estimator raises, find whom it fails.

    ``spans`` are the batch's requests, in order: ``(start, stop, per_item)``. One
    estimator call answers the whole batch when it can, in chunks of at most ``limit``
    texts. When it raises, the requests are split in halves and each half is retried;
    when both halves fail, each of their requests is retried alone. A request that
    fails alone gets the exception, unless it is ``per_item`` (a stream's texts):
    then its texts are searched the same way. This finds a lone bad text in about
    ``2 log2(requests)`` calls, and a batch that fails everywhere costs at most one
    call per request (per text for ``per_item`` ones) and three passes over its
    texts, not the ``2n - 1`` calls of a full bisection. A row holding NaN fails its
    text alone.

    Returns the segments covering ``texts`` in order and the number of calls made.
    """
    segments: list[Segment] = []
    calls = 0

    def run(units: list[Span]) -> Exception | None:
        nonlocal calls
        start, stop = units[0][0], units[-1][1]
        parts = []
        try:
            for first in range(start, stop, limit):
                last = min(first + limit, stop)
                calls += 1
                chunk = texts if last - first == len(texts) else texts[first:last]
                rows = np.asarray(compute(chunk))
                if rows.ndim == 0:
                    msg = (
                        f"The estimator returned {rows.item()!r} instead of one row for "
                        f"each of {last - first} texts."
                    )
                    raise AsyncClfError(msg)
                if len(rows) != last - first:
                    msg = f"The estimator returned {len(rows)} rows for {last - first} texts."
                    raise AsyncClfError(msg)
                parts.append(rows)
        except Exception as exc:
            return exc
        rows = parts[0] if len(parts) == 1 else np.concatenate(parts)
        at = start
        for bad in _nan_rows(rows):
            if start + bad > at:
                segments.append((at, start + bad, rows[at - start : bad]))
            msg = "The estimator returned a NaN or infinite score for this text."
            segments.append((start + bad, start + bad + 1, AsyncClfError(msg)))
            at = start + bad + 1
        if at < stop:
            segments.append((at, stop, rows if at == start else rows[at - start :]))
        return None

    def blame(units: list[Span], error: Exception) -> None:
        """Find the failing texts among ``units``, which failed together with ``error``."""
        if len(units) == 1:
            start, stop, per_item = units[0]
            if per_item and stop - start > 1:
                blame([(i, i + 1, False) for i in range(start, stop)], error)
            else:
                # A copy per request: an estimator may raise one object many times.
                segments.append((start, stop, own_copy(error)))
            return
        middle = len(units) // 2
        halves = [(half, run(half)) for half in (units[:middle], units[middle:])]
        failed = [(half, exc) for half, exc in halves if exc is not None]
        if len(failed) == 1:
            blame(*failed[0])
            return
        # Both halves failed (or neither, when the failure needed them together): the
        # failures are dense, so stop halving and try each request on its own.
        for half, exc in failed:
            if len(half) == 1:
                blame(half, exc)
                continue
            for unit in half:
                alone = run([unit])
                if alone is not None:
                    blame([unit], alone)

    if texts:
        error = run(spans)
        if error is not None:
            blame(spans, error)
    segments.sort(key=lambda segment: segment[0])
    return segments, calls


def timed_batch(
    compute: Compute, texts: list[str], spans: list[Span], limit: int
) -> tuple[list[Segment], int, float]:
    """:func:`run_batch`, and the seconds it took (run in the worker)."""
    started = time.perf_counter()
    segments, calls = run_batch(compute, texts, spans, limit)
    return segments, calls, time.perf_counter() - started


# -- models as they cross to workers and files ------------------------------------


def vectorisers(estimator: Any, packed: bool) -> dict[str, Any]:
    """The estimator's parts (by ``get_params`` name, ``""`` for itself) with a vocabulary.

    ``packed`` picks the parts of a loaded estimator whose vocabulary ``_pack`` took
    out (``vocabulary_`` None) instead of those holding one.
    """
    parts = {"": estimator}
    if hasattr(estimator, "get_params"):
        parts |= estimator.get_params(deep=True)
    found: dict[str, Any] = {}
    seen: set[int] = set()
    for name, part in parts.items():
        vocabulary = getattr(part, "vocabulary_", False)
        wanted = (
            vocabulary is None and hasattr(part, "build_analyzer")
            if packed
            else (isinstance(vocabulary, dict))
        )
        if wanted and id(part) not in seen:
            seen.add(id(part))
            found[name] = part
    return found


def pack(estimator: Any) -> tuple[Any, dict[str, dict[str, NDArray[Any]]]]:
    """A copy of ``estimator`` without its vocabularies, and those as three arrays each.

    skops writes a dict entry by entry, as JSON nodes of a few hundred bytes each: the
    default pipeline fitted on Chinese reviews (601,169 terms) made a 423 MB file that
    took 20 s to write. As arrays (the terms' UTF-8, their lengths, their columns) a
    vocabulary costs a few bytes a term. The serving estimator is not touched: the
    copy shares nothing with it but skips the vocabularies.
    """
    parts = vectorisers(estimator, packed=False)
    if not parts:
        return estimator, {}
    # deepcopy returns what the memo holds for an object: None for each vocabulary.
    memo: dict[int, Any] = {id(part.vocabulary_): None for part in parts.values()}
    packed = copy.deepcopy(estimator, memo)
    vocabularies: dict[str, dict[str, NDArray[Any]]] = {}
    for name, part in parts.items():
        terms = list(part.vocabulary_)
        vocabularies[name] = {
            "text": np.frombuffer("".join(terms).encode("utf-8", "surrogatepass"), dtype=np.uint8),
            "lengths": np.fromiter(map(len, terms), dtype=np.int64, count=len(terms)),
            "columns": np.fromiter(part.vocabulary_.values(), dtype=np.int64, count=len(terms)),
        }
    return packed, vocabularies


def vocabulary_of(arrays: dict[str, NDArray[Any]]) -> dict[str, int]:
    """Rebuild a vocabulary from the arrays :func:`pack` made of it."""
    terms = arrays["text"].tobytes().decode("utf-8", "surrogatepass")
    ends = np.cumsum(arrays["lengths"]).tolist()
    starts = [0, *ends[:-1]]
    columns = arrays["columns"].tolist()
    return {
        terms[start:end]: column for start, end, column in zip(starts, ends, columns, strict=True)
    }


def unpack(content: tuple[Any, dict[str, dict[str, NDArray[Any]]]]) -> Any:
    """The estimator :func:`pack` took apart, whole again (trusted content only)."""
    estimator, vocabularies = content
    parts = vectorisers(estimator, packed=True)
    for name, arrays in vocabularies.items():
        parts[name].vocabulary_ = vocabulary_of(arrays)
    return estimator


def fit_packed(estimator: Any, texts: list[str], labels: list[Hashable]) -> Any:
    """Fit in a worker process and return the model packed: its vocabularies as
    arrays, which unpickle in a few milliseconds, where a dict of 130,000 terms held
    the parent's GIL (and event loop) for 44 ms."""
    return pack(fit(estimator, texts, labels))


def partial_fit_packed(
    serving: Any, fresh: Any, texts: list[str], labels: list[Hashable], classes: Any
) -> Any:
    """:func:`partial_fit` in a worker process, the result packed as by :func:`fit_packed`."""
    return pack(partial_fit(serving, fresh, texts, labels, classes))


def dump(content: Any, path: str) -> None:
    """Pickle ``content`` into the file ``path``.

    Pickled into a file, not into bytes: the pickler writes each 64 KiB frame, and each
    large array, as it goes, and lets other threads run while it does. ``pickle.dumps``
    of the 20 Newsgroups training texts holds the GIL (and a parent's event loop) for
    18 ms in one call; ``dump`` for under 1 ms at a time.
    """
    with open(path, "wb") as file:
        pickle.dump(content, file, protocol=pickle.HIGHEST_PROTOCOL)


def load(path: str, *, remove: bool = False) -> Any:
    """Unpickle the file ``path`` (trusted content only), then remove it if asked.

    Like :func:`dump`, it reads frame by frame and lets other threads run between.
    """
    try:
        with open(path, "rb") as file:
            return pickle.load(file)
    finally:
        if remove:
            with contextlib.suppress(OSError):
                os.remove(path)


def call_in_files(request: str, reply: str) -> None:
    """Run the ``(config, threads, func, args)`` call pickled in the file ``request``
    and pickle its result into the file ``reply``.

    Used for fits in worker processes, so that what crosses (training texts, the
    fitted model) never passes through the parent's event loop, and the parent
    pickles and unpickles it in threads, a frame at a time.
    """
    with _from_parent():
        config, threads, func, args = load(request, remove=True)
    dump(call_portable(config, threads, func, args), reply)


@contextmanager
def _from_parent() -> Iterator[None]:
    """Say what to do when a worker process cannot unpickle what its parent sent
    because it refers to the parent's ``__main__``.

    A worker process imports the parent's main module only when it is a file: a
    class or function defined in a notebook cell, an interactive session or
    ``python -c`` cannot be found there.
    """
    try:
        yield
    except (AttributeError, ModuleNotFoundError) as exc:
        if "__main__" not in str(exc):
            raise
        msg = (
            f"A worker process could not find something defined in the parent's __main__ "
            f"({exc}): classes and functions defined in a notebook cell, an interactive "
            f"session or python -c cannot be sent to worker processes. Define them in a "
            f"module (a .py file the workers can import), or use executor='threads'."
        )
        raise AsyncClfError(msg) from exc


def load_unpacked(path: str) -> Any:
    """The model a ``*_packed`` fit left in the file ``path`` (removed once read), or
    the exception it raised, raised."""
    return unpack(returned(load(path, remove=True)))
