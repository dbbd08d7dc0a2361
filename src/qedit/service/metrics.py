"""Prometheus metrics, one registry per app (never the global one, so tests can build many apps).

Queue depth and failures by reason are read from the task store at scrape time, so they are right
whichever process ran the tasks (embedded thread or Celery worker). The latency histograms are
observed where tasks finish: in this process for embedded mode; a Celery worker exposes its own.
So are the engine's description (``qedit_engine_info``: the options its worker loads it with) and
what its runs were made of (batch sizes, transformer passes and passes the step cache skipped):
they belong to the process that runs the engine, and an API process without workers has none.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from qedit.service.records import ACTIVE
from qedit.service.tasks import TaskStore

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16)
PASS_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256)


def _label(value: Any) -> str:
    """None -> "", booleans as JSON writes them (``compile="false"``), the rest as ``str``."""
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else str(value)


class _StoreCollector(Collector):
    def __init__(self, store: TaskStore) -> None:
        self.store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts = self.store.counts_by_status()
        depth = GaugeMetricFamily("qedit_queue_depth", "tasks waiting or running, by status", labels=["status"])
        for status in ACTIVE:
            depth.add_metric([status.value], counts.get(status.value, 0))
        yield depth
        tasks = GaugeMetricFamily("qedit_tasks", "tasks in the store, by status", labels=["status"])
        for status, n in sorted(counts.items()):
            tasks.add_metric([status], n)
        yield tasks
        failed = GaugeMetricFamily("qedit_tasks_failed", "failed tasks in the store, by reason", labels=["reason"])
        for reason, n in sorted(self.store.failures_by_reason().items()):
            failed.add_metric([reason], n)
        yield failed


class Metrics:
    def __init__(self, store: TaskStore | None = None) -> None:
        self.registry = CollectorRegistry()
        if store is not None:
            self.registry.register(_StoreCollector(store))
        self.task_seconds = Histogram(
            "qedit_task_seconds",
            "submit to finish, by final status",
            ["status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inference_seconds = Histogram(
            "qedit_inference_seconds", "engine time per task", buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.queue_wait_seconds = Histogram(
            "qedit_queue_wait_seconds", "submit to start", buckets=LATENCY_BUCKETS, registry=self.registry
        )
        self.failures = Counter(
            "qedit_task_failures", "tasks failed in this process, by reason", ["reason"], registry=self.registry
        )
        self.submitted = Counter(
            "qedit_tasks_submitted", "tasks accepted, by interface", ["interface"], registry=self.registry
        )
        self.rejected = Counter(
            "qedit_requests_rejected", "requests refused before queueing, by reason", ["reason"], registry=self.registry
        )
        self.engine_ready = Gauge("qedit_engine_ready", "1 once the model is loaded", registry=self.registry)
        self.engine_info = Info(
            "qedit_engine", "the model and options this process's workers run with", registry=self.registry
        )
        self.batch_size = Histogram(
            "qedit_batch_size", "tasks per engine run (1 = alone)", buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.transformer_passes = Histogram(
            "qedit_transformer_passes", "transformer passes per edit", buckets=PASS_BUCKETS, registry=self.registry
        )
        self.cached_passes = Histogram(
            "qedit_cached_passes",
            "transformer passes per edit the step cache answered instead",
            buckets=PASS_BUCKETS,
            registry=self.registry,
        )

    def describe_engine(self, model: str, options: Mapping[str, Any], batch_size: int, batch_wait: float) -> None:
        """``qedit_engine_info{model=...,quantize=...,batch_size=...} 1``: label values are strings."""
        labels = {"model": model, **options, "batch_size": batch_size, "batch_wait": batch_wait}
        self.engine_info.info({k: _label(v) for k, v in labels.items()})

    def observe_stats(self, stats: Mapping[str, int]) -> None:
        """An edit's counters, where its engine reports them (``EditResult.stats``)."""
        if "transformer_passes" in stats:
            self.transformer_passes.observe(stats["transformer_passes"])
        if "cached_passes" in stats:
            self.cached_passes.observe(stats["cached_passes"])
