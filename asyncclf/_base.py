"""The classifier's settings and their scikit-learn params protocol, its lifecycle, and
the model it serves: what every part of :class:`~asyncclf.AsyncClassifier` stands on."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from functools import partial
from typing import Any, Generic

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
import numpy as np
from numpy.typing import NDArray
from sklearn.base import clone
from typing_extensions import Self

from ._batching import Batcher
from ._errors import (
    InvalidParameterError,
    UnsupportedEstimatorError,
)
from ._executors import make_executor
from ._executors.base import LIMITER, Executor
from ._model import (
    Config,
    Model,
    batch_key,
    default_estimator,
)
from ._serving import Slot
from ._types import (
    BatchStatistics,
    Label,
    Overload,
)
from ._validation import (
    NONE,
    AnyOf,
    HasMethods,
    Instance,
    Integer,
    Number,
    Options,
    Rule,
    check_params,
    check_texts,
)
from ._work import compute

__all__ = ["ClassifierBase"]


def _rehearse(estimator: Any, nested: dict[str, Any]) -> None:
    """Apply ``nested`` to a clone first: a failure there leaves ``estimator`` whole.

    scikit-learn's ``set_params`` applies names one by one, so one that fails halfway
    (replacing a step, then setting a parameter it no longer has) would leave the
    estimator half changed.
    """
    try:
        rehearsal = clone(estimator)
    except Exception:  # not clonable: nothing to rehearse on
        return
    try:
        rehearsal.set_params(**nested)
    except Exception as exc:
        names = ", ".join(f"estimator__{name}" for name in nested)
        msg = f"{type(estimator).__name__} refused the parameters {names}: {exc}"
        raise InvalidParameterError(msg) from exc


_RULES: dict[str, Rule[Any]] = {
    "estimator": AnyOf(NONE, HasMethods("fit", description="a scikit-learn estimator (with fit)")),
    "executor": AnyOf(
        Options("threads", "processes"),
        Instance(
            Executor,
            "an executor object (such as asyncclf.ProcessExecutor(max_workers=4))",
        ),
    ),
    "limiter": LIMITER,
    "max_batch_size": Integer(1),
    "max_latency": Number(0, unit="seconds"),
    "max_queue": Integer(1),
    "overload": Options("wait", "raise"),
}
"""What each setting accepts (scikit-learn's ``_parameter_constraints``)."""

_BATCHING = ("max_batch_size", "max_latency", "max_queue", "overload")
"""The settings the batcher takes, as checked."""


def _check_settings(params: dict[str, Any]) -> dict[str, Any]:
    """Check the classifier's settings, each and together; return them as checked
    (numpy integers as ``int``), or raise ``InvalidParameterError`` naming a bad one."""
    checked = check_params(params, _RULES)
    if checked["max_queue"] < checked["max_batch_size"]:
        msg = (
            f"max_queue ({checked['max_queue']}) must be at least max_batch_size "
            f"({checked['max_batch_size']})."
        )
        raise InvalidParameterError(msg)
    if checked["limiter"] is not None and isinstance(checked["executor"], Executor):
        msg = (
            f"limiter applies to executor='threads' or 'processes'; an executor object "
            f"has its own: pass the limiter to it ({type(checked['executor']).__name__}(..., "
            f"limiter=limiter)), which classifiers sharing it then share."
        )
        raise InvalidParameterError(msg)
    return checked


class ClassifierBase(Generic[Label]):
    """Settings, lifecycle and the served model of an :class:`~asyncclf.AsyncClassifier`
    (see there); the methods that use them are in its subclasses."""

    def __init__(
        self,
        estimator: Any = None,
        *,
        executor: str | Executor = "threads",
        limiter: anyio.CapacityLimiter | None = None,
        max_batch_size: int = 256,
        max_latency: float = 0.002,
        max_queue: int = 65536,
        overload: Overload = "wait",
    ) -> None:
        checked = _check_settings(
            {
                "estimator": estimator,
                "executor": executor,
                "limiter": limiter,
                "max_batch_size": max_batch_size,
                "max_latency": max_latency,
                "max_queue": max_queue,
                "overload": overload,
            }
        )
        # Stored as given (scikit-learn's convention); the batcher gets them as checked.
        self.estimator = estimator
        self.executor = executor
        self.limiter = limiter
        self.max_batch_size = max_batch_size
        self.max_latency = max_latency
        self.max_queue = max_queue
        self.overload = overload
        self._executor = make_executor(checked["executor"], limiter)
        self._batcher = Batcher(
            self._executor, self._prepare, **{name: checked[name] for name in _BATCHING}
        )
        self._slot = Slot()

    def __repr__(self) -> str:
        estimator = "default" if self.estimator is None else type(self.estimator).__name__
        closed = " closed" if self._slot.closed else ""
        return f"<AsyncClassifier estimator={estimator} version={self.version}{closed}>"

    # -- lifecycle -------------------------------------------------------------------

    async def aclose(self) -> None:
        """Release what the classifier holds, and refuse every later call.

        The serving model is dropped, with what an executor shipped for it (a worker
        process's model file, the model's data on a Dask cluster) once the calls
        reading it are done, and the executor the classifier made from
        ``executor="threads"`` or ``"processes"`` is closed. An executor object you
        passed is yours to close (``async with DaskExecutor(...) as executor``): other
        classifiers may share it. Calls under way finish; a fit or a ``learn`` publish
        that ends after this raises :class:`AsyncClfError`, as does every later call.
        Idempotent and shielded from cancellation. A classifier never closed is
        cleaned up when it is garbage-collected or at interpreter exit.
        """
        if self._slot.closed:
            return
        self._slot.close()
        if isinstance(self.executor, str):
            with anyio.CancelScope(shield=True):
                await self._executor.aclose()

    async def __aenter__(self) -> Self:
        """``async with AsyncClassifier(...) as clf:`` closes it at the end."""
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- parameters (scikit-learn's conventions) ----------------------------------------

    _PARAMS = (
        "estimator",
        "executor",
        "limiter",
        "max_batch_size",
        "max_latency",
        "max_queue",
        "overload",
    )

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """Return the constructor arguments, and with ``deep`` the estimator's, prefixed.

        With ``deep``, the ``estimator__*`` names are those of :func:`default_estimator`
        when ``estimator`` is ``None``: every name ``set_params`` accepts is listed.
        """
        params = {name: getattr(self, name) for name in self._PARAMS}
        if deep:
            estimator = self.estimator if self.estimator is not None else default_estimator()
            if hasattr(estimator, "get_params"):
                for name, value in estimator.get_params(deep=True).items():
                    params[f"estimator__{name}"] = value
        return params

    def set_params(self, **params: Any) -> Self:
        """Set constructor arguments; ``estimator__name`` sets the estimator's own.

        Every name and value is checked before anything changes, so a call that
        raises :class:`InvalidParameterError` changes nothing. Setting an
        ``estimator__*`` name while ``estimator`` is ``None`` first makes it a
        :func:`default_estimator`. The serving model is not touched: estimator settings
        apply from the next ``fit`` (``partial_fit`` goes on updating the serving
        model). Batching settings apply to batches formed from then on; texts already
        queued are never stranded.
        """
        self._slot.require_open()
        direct: dict[str, Any] = {}
        nested: dict[str, Any] = {}
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in self._PARAMS or (sub and name != "estimator"):
                msg = f"Invalid parameter {key!r} for AsyncClassifier; valid: {self._PARAMS}."
                raise InvalidParameterError(msg)
            if sub:
                nested[sub] = value
            else:
                direct[name] = value
        merged = {name: getattr(self, name) for name in self._PARAMS} | direct
        checked = _check_settings(merged)
        estimator = merged["estimator"]
        if nested:
            if estimator is None:
                estimator = merged["estimator"] = default_estimator()
            if not hasattr(estimator, "set_params"):
                msg = f"{type(estimator).__name__} has no set_params for {sorted(nested)}."
                raise InvalidParameterError(msg)
            valid = estimator.get_params(deep=True)
            unknown = sorted(set(nested) - set(valid))
            if unknown:
                msg = (
                    f"Invalid parameter(s) {['estimator__' + name for name in unknown]} for "
                    f"AsyncClassifier: {type(estimator).__name__} has no such parameter; "
                    f"see get_params(deep=True) for the valid names."
                )
                raise InvalidParameterError(msg)
            _rehearse(estimator, nested)
            estimator.set_params(**nested)
        if merged["executor"] is not self.executor:
            # Batches already running finish on the old executor.
            self._executor = make_executor(checked["executor"], merged["limiter"])
            self._batcher.executor = self._executor
        elif merged["limiter"] is not self.limiter:
            self._executor.set_limiter(merged["limiter"])
        for name, value in merged.items():
            setattr(self, name, value)
        self._batcher.configure(**{name: checked[name] for name in _BATCHING})
        return self

    def __sklearn_clone__(self) -> Self:
        """Return an unfitted copy with the same settings, as ``sklearn.base.clone`` asks.

        The estimator is cloned; a ``limiter`` is shared by reference, so clones are
        bounded together, as passing one limiter to several classifiers means.
        """
        params = self.get_params(deep=False)
        if params["estimator"] is not None:
            params["estimator"] = clone(params["estimator"])
        return type(self)(**params)

    # -- the serving model -----------------------------------------------------------

    @property
    def version(self) -> int:
        """The serving model's number in this process: 0 before the first model.

        +1 each time a new model is served: every successful ``fit``, ``partial_fit``
        and ``swap``, and each publish of :meth:`learn`. A classifier made by
        :meth:`load` serves the file's model at the version it was saved with. A
        failed or cancelled call leaves it unchanged. See :attr:`model_id` for an
        identity that holds across processes.
        """
        return self._slot.version

    @property
    def estimator_(self) -> Any:
        """The fitted synchronous estimator serving predictions now."""
        return self._slot.require().estimator

    @property
    def classes_(self) -> NDArray[Any]:
        """The class labels, in the order of ``predict_proba``'s columns."""
        return np.asarray(self._slot.require().estimator.classes_)

    @property
    def model_id(self) -> str:
        """The serving model's identity: 16 hex digits of a hash of everything it
        learned and was set to ("" before the first fit).

        Unlike :attr:`version`, a count in this process, it is the same in every
        process serving the same model: loaded from the same file (which stores it),
        or fitted on the same data with the same settings and library versions; any
        other fit, ``partial_fit`` or publish of :meth:`learn` changes it.
        :class:`Prediction`, :class:`FailedPrediction` and :class:`Ranked` carry the
        identity of the model that answered. Not a security check: pin a file's
        SHA-256 for that. See docs/deployment.md.
        """
        return self._slot.model_id

    @property
    def limiter_(self) -> anyio.CapacityLimiter:
        """The capacity limiter whose tokens the classifier's work holds (``limiter`` or
        the executor's default)."""
        return self._executor.limiter

    # -- predictions -----------------------------------------------------------------

    def _prepare(self, key: Hashable) -> tuple[Any, Model]:
        model = self._slot.require()
        kind: str
        config: Config
        kind, config = key  # type: ignore[misc]
        return partial(compute.compute, self._executor.ref(model), kind, config.settings), model

    def _require(self, model: Model, kind: str) -> None:
        if kind in model.abilities:
            return
        method = "predict_proba or decision_function" if kind == "scores" else kind
        msg = f"{type(model.estimator).__name__} has no {method}, which this call needs."
        raise UnsupportedEstimatorError(msg)

    async def _array(
        self, kind: str, X: Iterable[str], empty: Callable[[Model], NDArray[Any]]
    ) -> NDArray[Any]:
        texts = check_texts(X)
        model = self._slot.require()
        self._require(model, kind)
        if not texts:
            return empty(model)
        result: NDArray[Any] = (await self._batcher.submit(batch_key(kind), texts)).rows()
        return result

    def statistics(self) -> BatchStatistics:
        """Return the batcher's counters: batches, items, queue depth, sizes, timings."""
        return self._batcher.statistics()
