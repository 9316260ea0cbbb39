"""Event-loop lag while a worker thread classifies one huge text, side by side.

    python benchmarks/large_text.py [megabytes]

A worker thread shares the GIL with the event loop: one C call that holds it stalls
the loop. scikit-learn's default tokeniser is one ``re.findall`` over the whole text;
asyncclf's default pipeline finds the same tokens in 64 Ki-character pieces. Both
pipelines below are otherwise identical; the script prints the longest stall of a
5 ms sleeper while each classifies the same text, on asyncio and trio, and the ratio.
"""

from __future__ import annotations

import sys
import time

import anyio

from asyncclf import AsyncClassifier

TEXTS = ["free prize now", "lunch at noon", "win cash prize", "see you at lunch"] * 3
LABELS = ["spam", "ham", "spam", "ham"] * 3


async def longest_stall(clf: AsyncClassifier, text: str) -> tuple[float, float]:
    """Seconds of the longest gap between wake-ups of a 5 ms sleeper, and of the call."""
    gaps: list[float] = []
    done = anyio.Event()

    async def sleeper() -> None:
        while not done.is_set():
            started = time.perf_counter()
            await anyio.sleep(0.005)
            gaps.append(time.perf_counter() - started - 0.005)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(sleeper)
        started = time.perf_counter()
        await clf.predict_proba([text])
        elapsed = time.perf_counter() - started
        done.set()
    return max(gaps), elapsed


async def run(megabytes: float) -> None:
    text = "free prize lunch noon cash " * int(megabytes * 1e6 / 27)
    ours = await AsyncClassifier().fit(TEXTS, LABELS)
    plain = AsyncClassifier().set_params(
        estimator__tfidf__tokenizer=None, estimator__tfidf__token_pattern=r"(?u)\b\w\w+\b"
    )
    await plain.fit(TEXTS, LABELS)
    plain_stall, plain_time = await longest_stall(plain, text)
    our_stall, our_time = await longest_stall(ours, text)
    print(
        f"  sklearn's tokeniser: longest stall {plain_stall * 1e3:8.1f} ms "
        f"(call {plain_time:.2f} s)"
    )
    print(f"  asyncclf's default : longest stall {our_stall * 1e3:8.1f} ms (call {our_time:.2f} s)")
    print(f"  stall ratio, ours / sklearn's: {our_stall / plain_stall:.3f}")


def main() -> None:
    megabytes = float(sys.argv[1]) if len(sys.argv) > 1 else 50.0
    for backend in ("asyncio", "trio"):
        print(f"one {megabytes:g} MB text on {backend}:")
        anyio.run(run, megabytes, backend=backend)


if __name__ == "__main__":
    main()
