"""What the machine gives at this moment: a plain process pool, no asyncclf.

On a shared machine two busy processes do not always get two cores. The scaling
benchmarks print this ceiling beside their figures, measured in the same run.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Any

from asyncclf._work.threads import call_in_worker

_MODEL: Any = None


def _load_model(path: str) -> None:
    """Pool initializer: load the pickled model once per process."""
    global _MODEL
    with open(path, "rb") as file:
        _MODEL = pickle.load(file)


def _predict_chunk(texts: list[str]) -> None:
    # As asyncclf's workers call it: BLAS/OpenMP capped to one thread.
    call_in_worker({}, 1, _MODEL.predict_proba, (texts,))


@contextmanager
def machine_pool(estimator: Any, workers: int) -> Iterator[ProcessPoolExecutor]:
    """A started pool of ``workers`` fresh processes, each holding ``estimator``."""
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "model.pickle")
        with open(path, "wb") as file:
            pickle.dump(estimator, file)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_load_model, initargs=(path,)
        ) as pool:
            list(pool.map(_predict_chunk, [["start"]] * workers))  # start, load the model
            yield pool


def pool_ceiling(pool: ProcessPoolExecutor, estimator: Any, texts: list[str], size: int) -> float:
    """``pool`` mapping ``predict_proba`` over ``texts`` in chunks of ``size``, as a
    ratio of one single-thread vectorised call over them (measured just before)."""
    chunks = [texts[i : i + size] for i in range(0, len(texts), size)]
    started = time.perf_counter()
    estimator.predict_proba(texts)
    base = time.perf_counter() - started
    started = time.perf_counter()
    list(pool.map(_predict_chunk, chunks))
    return base / (time.perf_counter() - started)
