"""Prometheus metrics, one registry per app (never the global one, so tests can build many apps).

Queue depth and failures by reason are read from the task store at scrape time, so they are right
whichever process ran the tasks (embedded thread or Celery worker). The latency histograms are
observed where tasks finish: in this process for embedded mode; a Celery worker exposes its own.
So are the engine's description (``qedit_engine_info``: the options its worker loads it with) and
what its runs were made of (batch sizes, transformer passes and passes the step cache skipped):
they belong to the process that runs the engine, and an API process without workers has none.

A gateway (a backends file) observes the tasks its router ends (on a remote, or failed by every
backend) in the same task metrics as its workers' (``observe_task``, one place for both), and each
backend's attempts (``observe_attempt``); the backends' state (in flight, up, price, cap) is read
from the router at scrape time, like the queue from the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from qedit.service.records import ACTIVE, TaskRecord, TaskStatus
from qedit.service.tasks import TaskStore

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16)
PASS_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256)
# an attempt's outcomes (``clients.Outcome``): each backend's series exist from the start, at 0
ATTEMPT_OUTCOMES = ("completed", "failed", "rejected", "cancelled", "lost")
# qedit_backend_up: 1 up, 0.5 half-open (one probe let through), 0 down
UP_VALUES = {"up": 1.0, "half-open": 0.5, "down": 0.0}


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


class _BackendsCollector(Collector):
    """The router's backends as ``GET /v1/backends`` shows them (``Router.backends_view``), at scrape time."""

    def __init__(self, view: Callable[[], Sequence[Mapping[str, Any]]]) -> None:
        self.view = view

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = {
            "in_flight": GaugeMetricFamily("qedit_backend_in_flight", "tasks running there now", labels=["backend"]),
            "state": GaugeMetricFamily(
                "qedit_backend_up", "1 up, 0.5 half-open (one probe task), 0 down", labels=["backend"]
            ),
            "price_per_image": GaugeMetricFamily(
                "qedit_backend_price_per_image", "USD per image served there", labels=["backend"]
            ),
            "max_concurrency": GaugeMetricFamily(
                "qedit_backend_max_concurrency", "its cap of tasks in flight", labels=["backend"]
            ),
        }
        for b in self.view():
            for field, family in families.items():
                value = UP_VALUES.get(b[field], 0.0) if field == "state" else float(b[field])
                family.add_metric([b["name"]], value)
        yield from families.values()


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

        self.backend_attempts = Counter(
            "qedit_backend_attempts",
            "attempts this gateway's router made, by backend and outcome",
            ["backend", "outcome"],
            registry=self.registry,
        )
        self.backend_attempt_seconds = Histogram(
            "qedit_backend_attempt_seconds",
            "one attempt on a backend, start to end, by outcome",
            ["backend", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )

    def watch_backends(self, names: Sequence[str], view: Callable[[], Sequence[Mapping[str, Any]]]) -> None:
        """A router's backends: their attempt series start at 0, their state is read from ``view``."""
        for name in names:
            for outcome in ATTEMPT_OUTCOMES:
                self.backend_attempts.labels(name, outcome)
        self.registry.register(_BackendsCollector(view))

    def observe_attempt(self, backend: str, outcome: str, seconds: float) -> None:
        self.backend_attempts.labels(backend, outcome).inc()
        self.backend_attempt_seconds.labels(backend, outcome).observe(seconds)

    def observe_task(self, task: TaskRecord) -> None:
        """A task this process ended (its worker, or its router on a remote): latencies, and a failure's reason."""
        if task.finished_at is None:
            return
        self.task_seconds.labels(task.status).observe(task.finished_at - task.created_at)
        if task.queue_wait is not None:
            self.queue_wait_seconds.observe(task.queue_wait)
        if task.inference_seconds is not None:
            self.inference_seconds.observe(task.inference_seconds)
        if task.status == TaskStatus.FAILED:
            self.failures.labels(task.error_reason or "unknown").inc()

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
