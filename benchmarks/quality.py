"""Accuracy and fit time of the default pipeline, and event-loop lag during a fit.

Usage: python benchmarks/quality.py

* 20 Newsgroups, official split, raw text, all 20 classes: accuracy and fit time of
  ``AsyncClassifier()`` next to plain scikit-learn ``TfidfVectorizer(sublinear_tf=True)``
  + ``LinearSVC()`` trained in the same run, and their ratio.
* SMS Spam Collection: 5-fold stratified accuracy (shuffled, random_state=0).
* The event loop's lag (how late a task sleeping 5 ms wakes) while the 20 Newsgroups
  fit runs, on asyncio and trio.
"""

from __future__ import annotations

import statistics
import time

import anyio
import numpy as np
from _data import load, news_split
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.svm import LinearSVC
from throughput import lag_monitor, percentile

from asyncclf import AsyncClassifier


def main() -> None:
    train_x, train_y, test_x, test_y = news_split()

    started = time.perf_counter()
    baseline = make_pipeline(TfidfVectorizer(sublinear_tf=True), LinearSVC()).fit(train_x, train_y)
    baseline_fit = time.perf_counter() - started
    baseline_accuracy = baseline.score(test_x, test_y)

    lags: dict[str, list[float]] = {}
    fits: dict[str, float] = {}
    accuracy = {}
    for backend in ("asyncio", "trio"):

        async def fit_and_score(backend: str = backend) -> None:
            samples: list[float] = []
            stop = anyio.Event()
            clf = AsyncClassifier()
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(lag_monitor, samples, stop)
                started = time.perf_counter()
                await clf.fit(train_x, train_y)
                fits[backend] = time.perf_counter() - started
                stop.set()
            lags[backend] = samples
            accuracy[backend] = await clf.score(test_x, test_y)

        anyio.run(fit_and_score, backend=backend)

    print("20 Newsgroups (official split, raw text, 20 classes):")
    print(
        f"  TF-IDF + LinearSVC (plain sklearn): accuracy {baseline_accuracy:.4f}, "
        f"fit {baseline_fit:.2f} s"
    )
    for backend in ("asyncio", "trio"):
        print(
            f"  AsyncClassifier() on {backend:7}: accuracy {accuracy[backend]:.4f}, "
            f"fit {fits[backend]:.2f} s = {fits[backend] / baseline_fit:.2f}x the baseline"
        )
    for backend, samples in lags.items():
        print(
            f"  event-loop lag during the fit on {backend}: p50 "
            f"{statistics.median(samples) * 1e3:.2f} ms, p99 "
            f"{percentile(samples, 0.99) * 1e3:.2f} ms, max {max(samples) * 1e3:.2f} ms "
            f"({len(samples)} wake-ups of a 5 ms sleeper)"
        )

    rows = load("sms_spam")
    texts = np.asarray([r["text"] for r in rows], dtype=object)
    labels = np.asarray([r["label"] for r in rows], dtype=object)
    scores = []
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    for train, test in folds.split(texts, labels):

        async def fold(train: np.ndarray = train, test: np.ndarray = test) -> float:
            clf = await AsyncClassifier().fit(list(texts[train]), list(labels[train]))
            return await clf.score(list(texts[test]), list(labels[test]))

        scores.append(anyio.run(fold))
    print(
        f"SMS Spam Collection, 5-fold stratified accuracy: {np.mean(scores):.4f} "
        f"± {np.std(scores):.4f} (folds: {', '.join(f'{s:.4f}' for s in scores)})"
    )


if __name__ == "__main__":
    main()
