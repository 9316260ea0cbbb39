"""The example FastAPI service (examples/fastapi_service.py), through httpx's ASGI
transport, and the Prometheus exporter (examples/prometheus_metrics.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

pytest.importorskip("fastapi", reason="the service example needs fastapi (the test extra)")
httpx = pytest.importorskip("httpx", reason="the service example needs httpx (the test extra)")
prometheus_client = pytest.importorskip(
    "prometheus_client", reason="the metrics example needs prometheus-client (the test extra)"
)

import asyncclf  # noqa: E402
from examples.fastapi_service import create_app  # noqa: E402
from examples.prometheus_metrics import register  # noqa: E402

from .fakes import DEADLINE  # noqa: E402

pytestmark = pytest.mark.anyio

TEXTS = [
    "win a free prize now, call today",
    "are we still meeting for lunch?",
    "urgent: claim your cash reward",
    "see you at the station at six",
] * 5
LABELS = ["spam", "ham", "spam", "ham"] * 5
OTHER_TEXTS = [*TEXTS, "free entry in a weekly contest", "can you pick up milk"]
OTHER_LABELS = [*LABELS, "spam", "ham"]


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[Any]:
    """A client of the service (models directory: ``tmp_path``), its lifespan entered as
    uvicorn would."""
    app = create_app(training=(TEXTS, LABELS), model_dir=str(tmp_path))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
            yield http


async def health_when(client: Any, ready: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll /healthz, as a client waiting for a background refit would."""
    with anyio.fail_after(DEADLINE):
        while True:
            health: dict[str, Any] = (await client.get("/healthz")).json()
            if ready(health):
                return health
            await anyio.sleep(0.01)


async def test_concurrent_requests_through_a_refit_see_the_version_change_once(
    client: Any,
) -> None:
    """400 concurrent requests (classify, classify_many, rank) while a background
    refit runs: no error, every answer from version 1 or 2, and once one caller saw
    version 2 no later-started request sees version 1."""
    health = (await client.get("/healthz")).json()
    assert (health["status"], health["version"]) == ("ok", 1)
    first_id = health["model_id"]
    seen: list[tuple[int, int, str]] = []  # (start order, version, model_id)
    errors: list[Any] = []
    started = 0
    new_seen_at: int | None = None  # requests started when a version 2 answer arrived
    refit_started = anyio.Event()

    async def call(i: int) -> None:
        nonlocal started, new_seen_at
        order = started
        started += 1
        if i % 3 == 0:
            response = await client.post("/classify", json={"text": TEXTS[i % 20]})
            answers = [response.json()] if response.status_code == 200 else []
        elif i % 3 == 1:
            response = await client.post("/classify_many", json={"texts": TEXTS[:5]})
            answers = response.json() if response.status_code == 200 else []
        else:
            body = {"texts": TEXTS[:6], "label": "spam", "k": 3}
            response = await client.post("/rank", json=body)
            answers = response.json() if response.status_code == 200 else []
        if response.status_code != 200:
            errors.append((response.status_code, response.text))
        seen.extend((order, a["version"], a["model_id"]) for a in answers)
        if new_seen_at is None and any(a["version"] == 2 for a in answers):
            new_seen_at = started

    async def refit() -> None:
        body = {"texts": OTHER_TEXTS, "labels": OTHER_LABELS}
        response = await client.post("/refit", json=body)
        assert response.status_code == 202
        assert response.json()["version"] == 1
        refit_started.set()

    async with anyio.create_task_group() as tasks:
        for i in range(400):
            tasks.start_soon(call, i)
            if i == 100:
                tasks.start_soon(refit)
            if i % 50 == 0:
                await anyio.sleep(0.01)
    await health_when(client, lambda health: health["version"] == 2)
    async with anyio.create_task_group() as tasks:  # after the refit: version 2 only
        for i in range(400, 430):
            tasks.start_soon(call, i)
    health = (await client.get("/healthz")).json()
    assert errors == []
    assert refit_started.is_set()
    assert (health["refits"], health["refit"]) == (1, "done")
    assert health["model_id"] != first_id
    models = {(version, model_id) for _, version, model_id in seen}
    assert models == {(1, first_id), (2, health["model_id"])}
    # A request started after a caller got an answer from the new model is answered
    # by the new model: the swap is atomic, never undone.
    assert new_seen_at is not None
    assert all(version == 2 for order, version, _ in seen if order >= new_seen_at)
    assert len(seen) == sum((1, 5, 3)[i % 3] for i in range(430))
    assert health["statistics"]["latency_p99"] > 0


async def test_bad_requests_are_client_errors_and_a_failed_refit_keeps_serving(
    client: Any, tmp_path: Path
) -> None:
    """Bad texts, labels, settings and model files are 4xx answers, never 500; a
    refit that fails in the background is reported by /healthz and the model stays; a
    second refit while one runs is refused; /swap reads the models directory only."""
    bad: dict[str, list[dict[str, Any]]] = {
        "/classify": [{"text": 3}, {"texts": ["a"]}],
        "/rank": [
            {"texts": ["a"], "label": "eggs"},
            {"texts": ["a"], "label": "spam", "k": -1},
        ],
        "/refit": [
            {"texts": ["a"], "labels": ["x", "y"]},
            {"texts": ["a", "b"], "labels": ["x", "x"]},
        ],
        "/swap": [
            {"path": "bad.skops"},
            {"path": "missing.skops"},
            {"path": "model.skops", "sha256": "abc"},
            {"path": "model\x00.skops"},
        ],
    }
    (tmp_path / "bad.skops").write_bytes(b"not a model")
    for path, bodies in bad.items():
        for body in bodies:
            response = await client.post(path, json=body)
            assert response.status_code == 422, (path, body, response.text)
    forbidden = await client.post("/swap", json={"path": "../outside.skops"})
    assert forbidden.status_code == 403
    wrong = await client.post("/rank", json={"texts": ["a"], "label": "eggs"})
    assert "Unknown label 'eggs'" in wrong.json()["detail"]
    # A refit that fails in the worker (one text per class: too few to calibrate).
    response = await client.post("/refit", json={"texts": ["a b", "c d"], "labels": ["x", "y"]})
    assert response.status_code == 202
    again = await client.post("/refit", json={"texts": TEXTS, "labels": LABELS})
    assert again.status_code == 409
    health = await health_when(client, lambda health: health["refit"] != "running")
    assert health["refit"].startswith("failed: ValueError")
    assert health["version"] == 1
    assert (await client.post("/classify", json={"text": "free prize"})).status_code == 200


async def test_swap_serves_a_model_file_with_its_id(client: Any, tmp_path: Path) -> None:
    """/swap serves a saved model: the id the file stores, version + 1."""
    other = await asyncclf.AsyncClassifier().fit(OTHER_TEXTS, OTHER_LABELS)
    digest = await other.save(tmp_path / "other.skops")
    response = await client.post("/swap", json={"path": "other.skops", "sha256": digest})
    assert response.json() == {"version": 2, "model_id": other.model_id}
    answer = (await client.post("/classify", json={"text": "free prize"})).json()
    assert (answer["version"], answer["model_id"]) == (2, other.model_id)


async def test_metrics_export_the_statistics_and_the_model(client: Any) -> None:
    """/metrics serves the collector's families, read at the scrape."""
    for _ in range(3):
        await client.post("/classify", json={"text": "free prize"})
    health = (await client.get("/healthz")).json()
    text = (await client.get("/metrics")).text
    assert f'asyncclf_model_info{{model_id="{health["model_id"]}"}} 1.0' in text
    assert "asyncclf_items_total 3.0" in text
    assert 'asyncclf_latency_seconds{quantile="0.99"}' in text


async def test_the_collector_reads_the_statistics_at_each_scrape() -> None:
    """register() adds a collector whose values are those of statistics() when
    scraped, and follow the classifier."""
    registry = prometheus_client.CollectorRegistry()
    clf = await asyncclf.AsyncClassifier().fit(TEXTS, LABELS)
    register(clf, registry, prefix="spam")
    assert registry.get_sample_value("spam_items_total") == 0
    await clf.classify_many(TEXTS[:7])
    stats = clf.statistics()
    assert registry.get_sample_value("spam_items_total") == 7
    assert registry.get_sample_value("spam_batches_total") == stats.batches
    p99 = registry.get_sample_value("spam_latency_seconds", {"quantile": "0.99"})
    assert p99 == stats.latency_p99 > 0
    assert registry.get_sample_value("spam_model_version") == 1
