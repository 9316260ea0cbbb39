"""Run a worker call under the caller's scikit-learn settings, native threads capped."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import sklearn
from threadpoolctl import ThreadpoolController

T = TypeVar("T")


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


class Call:
    """One piece of estimator work, ready to run in any worker: ``func(*args)`` under the
    caller's scikit-learn ``config``, with ``threads`` BLAS/OpenMP threads at most.

    Calling it runs it in the calling thread. It pickles whenever ``func`` and ``args``
    do (``func`` is a top-level function), so a process or a cluster can run it too.
    """

    __slots__ = ("args", "config", "func", "threads")

    def __init__(
        self, func: Callable[..., Any], args: tuple[Any, ...], config: dict[str, Any], threads: int
    ) -> None:
        self.func = func
        self.args = args
        self.config = config
        self.threads = threads

    def __call__(self) -> Any:
        return call_in_worker(self.config, self.threads, self.func, self.args)

    def __reduce__(self) -> tuple[Any, ...]:
        return Call, (self.func, self.args, self.config, self.threads)

    def __repr__(self) -> str:
        name = getattr(self.func, "__qualname__", repr(self.func))
        return f"<asyncclf call {name} with {self.threads} native threads>"
