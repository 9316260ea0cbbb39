"""Model versions shipped to worker processes as files, and fits through files."""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .._errors import AsyncClfError
from .packing import unpack
from .transport import call_portable, returned


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
    """Run the :class:`~asyncclf._work.threads.Call` pickled in the file ``request``
    and pickle its result into the file ``reply``.

    Used for fits in worker processes, so that what crosses (training texts, the
    fitted model) never passes through the parent's event loop, and the parent
    pickles and unpickles it in threads, a frame at a time.
    """
    with _from_parent():
        call = load(request, remove=True)
    dump(call_portable(call), reply)


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
