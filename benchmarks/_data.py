"""Load the shared datasets for the benchmarks (they live beside the repository)."""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def load(name: str) -> list[dict[str, str]]:
    """Return the rows of ``../shared/datasets/<name>``, or exit with a clear message."""
    path = DATASETS / name / "data.jsonl.gz"
    if not path.exists():
        sys.exit(f"benchmark needs {path} (the project's shared datasets)")
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def news_split() -> tuple[list[str], list[str], list[str], list[str]]:
    """20 Newsgroups, official split, raw text: train texts, labels, test texts, labels."""
    rows = load("20newsgroups")
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    return (
        [r["text"] for r in train],
        [r["label"] for r in train],
        [r["text"] for r in test],
        [r["label"] for r in test],
    )
