"""What runs in a Dask worker for :class:`~asyncclf.DaskExecutor`: top-level, synchronous
functions and a small picklable handle naming a model version by key."""

from __future__ import annotations

import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from .._errors import AsyncClfError
from .handles import ModelHandle
from .packing import unpack
from .threads import Call
from .transport import Raised, call_portable

T = TypeVar("T")


class DaskModel(ModelHandle):
    """A model version as a task names it: a key, resolved from the worker's cache.

    :func:`run_in_worker` puts the versions a task names in reach of this thread
    before the task runs, so a batch carries this handle, never the model.
    """

    __slots__ = ()

    def __init__(self, key: str) -> None:
        super().__init__(key, "")

    def __reduce__(self) -> tuple[Any, ...]:
        return DaskModel, (self.key,)

    def resolve(self) -> Any:
        """Return the model version this handle names, unpacked once in this worker."""
        models: dict[str, Any] = getattr(_CURRENT, "models", {})
        try:
            return models[self.key]
        except KeyError:
            msg = f"The model version {self.key} was not sent with this task."
            raise AsyncClfError(msg) from None


class Missing:
    """What a task answers when its worker does not hold a model version it names."""

    __slots__ = ()


_CURRENT = threading.local()
"""The models the task running in this worker thread names, by key."""

_UNPACKED: OrderedDict[str, Any] = OrderedDict()
"""The model versions this worker process holds unpacked, least recently used first."""

_UNPACKED_LOCK = threading.Lock()


def _unpacked(key: str, content: bytes | None) -> Any:
    """The model version ``key``, from this worker's cache, or unpacked from
    ``content`` and kept; None if neither has it."""
    with _UNPACKED_LOCK:
        model = _UNPACKED.get(key)
        if model is not None:
            _UNPACKED.move_to_end(key)
        elif content is not None:
            model = _UNPACKED[key] = unpack(pickle.loads(content))
            while len(_UNPACKED) > ModelHandle.KEEP:
                _UNPACKED.popitem(last=False)
        return model


def run_in_worker(
    config: dict[str, Any],
    threads: int,
    func: Callable[..., T],
    args: tuple[Any, ...],
    keys: tuple[str, ...],
    models: dict[str, bytes],
) -> T | Raised | Missing:
    """Run ``func(*args)`` as :func:`~asyncclf._work.call_portable` does, in a Dask
    worker, with the model versions named by ``keys`` at hand: what it raises comes
    back whole, as a value.

    They come from this worker's cache, or from ``models`` (their bytes, resolved by
    Dask) when given. Returns :class:`Missing` if a version is in neither.
    """
    loaded = {}
    for key in keys:
        model = _unpacked(key, models.get(key))
        if model is None:
            return Missing()
        loaded[key] = model
    _CURRENT.models = loaded
    try:
        return call_portable(Call(func, args, config, threads))
    except Exception:  # pragma: no cover - call_portable returns what it raises
        raise
    except BaseException as exc:
        # SystemExit or KeyboardInterrupt from estimator code: fail the task, not the
        # worker (its cause would not survive the trip back, so it is in the message).
        msg = f"The Dask worker was interrupted by {exc!r}."
        raise AsyncClfError(msg) from None
    finally:
        _CURRENT.models = {}
