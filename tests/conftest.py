"""Shared fixtures: both async backends, a hypothesis profile and the shared datasets."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "asyncclf",
    deadline=None,
    max_examples=int(os.environ.get("ASYNCCLF_HYPOTHESIS_EXAMPLES", "40")),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("asyncclf")

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Run every async test once on asyncio and once on trio."""
    backend: str = request.param
    return backend


Rows = list[dict[str, str]]


def load_dataset(name: str) -> Rows:
    """Load ``../shared/datasets/<name>``, or skip the test with the reason."""
    path = DATASETS / name / "data.jsonl.gz"
    if not path.exists():
        pytest.skip(f"the shared dataset {name} is not at {path} (only in the project's CI)")
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


@pytest.fixture(scope="session")
def sms_rows() -> Rows:
    """The SMS spam collection from ../shared (skips when absent)."""
    return load_dataset("sms_spam")


@pytest.fixture(scope="session")
def zh_rows() -> Rows:
    """Chinese product reviews, with their seeded split, from ../shared (skips when absent)."""
    return load_dataset("zh_reviews")


@pytest.fixture(scope="session")
def news_rows() -> Rows:
    """20 Newsgroups from ../shared (skips when absent)."""
    return load_dataset("20newsgroups")
