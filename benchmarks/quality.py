"""Accuracy and fit time of the default pipeline, and event-loop lag during a fit.

Usage: python benchmarks/quality.py [--neural]

* 20 Newsgroups, official split, raw text, all 20 classes: accuracy and fit time of
  ``AsyncClassifier()`` next to plain scikit-learn ``TfidfVectorizer(sublinear_tf=True)``
  + ``LinearSVC()`` trained in the same run: the median ratio of three back-to-back pairs.
* SMS Spam Collection: 5-fold stratified accuracy (shuffled, random_state=0).
* zh_reviews (Chinese, no spaces between words), its seeded split: accuracy of the
  default next to scikit-learn's word tokens (the default before it handled every
  script) and character 1-2-grams; and on 20 Newsgroups, the default's fit time next
  to the word-token default's, paired.
* The event loop's lag (how late a task sleeping 5 ms wakes) while the 20 Newsgroups
  fit runs, on asyncio and trio.

``--neural`` measures ``asyncclf.neural.EmbeddingBagClassifier()`` (default settings,
``random_state=0``) beside the default pipeline instead, fitted back to back: 20
Newsgroups accuracy and fit time, SMS 5-fold accuracy, and a stream through each over
the 20 Newsgroups test texts as a ratio of the same model's one vectorised
``predict_proba`` (best of three each).
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from typing import Any

import anyio
import numpy as np
from _data import load, news_split
from numpy.typing import NDArray
from sklearn.feature_extraction.text import HashingVectorizer, TfidfVectorizer
from sklearn.linear_model import SGDClassifier
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.svm import LinearSVC
from throughput import lag_monitor, percentile

from asyncclf import AsyncClassifier, default_estimator


def word_token_default() -> Any:
    """The default pipeline as it was: scikit-learn's word tokens for every script."""
    return default_estimator().set_params(
        tfidf__tokenizer=None, tfidf__token_pattern=r"(?u)\b\w\w+\b"
    )


def languages(train_x: list[str], train_y: list[str]) -> None:
    """Chinese accuracy of the default and of the alternatives; its cost on English."""
    rows = load("zh_reviews")
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    candidates = {
        "AsyncClassifier() (every script)": None,
        "word tokens (the default before)": word_token_default(),
        "character 1-2-gram TF-IDF + LinearSVC": make_pipeline(
            TfidfVectorizer(sublinear_tf=True, analyzer="char", ngram_range=(1, 2)),
            LinearSVC(),
        ),
    }
    print(f"zh_reviews (Chinese reviews, {len(train)} train / {len(test)} test), accuracy:")
    for name, estimator in candidates.items():

        async def score(estimator: Any = estimator) -> float:
            clf = await AsyncClassifier(estimator).fit(
                [r["text"] for r in train], [r["label"] for r in train]
            )
            return await clf.score([r["text"] for r in test], [r["label"] for r in test])

        print(f"  {name:40}: {anyio.run(score):.4f}")

    def fit_time(estimator: Any) -> float:
        started = time.perf_counter()
        estimator.fit(train_x, train_y)
        return time.perf_counter() - started

    pairs = [(fit_time(word_token_default()), fit_time(default_estimator())) for _ in range(3)]
    ratios = sorted(new / old for old, new in pairs)
    times = ", ".join(f"{new:.2f} s vs {old:.2f} s" for old, new in pairs)
    print(
        f"20 Newsgroups fit time, default / word-token default: "
        f"{statistics.median(ratios):.2f}x (median of {times})"
    )


def copy_on_write(train_x: list[str], train_y: list[str], test_x: list[str]) -> None:
    """What partial_fit's copy of the serving model costs, next to what it buys."""
    pipeline = make_pipeline(
        HashingVectorizer(n_features=2**18, alternate_sign=False),
        SGDClassifier(loss="log_loss", random_state=0),
    )
    clf: AsyncClassifier = anyio.run(
        lambda: AsyncClassifier(pipeline).partial_fit(
            train_x[:2000], train_y[:2000], classes=sorted(set(train_y))
        )
    )
    started = time.perf_counter()
    for _ in range(5):
        copy.deepcopy(clf.estimator_)
    copied = (time.perf_counter() - started) / 5

    async def one_update() -> float:
        started = time.perf_counter()
        await clf.partial_fit(train_x[2000:2256], train_y[2000:2256])
        return time.perf_counter() - started

    update = min(anyio.run(one_update) for _ in range(3))
    started = time.perf_counter()
    clf.estimator_.predict_proba(test_x[:256])
    batch = time.perf_counter() - started
    size = clf.estimator_[-1].coef_.nbytes / 2**20
    print(
        f"partial_fit copy-on-write (HashingVectorizer 2**18 + SGD, 20 classes, coef "
        f"{size:.0f} MiB): deepcopy {copied * 1e3:.1f} ms; a whole 256-text partial_fit "
        f"{update * 1e3:.1f} ms; one 256-text predict_proba batch {batch * 1e3:.1f} ms"
    )


def neural() -> None:
    """EmbeddingBagClassifier beside the default pipeline (needs the torch extra)."""
    from asyncclf.neural import EmbeddingBagClassifier

    train_x, train_y, test_x, test_y = news_split()
    models = {
        "default pipeline": lambda: None,
        "EmbeddingBagClassifier": lambda: EmbeddingBagClassifier(random_state=0),
    }
    print("20 Newsgroups (official split), fitted back to back on this machine's 2 cores:")
    for name, make in models.items():

        async def measure(make: Any = make, name: str = name) -> None:
            clf = AsyncClassifier(make())
            started = time.perf_counter()
            await clf.fit(train_x, train_y)
            fitted = time.perf_counter() - started
            accuracy = await clf.score(test_x, test_y)
            vectorised, streamed = [], []
            for _ in range(3):
                started = time.perf_counter()
                await anyio.to_thread.run_sync(clf.estimator_.predict_proba, test_x)
                vectorised.append(time.perf_counter() - started)
                started = time.perf_counter()
                async with clf.stream(test_x) as results:
                    async for _ in results:
                        pass
                streamed.append(time.perf_counter() - started)
            print(
                f"  {name:23}: accuracy {accuracy:.4f}, fit {fitted:6.1f} s; stream of "
                f"{len(test_x)} texts {min(streamed):.2f} s, vectorised predict_proba "
                f"{min(vectorised):.2f} s: ratio {min(vectorised) / min(streamed):.2f}"
            )

        anyio.run(measure)
    rows = load("sms_spam")
    texts = np.asarray([r["text"] for r in rows], dtype=object)
    labels = np.asarray([r["label"] for r in rows], dtype=object)
    for name, make in models.items():
        scores = []
        started = time.perf_counter()
        for train, test in StratifiedKFold(5, shuffle=True, random_state=0).split(texts, labels):

            async def fold(
                train: NDArray[Any] = train, test: NDArray[Any] = test, make: Any = make
            ) -> float:
                clf = await AsyncClassifier(make()).fit(list(texts[train]), list(labels[train]))
                return await clf.score(list(texts[test]), list(labels[test]))

            scores.append(anyio.run(fold))
        print(
            f"SMS 5-fold, {name:23}: accuracy {np.mean(scores):.4f} ± {np.std(scores):.4f} "
            f"({time.perf_counter() - started:.1f} s for the 5 folds)"
        )


def main() -> None:
    if "--neural" in sys.argv[1:]:
        neural()
        return
    train_x, train_y, test_x, test_y = news_split()

    def baseline_fit() -> tuple[float, float]:
        started = time.perf_counter()
        model = make_pipeline(TfidfVectorizer(sublinear_tf=True), LinearSVC()).fit(train_x, train_y)
        return time.perf_counter() - started, model.score(test_x, test_y)

    lags: dict[str, list[float]] = {}
    pairs: dict[str, list[tuple[float, float]]] = {"asyncio": [], "trio": []}
    accuracy = {}
    baseline_accuracy = 0.0
    # Fit times drift on this machine: each AsyncClassifier fit is paired with a
    # baseline fit right before it, and the median ratio of three pairs is reported.
    for _ in range(3):
        for backend in ("asyncio", "trio"):
            baseline_time, baseline_accuracy = baseline_fit()

            async def fit_and_score(backend: str = backend, base: float = baseline_time) -> None:
                samples: list[float] = []
                stop = anyio.Event()
                clf = AsyncClassifier()
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(lag_monitor, samples, stop)
                    started = time.perf_counter()
                    await clf.fit(train_x, train_y)
                    pairs[backend].append((base, time.perf_counter() - started))
                    stop.set()
                lags.setdefault(backend, []).extend(samples)
                accuracy[backend] = await clf.score(test_x, test_y)

            anyio.run(fit_and_score, backend=backend)

    print("20 Newsgroups (official split, raw text, 20 classes):")
    print(f"  TF-IDF + LinearSVC (plain sklearn): accuracy {baseline_accuracy:.4f}")
    for backend, measured in pairs.items():
        ratios = sorted(fit / base for base, fit in measured)
        times = ", ".join(f"{fit:.2f} s vs {base:.2f} s" for base, fit in measured)
        print(
            f"  AsyncClassifier() on {backend:7}: accuracy {accuracy[backend]:.4f}, fit time "
            f"{statistics.median(ratios):.2f}x the baseline (median of {times})"
        )
    for backend, samples in lags.items():
        print(
            f"  event-loop lag during the fits on {backend}: p50 "
            f"{statistics.median(samples) * 1e3:.2f} ms, p99 "
            f"{percentile(samples, 0.99) * 1e3:.2f} ms, max {max(samples) * 1e3:.2f} ms "
            f"({len(samples)} wake-ups of a 5 ms sleeper)"
        )

    copy_on_write(train_x, train_y, test_x)
    languages(train_x, train_y)

    rows = load("sms_spam")
    texts = np.asarray([r["text"] for r in rows], dtype=object)
    labels = np.asarray([r["label"] for r in rows], dtype=object)
    scores = []
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    for train, test in folds.split(texts, labels):

        async def fold(train: NDArray[Any] = train, test: NDArray[Any] = test) -> float:
            clf = await AsyncClassifier().fit(list(texts[train]), list(labels[train]))
            return await clf.score(list(texts[test]), list(labels[test]))

        scores.append(anyio.run(fold))
    print(
        f"SMS Spam Collection, 5-fold stratified accuracy: {np.mean(scores):.4f} "
        f"± {np.std(scores):.4f} (folds: {', '.join(f'{s:.4f}' for s in scores)})"
    )


if __name__ == "__main__":
    main()
