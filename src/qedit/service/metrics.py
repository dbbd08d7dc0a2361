"""Prometheus metrics, one registry per app (never the global one, so tests can build many apps).

Queue depth and failures by reason are read from the task store at scrape time, so they are right
whichever process ran the tasks (embedded thread or Celery worker). The latency histograms are
observed where tasks finish: in this process for embedded mode; a Celery worker exposes its own.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from qedit.service.records import ACTIVE
from qedit.service.tasks import TaskStore

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)


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
