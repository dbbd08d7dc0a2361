"""The router: a dispatcher in front of the local one that sends each task to the cheapest healthy
backend serving its model, and on a backend's failure to the next, recording every attempt.

How a task moves. The router's loop looks at the store (queued tasks, and running ones whose lease
ran out) oldest first; for each it takes a slot on the first backend in (price, priority) order
that serves the task's model, is healthy and has room, and only then claims the task with a lease,
as a worker does (``gateway:<backend>@host:pid:n``). A task for which every backend is busy stays
queued: it waits, it never fails for that. The thread that claimed it then runs it there (remote:
``clients``; local: one of the embedded dispatcher's workers, handed the claimed task), renewing the
lease and relaying progress and cancel requests. On a backend's failure it records the attempt and
takes the next backend that has not failed it, still under the same lease; a refusal of the request
itself (a remote 400) fails the task at once. The result is recorded with the store's conditional
``complete``, the attempt chain and the serving backend's price in the same update, so a task is
completed once even if an abandoned remote finishes later. If this process dies, the lease runs out
and the next router (or the sweeper) takes the task again, as for local workers.

Health: a circuit per backend (``circuit``). Failures open it; a remote with a health path is
checked every ``health_interval`` while up and, while down, after each backoff, so it comes back
when it answers again; one without a health path is probed by one task after the backoff.

Metrics: every attempt is counted by backend and outcome (``qedit_backend_attempts``, with its
duration); a task the router ends itself (on a remote, refused, or failed by every backend) is
observed as a worker observes its own (``Metrics.observe_task``); a local worker observes its own.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qedit.errors import QeditError
from qedit.models.protocol import CancelToken
from qedit.service.backends.circuit import Circuit
from qedit.service.backends.clients import Attempt, RemoteClient, client_for
from qedit.service.backends.config import BackendConfig
from qedit.service.records import TERMINAL, RouteAttempt, TaskRecord, TaskStatus, WebhookState

if TYPE_CHECKING:
    from qedit.service.dispatch import EmbeddedDispatcher
    from qedit.service.wiring import Core
    from qedit.service.worker import Worker, _Lease

log = logging.getLogger("qedit.backends")


class Backend:
    """One backend's config, circuit and counters; ``run`` is the kind's."""

    def __init__(self, config: BackendConfig, circuit: Circuit) -> None:
        self.config, self.circuit = config, circuit
        self.in_flight = 0
        self.served = 0
        self.failed = 0
        self.next_check = 0.0  # monotonic; the next health check while up

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def price(self) -> float:
        return float(self.config.price_per_image or 0.0)

    @property
    def capacity(self) -> int:
        return self.config.max_concurrency

    def serves(self, model: str) -> bool:
        return self.config.serves(model)

    def available(self) -> bool:
        """Healthy enough to take a task now (an open circuit's half-open probe included)."""
        return self.circuit.allow(probe_by_task=self.config.health is None)

    @property
    def state(self) -> str:
        return self.circuit.state

    def run(
        self,
        task: TaskRecord,
        lease: _Lease,
        on_submitted: Callable[[str], None] | None = None,
        served: Callable[[], dict[str, Any]] | None = None,
    ) -> Attempt:
        """Run ``task`` here; ``served`` (local workers only) gives the columns its completion records."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class LocalBackend(Backend):
    """This server's own workers (the embedded dispatcher's), each handed a task the router claimed."""

    def __init__(self, config: BackendConfig, circuit: Circuit, dispatcher: EmbeddedDispatcher) -> None:
        super().__init__(config, circuit)
        self.dispatcher = dispatcher
        self._free: queue.Queue[Worker] = queue.Queue()
        for w in dispatcher.workers:
            self._free.put(w)

    @property
    def capacity(self) -> int:
        return min(self.config.max_concurrency, len(self.dispatcher.workers))

    def healthy(self) -> bool:
        """Up while this process's worker threads have their engines loaded (what the registry says of them too)."""
        return self.dispatcher.ready

    def available(self) -> bool:
        return self.capacity > 0 and self.healthy()

    @property
    def state(self) -> str:
        return "up" if self.available() else "down"

    def run(
        self,
        task: TaskRecord,
        lease: _Lease,
        on_submitted: Callable[[str], None] | None = None,
        served: Callable[[], dict[str, Any]] | None = None,
    ) -> Attempt:
        worker = self._free.get()
        try:
            # records the task's end itself, as an embedded worker does, with the chain if it completes;
            # the router sends the webhook once the chain is written whatever the outcome
            worker.run(task, worker.engine, webhook=False, served=served)
        finally:
            self._free.put(worker)
        final = worker.tasks.get(task.id)
        if final is None or final.attempt != task.attempt:
            return Attempt("lost", "the lease was lost")
        if final.status == TaskStatus.COMPLETED:
            return Attempt("completed", compute_seconds=final.compute_seconds)
        if final.status == TaskStatus.CANCELLED:
            return Attempt("cancelled", "cancelled")
        outcome = "rejected" if final.error_reason == "invalid_input" else "failed"
        return Attempt(outcome, final.error)  # type: ignore[arg-type]


class RemoteBackend(Backend):
    def __init__(self, config: BackendConfig, circuit: Circuit, client: RemoteClient) -> None:
        super().__init__(config, circuit)
        self.client = client

    def run(
        self,
        task: TaskRecord,
        lease: _Lease,
        on_submitted: Callable[[str], None] | None = None,
        served: Callable[[], dict[str, Any]] | None = None,
    ) -> Attempt:
        return self.client.run(task, lease, on_submitted)  # the router completes remote tasks itself

    def close(self) -> None:
        self.client.close()


class Router:
    """``Dispatcher`` over the backends of the backends file; the local one is ``local`` (embedded)."""

    POLL = 0.2
    HEALTH_TICK = 0.25

    def __init__(self, core: Core, local: EmbeddedDispatcher, configs: list[BackendConfig]) -> None:
        s = core.settings
        self.core, self.settings, self.tasks, self.local_dispatcher = core, s, core.tasks, local

        def circuit() -> Circuit:
            return Circuit(s.backend_failures, s.backend_backoff, s.backend_backoff_max)

        self.backends: list[Backend] = []
        for c in configs:
            if c.kind == "local":
                self.backends.append(LocalBackend(c, circuit(), local))
            else:
                self.backends.append(RemoteBackend(c, circuit(), client_for(c, core.storage)))
        self._order = sorted(self.backends, key=lambda b: (b.price, b.config.priority, self.backends.index(b)))
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)  # a slot was released
        self._waiting: dict[str, tuple[str, set[str]]] = {}  # failed-over tasks waiting: id -> (model, tried)
        self._running: set[str] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.host = f"{socket.gethostname()}:{os.getpid()}"
        self.metrics = core.metrics
        self.metrics.watch_backends([b.name for b in self.backends], self.backends_view)

    # -- Dispatcher ---------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return any(b.state == "up" for b in self.backends)

    def routes(self, model: str) -> bool:
        """A backend serving ``model`` is up now (busy or not): a task of it will be run, so it is not refused."""
        return any(b.serves(model) and b.state == "up" for b in self.backends)

    @property
    def load_error(self) -> str | None:
        return self.local_dispatcher.load_error

    def start(self) -> None:
        self.local_dispatcher.start(loops=False)  # engines load and the sweeper runs; the router hands out tasks
        self._spawn("qedit-router", self._dispatch_loop)
        for b in self.backends:
            if isinstance(b, RemoteBackend) and b.config.health is not None:
                self._spawn(f"qedit-health-{b.name}", self._health_loop, b)

    def _spawn(self, name: str, fn: Any, *args: Any) -> None:
        t = threading.Thread(target=fn, args=args, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self) -> None:
        """Running remote tasks are left to their leases: the next start (or another router) re-runs them."""
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=5)
        self.local_dispatcher.stop()
        for b in self.backends:
            b.close()

    def submit(self, task_id: str, model: str | None = None) -> None:
        self._wake.set()

    def deliver_webhook(self, task_id: str) -> None:
        self.local_dispatcher.deliver_webhook(task_id)

    # -- choosing ----------------------------------------------------------------------------------

    def _acquire(self, model: str, exclude: set[str], new: bool = True) -> Backend | None:
        """A slot on the cheapest backend serving ``model`` that is healthy and has room, or None.

        ``new``: for a task not started yet, which never takes a slot a failed-over task is waiting
        for (those are older, and already lost time on a backend that failed them)."""
        with self._lock:
            for b in self._order:
                if b.name in exclude or not b.serves(model) or b.in_flight >= b.capacity:
                    continue
                if new and any(b.serves(m) and b.name not in tried for m, tried in self._waiting.values()):
                    continue
                if b.available():
                    b.in_flight += 1
                    return b
        return None

    def _release(self, b: Backend) -> None:
        with self._lock:
            b.in_flight -= 1
            self._freed.notify_all()
        self._wake.set()

    def _dispatch_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.POLL)
            self._wake.clear()
            try:
                self.dispatch_once()
            except Exception:
                log.exception("routing failed")
                self._stop.wait(1.0)

    def dispatch_once(self) -> int:
        """Hand out what can be handed out now; returns how many tasks started."""
        started = 0
        for tid in self.tasks.needing_dispatch(older_than=0.0, limit=200):
            if self._stop.is_set() or not self._room():
                break
            if tid in self._running:
                continue
            task = self.tasks.get(tid)
            if task is None or task.status in TERMINAL:
                continue
            if not any(b.serves(task.model) for b in self.backends):
                self._refuse(task)
                continue
            b = self._acquire(task.model, set())
            if b is None:
                continue  # every backend for it is busy or down: it waits in the queue
            with self._lock:
                self._running.add(tid)
            threading.Thread(target=self._route, args=(tid, b), name=f"qedit-route-{tid[:8]}", daemon=True).start()
            started += 1
        return started

    def _room(self) -> bool:
        with self._lock:
            return any(b.in_flight < b.capacity for b in self.backends)

    def _worker_name(self, b: Backend) -> str:
        return f"gateway:{b.name}@{self.host}:{uuid.uuid4().hex[:6]}"

    def _refuse(self, task: TaskRecord) -> None:
        claimed = self.tasks.claim("gateway@" + self.host, self.settings.lease_seconds, task_id=task.id)
        if claimed is not None:
            served = sorted({m for b in self.backends for m in (b.config.models or [])})
            ended = self.tasks.fail(
                claimed.id, claimed.attempt, f"no backend serves model {task.model!r} ({served})", "invalid_input"
            )
            self._notify(claimed.id, observe=ended)

    # -- one task's route ----------------------------------------------------------------------------

    def _route(self, task_id: str, first: Backend) -> None:
        try:
            task = self.tasks.claim(
                self._worker_name(first),
                self.settings.lease_seconds,
                task_id=task_id,
                max_attempts=self.settings.max_attempts,
            )
            if task is None:
                self._release(first)
                return
            self._run_route(task, first)
        except Exception:
            log.exception("routing task %s failed; it runs again when its lease ends", task_id)
        finally:
            with self._lock:
                self._running.discard(task_id)
            self._wake.set()

    def _run_route(self, task: TaskRecord, b: Backend | None) -> None:
        from qedit.service.worker import _Lease

        # an attempt still "running" in the chain was the run of a router that died: say so
        chain = [
            a.model_copy(update={"outcome": "interrupted", "ended_at": task.started_at})
            if a.outcome == "running"
            else a
            for a in (task.route or [])
        ]
        tried: set[str] = set()
        with _Lease(self.tasks, task, self.settings.lease_seconds, CancelToken()) as lease:
            while b is not None:
                started = time.time()

                def running(remote_id: str, b: Backend = b, started: float = started) -> None:
                    """The attempt in progress, in the chain while it runs (cancel and operators see it)."""
                    now = RouteAttempt(
                        backend=b.name, kind=b.config.kind, started_at=started, outcome="running", remote_id=remote_id
                    )
                    self.tasks.set_route(task.id, task.attempt, [*chain, now], None, None)

                def served(b: Backend = b, started: float = started) -> dict[str, Any]:
                    """What a local worker's completion records with it: the chain, ending in this success."""
                    done = RouteAttempt(
                        backend=b.name,
                        kind=b.config.kind,
                        started_at=started,
                        ended_at=time.time(),
                        outcome="completed",
                    )
                    return {"route": [*chain, done], "backend": b.name, "price_per_image": b.price}

                try:
                    att = b.run(task, lease, running, served)
                except Exception as e:  # a bug or a storage error: this backend's attempt failed
                    log.exception("task %s on %s", task.id, b.name)
                    att = Attempt("failed", f"{type(e).__name__}: {e}")
                finally:
                    self._release(b)
                self._account(b, att, time.time() - started)
                chain.append(
                    RouteAttempt(
                        backend=b.name,
                        kind=b.config.kind,
                        started_at=started,
                        ended_at=time.time(),
                        outcome=att.outcome,
                        status_code=att.status_code,
                        error=att.error,
                        remote_id=att.remote_id,
                    )
                )
                log.info("task %s on %s: %s%s", task.id, b.name, att.outcome, f" ({att.error})" if att.error else "")
                if att.outcome != "failed" or isinstance(b, LocalBackend):  # a local worker's failure is final:
                    self._settle(task, b, att, chain, lease)  # it recorded the task's end itself
                    return
                tried.add(b.name)
                self.tasks.set_route(task.id, task.attempt, chain, None, None)  # the chain so far, visible
                b = self._next(task, tried, lease)
            if lease.lost:
                return
            if lease.token.cancelled:
                ended = self.tasks.finish_cancelled(task.id, task.attempt)
                self.tasks.set_route(task.id, task.attempt, chain, None, None)
            else:
                errors = "; ".join(f"{a.backend}: {a.error}" for a in chain if a.outcome == "failed")[-1500:]
                ended = self.tasks.fail(
                    task.id, task.attempt, f"no backend could run it: {errors}", "engine_error", extra={"route": chain}
                )
        self._notify(task.id, observe=ended)

    def _next(self, task: TaskRecord, tried: set[str], lease: _Lease) -> Backend | None:
        """The next backend for a task whose last one failed: waits while those left are busy; None when
        every one left is down (or none is left), or the task was cancelled or lost meanwhile."""
        try:
            while not self._stop.is_set() and not lease.token.cancelled:
                b = self._acquire(task.model, tried, new=False)
                if b is not None:
                    return b
                left = [x for x in self._order if x.name not in tried and x.serves(task.model)]
                if not any(x.state != "down" or x.in_flight for x in left):
                    return None
                with self._lock:
                    self._waiting[task.id] = (task.model, set(tried))
                    self._freed.wait(self.POLL)
                lease.beat()
            return None
        finally:
            with self._lock:
                self._waiting.pop(task.id, None)

    def _account(self, b: Backend, att: Attempt, seconds: float) -> None:
        self.metrics.observe_attempt(b.name, att.outcome, seconds)
        if att.outcome == "completed":
            b.served += 1
            b.circuit.success()
        elif att.backend_fault:
            b.failed += 1
            b.circuit.failure(att.error or "failed")
            b.next_check = 0.0  # check it now: a refused connection should mark it down before more tasks go
        elif att.outcome == "rejected" and att.status_code is not None:
            b.circuit.success()  # it answered: up
        else:
            b.circuit.abandon_probe()  # cancelled or lost: says nothing of the backend

    def _settle(self, task: TaskRecord, b: Backend, att: Attempt, chain: list[RouteAttempt], lease: _Lease) -> None:
        served = {"route": chain, "backend": b.name, "price_per_image": b.price}
        if isinstance(b, LocalBackend):  # its worker recorded the end (a completion with its chain) and observed it
            if att.outcome not in ("completed", "lost"):
                self.tasks.set_route(task.id, task.attempt, chain, None, None)
            if att.outcome != "lost":
                self._notify(task.id, observe=False)
            return
        if att.outcome == "completed":
            ok = self.tasks.complete(
                task.id,
                task.attempt,
                att.outputs,
                {**{k: float(v) for k, v in att.timings.items()}, "queue_wait": round(task.queue_wait or 0.0, 4)},
                att.compute_seconds,
                (lease.step, lease.total) if lease.total else None,
                extra=served,
            )
            if not ok:
                self._discard(att)
                return
            ended = True
        elif att.outcome == "rejected":
            ended = self.tasks.fail(
                task.id, task.attempt, (att.error or "refused")[:2000], "invalid_input", extra={"route": chain}
            )
        elif att.outcome == "cancelled":
            ended = self.tasks.finish_cancelled(task.id, task.attempt)
            self.tasks.set_route(task.id, task.attempt, chain, None, None)
        else:  # lost: someone else owns the task now
            self._discard(att)
            return
        self._notify(task.id, observe=ended)

    def _discard(self, att: Attempt) -> None:
        for o in att.outputs:
            with contextlib.suppress(OSError, ValueError, QeditError):
                self.core.storage.delete(o.file)

    def _notify(self, task_id: str, observe: bool) -> None:
        """The webhook of a task whose end is recorded; ``observe``: this router recorded it (its metrics)."""
        final = self.tasks.get(task_id)
        if final is None:
            return
        if observe:
            self.metrics.observe_task(final)
        if final.webhook_state == WebhookState.PENDING:
            self.deliver_webhook(task_id)

    # -- health ------------------------------------------------------------------------------------

    def _health_loop(self, b: RemoteBackend) -> None:
        while not self._stop.wait(self.HEALTH_TICK):
            try:
                self.check(b)
            except Exception:
                log.exception("health check of %s failed", b.name)

    def check(self, b: RemoteBackend) -> None:
        """Up: every ``health_interval`` (or at once after a failed task). Down: when its backoff ran out."""
        now = time.monotonic()
        if b.circuit.state == "up" and now < b.next_check:
            return
        if b.circuit.state != "up" and not b.circuit.due():
            return
        error = b.client.check()
        b.next_check = time.monotonic() + b.config.health_interval
        if error is None:
            if b.circuit.state != "up":
                log.warning("backend %s is up again", b.name)
                self._wake.set()
            b.circuit.success()
        else:
            if b.circuit.state == "up":
                log.warning("backend %s is down: %s", b.name, error)
            b.circuit.failure(error, hard=True)

    # -- the operator's view -----------------------------------------------------------------------

    def backends_view(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        out = []
        for b in self._order:
            c = b.circuit
            if isinstance(b, RemoteBackend):
                due = c.next_probe if c.state != "up" else (b.next_check if b.config.health else None)
            else:
                due = None
            out.append(
                {
                    "name": b.name,
                    "kind": b.config.kind,
                    "models": list(b.config.models or []),
                    "price_per_image": b.price,
                    "priority": b.config.priority,
                    "max_concurrency": b.capacity,
                    "in_flight": b.in_flight,
                    "state": b.state,
                    "last_error": c.last_error,
                    "next_check_in": None if due is None else round(max(0.0, due - now), 3),
                    "served": b.served,
                    "failed": b.failed,
                }
            )
        return out
