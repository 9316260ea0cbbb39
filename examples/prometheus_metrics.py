"""Export an AsyncClassifier's statistics to Prometheus, read at each scrape.

``register(clf)`` adds a collector to ``prometheus_client``'s registry (or the one
given): every scrape reads ``clf.statistics()`` and the serving model, so nothing is
counted twice and nothing runs between scrapes. Serve the registry with
``prometheus_client.start_http_server(port)``, or mount
``prometheus_client.make_asgi_app()`` in an ASGI app (see ``fastapi_service.py``).

Needs ``pip install prometheus-client``; asyncclf itself does not depend on it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import (
    REGISTRY,
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from asyncclf import AsyncClassifier

__all__ = ["StatisticsCollector", "register"]


class StatisticsCollector(Collector):
    """The batcher's counters, its recent percentiles and the serving model, read at
    each scrape from the classifier ``current()`` returns (``prefix`` names them all)."""

    def __init__(self, current: Callable[[], AsyncClassifier], prefix: str = "asyncclf") -> None:
        self.current = current
        self.prefix = prefix

    def collect(self) -> Iterator[Metric]:
        clf = self.current()
        stats, p = clf.statistics(), self.prefix
        yield CounterMetricFamily(f"{p}_batches", "Estimator calls made", stats.batches)
        yield CounterMetricFamily(f"{p}_items", "Texts answered through batches", stats.items)
        yield CounterMetricFamily(
            f"{p}_failed_items", "Texts whose estimator call raised", stats.failed_items
        )
        yield GaugeMetricFamily(f"{p}_queue_depth", "Texts waiting for a batch", stats.queue_depth)
        yield GaugeMetricFamily(
            f"{p}_mean_batch_size", "Mean texts per estimator call", stats.mean_batch_size
        )
        # Percentiles over a recent window (the last 1,024 requests or batches): a
        # gauge per quantile, as a Prometheus summary's quantiles are exposed.
        for name, what, p50, p99 in (
            ("wait", "queue wait before the batch starts", stats.wait_p50, stats.wait_p99),
            ("run", "a batch's time in its worker", stats.run_p50, stats.run_p99),
            ("latency", "arrival to result", stats.latency_p50, stats.latency_p99),
        ):
            gauge = GaugeMetricFamily(
                f"{p}_{name}_seconds", f"Recent {what}, in seconds", labels=["quantile"]
            )
            gauge.add_metric(["0.5"], p50)
            gauge.add_metric(["0.99"], p99)
            yield gauge
        yield GaugeMetricFamily(f"{p}_model_version", "Serving model version", clf.version)
        info = InfoMetricFamily(f"{p}_model", "The serving model's identity")
        # The id only: a version label would start a new time series at every refit.
        info.add_metric([], {"model_id": clf.model_id})
        yield info


def register(
    clf: AsyncClassifier, registry: CollectorRegistry = REGISTRY, prefix: str = "asyncclf"
) -> StatisticsCollector:
    """Register a :class:`StatisticsCollector` of ``clf`` and return it (unregister it
    with ``registry.unregister(collector)``)."""
    collector = StatisticsCollector(lambda: clf, prefix)
    registry.register(collector)
    return collector
