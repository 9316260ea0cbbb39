"""The demo: train on the bundled SMS corpus, then classify and rank concurrently."""

from __future__ import annotations

import gzip
import json
import random
import time
from collections.abc import Callable
from importlib.resources import files

import anyio

from ._classifier import AsyncClassifier

__all__ = ["load_sms_spam", "run_demo"]


def load_sms_spam() -> tuple[list[str], list[str]]:
    """Return the texts and labels of the bundled SMS Spam Collection (CC BY 4.0).

    See ``asyncclf/data/LICENSE-sms_spam.md`` for its authors, source and licence.
    """
    raw = files("asyncclf").joinpath("data/sms_spam.jsonl.gz").read_bytes()
    rows = [json.loads(line) for line in gzip.decompress(raw).decode("utf-8").splitlines()]
    return [row["text"] for row in rows], [row["label"] for row in rows]


async def run_demo(out: Callable[[str], object] = print) -> float:
    """Run the demo, reporting through ``out``; return the held-out accuracy."""
    texts, labels = load_sms_spam()
    order = list(range(len(texts)))
    random.Random(0).shuffle(order)
    cut = len(order) * 4 // 5
    train, test = order[:cut], order[cut:]
    out(f"SMS Spam Collection: {len(texts)} messages, {labels.count('spam')} spam (CC BY 4.0)")

    clf = AsyncClassifier()
    started = time.perf_counter()
    await clf.fit([texts[i] for i in train], [labels[i] for i in train])
    out(
        f"fit the default pipeline on {len(train)} messages in "
        f"{time.perf_counter() - started:.2f} s (model version {clf.version})"
    )

    test_texts = [texts[i] for i in test]
    predictions: list[str] = [""] * len(test)

    async def classify(slot: int) -> None:
        predictions[slot] = str((await clf.classify(test_texts[slot])).label)

    started = time.perf_counter()
    async with anyio.create_task_group() as tasks:
        for slot in range(len(test)):
            tasks.start_soon(classify, slot)
    elapsed = time.perf_counter() - started
    stats = clf.statistics()
    correct = sum(predictions[slot] == labels[i] for slot, i in enumerate(test))
    accuracy = correct / len(test)
    out(
        f"{len(test)} concurrent classify() calls took {elapsed:.2f} s in {stats.batches} "
        f"batched estimator calls (mean batch {stats.mean_batch_size:.0f} texts)"
    )
    out(f"held-out accuracy: {accuracy:.4f} ({correct}/{len(test)})")

    out("most spam-like held-out messages:")
    for ranked in await clf.rank(test_texts, "spam", k=3):
        out(f"  {ranked.score:.3f}  {ranked.text[:70]!r}")
    groups = await clf.group(test_texts)
    out("grouped: " + ", ".join(f"{label}={len(group)}" for label, group in groups.items()))
    return accuracy
