"""The worker registry: which workers are alive, what model each serves, and what each is doing.

Every worker (an embedded thread or a ``qedit worker`` process) keeps one row in ``qedit_workers``,
written when it starts, on each change of state (loading -> idle <-> busy) and by a heartbeat thread
every ``worker_ttl / 3`` seconds; a clean stop deletes it. A worker is *live* while its last
heartbeat is younger than ``worker_ttl``: a killed process simply stops beating, and the sweeper
prunes its row. The API reads the registry to route requests (which models have workers), for
``GET /v1/models``, ``GET /v1/workers`` and ``/readyz``; a gateway can call ``live()`` and
``models()`` the same way. The registry never decides who runs a task: the task store's claim does.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import socket
import threading
import time
from typing import Any

from sqlalchemy import delete, func, select, update

from qedit.models.snapshot import canonical_model
from qedit.service.database import Database
from qedit.service.tables import WorkerRow

log = logging.getLogger("qedit.workers")

INSTANT = "instant"


def served_model(model: str) -> str:
    """The id a model is routed, queued and stored under: ``canonical_model``'s (a spec name of a real
    variant -> its hub id, a snapshot dir -> its absolute path), ``instant`` as it is."""
    return model if model == INSTANT else canonical_model(model)


class WorkerState(str, enum.Enum):
    LOADING = "loading"  # registered, the engine is loading: it will serve, but not yet
    IDLE = "idle"
    BUSY = "busy"


@dataclasses.dataclass(frozen=True)
class WorkerInfo:
    id: str  # the worker's name, kind@host:pid:n (also what tasks record as their worker)
    host: str
    pid: int
    model: str
    device: str | None
    options: dict[str, Any]
    state: WorkerState
    task_id: str | None
    tasks_done: int
    started_at: float
    last_heartbeat: float

    @property
    def kind(self) -> str:
        return self.id.partition("@")[0]


@dataclasses.dataclass(frozen=True)
class ModelWorkers:
    """Live workers of one model, by state."""

    workers: int = 0
    busy: int = 0
    idle: int = 0
    loading: int = 0


def _info(row: WorkerRow) -> WorkerInfo:
    values = {f.name: getattr(row, f.name) for f in dataclasses.fields(WorkerInfo)}
    return WorkerInfo(**{**values, "options": dict(row.options or {}), "state": WorkerState(row.state)})


class WorkerRegistry:
    """The ``qedit_workers`` rows: written by workers, read by the API and the sweeper."""

    def __init__(self, db: Database, ttl: float) -> None:
        self.db, self.ttl = db, ttl

    # -- written by a worker -------------------------------------------------------------------------

    def register(
        self,
        worker_id: str,
        model: str,
        *,
        device: str | None,
        options: dict[str, Any],
        state: WorkerState,
        tasks_done: int = 0,
        started_at: float | None = None,
    ) -> None:
        """Insert (or replace) this worker's row; host and pid come from the name ``kind@host:pid:n``."""
        host, pid = _host_pid(worker_id)
        now = time.time()
        values = dict(
            host=host,
            pid=pid,
            model=model,
            device=device,
            options=options,
            state=state.value,
            task_id=None,
            tasks_done=tasks_done,
            started_at=started_at or now,
            last_heartbeat=now,
        )
        with self.db.transaction() as s:
            row = s.get(WorkerRow, worker_id)
            if row is None:
                s.add(WorkerRow(id=worker_id, **values))
            else:
                for k, v in values.items():
                    setattr(row, k, v)

    def update(
        self,
        worker_id: str,
        *,
        state: WorkerState | None = None,
        task_id: str | None = None,
        done: int = 0,
        tasks_done: int | None = None,
        device: str | None = None,
    ) -> bool:
        """A heartbeat, with a change of state (``task_id`` is recorded with it) and tasks ended; False
        if the row is gone (pruned while the worker was silent: the caller registers again)."""
        values: dict[str, Any] = {"last_heartbeat": time.time()}
        if state is not None:
            values.update(state=state.value, task_id=task_id)
        if done:
            values["tasks_done"] = WorkerRow.tasks_done + done
        if tasks_done is not None:  # the worker's own count: a write lost to a hiccup is made good by the next
            values["tasks_done"] = tasks_done
        if device is not None:
            values["device"] = device
        with self.db.transaction() as s:
            return s.execute(update(WorkerRow).where(WorkerRow.id == worker_id).values(**values)).rowcount == 1

    def remove(self, worker_id: str) -> None:
        with self.db.transaction() as s:
            s.execute(delete(WorkerRow).where(WorkerRow.id == worker_id))

    # -- read by the API (and a gateway) -------------------------------------------------------------

    def live(self, model: str | None = None) -> list[WorkerInfo]:
        """Workers heard from within ``ttl`` seconds (of ``model``, if given), by model then id."""
        q = select(WorkerRow).where(WorkerRow.last_heartbeat >= time.time() - self.ttl)
        if model is not None:
            q = q.where(WorkerRow.model == model)
        with self.db.transaction() as s:
            return [_info(r) for r in s.scalars(q.order_by(WorkerRow.model, WorkerRow.id))]

    def models(self) -> dict[str, ModelWorkers]:
        """Each model with live workers -> how many, and how many are busy, idle, loading."""
        q = (
            select(WorkerRow.model, WorkerRow.state, func.count())
            .where(WorkerRow.last_heartbeat >= time.time() - self.ttl)
            .group_by(WorkerRow.model, WorkerRow.state)
        )
        counts: dict[str, dict[str, int]] = {}
        with self.db.transaction() as s:
            for model, state, n in s.execute(q):
                counts.setdefault(model, {})[state] = int(n)
        return {
            model: ModelWorkers(workers=sum(by.values()), **{s.value: by.get(s.value, 0) for s in WorkerState})
            for model, by in sorted(counts.items())
        }

    # -- the sweeper -----------------------------------------------------------------------------------

    def prune(self) -> int:
        """Delete rows not heard from within ``ttl`` and rows of dead processes on this host; how many."""
        from qedit.service.dispatch import dead_local_worker

        now = time.time()
        with self.db.transaction() as s:
            n = s.execute(delete(WorkerRow).where(WorkerRow.last_heartbeat < now - self.ttl)).rowcount
            here = s.scalars(select(WorkerRow.id).where(WorkerRow.host == socket.gethostname())).all()
            dead = [w for w in here if dead_local_worker(w)]
            if dead:
                n += s.execute(delete(WorkerRow).where(WorkerRow.id.in_(dead))).rowcount
        if n:
            log.info("pruned %d stale worker rows", n)
        return n


def _host_pid(worker_id: str) -> tuple[str, int]:
    host, _, rest = worker_id.partition("@")[2].partition(":")
    pid = rest.partition(":")[0]
    return (host or socket.gethostname()), (int(pid) if pid.isdigit() else os.getpid())


class Presence:
    """One worker's row kept fresh: a heartbeat thread, and a write on each change of state.

    A failed write is logged and retried by the next beat; it never stops the worker (the registry
    informs routing, the task store's leases keep tasks safe).
    """

    def __init__(
        self, registry: WorkerRegistry, worker_id: str, model: str, device: str | None, options: dict[str, Any]
    ) -> None:
        self.registry, self.worker_id, self.model = registry, worker_id, model
        self.device, self.options = device, options
        self.state, self.task_id = WorkerState.LOADING, None
        self.tasks_done, self.started_at = 0, time.time()
        self._lock = threading.Lock()  # the state, between the engine's thread and the heartbeat's
        self._write_lock = threading.Lock()  # one write at a time, each of the latest state (never an older one last)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = False  # a worker never started (a unit test's) keeps its state to itself

    def start(self) -> None:
        self._started = True
        self._write(register=True)
        self._thread = threading.Thread(target=self._run, name=f"presence-{self.worker_id[-6:]}", daemon=True)
        self._thread.start()

    def set(self, state: WorkerState, task_id: str | None = None, done: int = 0, device: str | None = None) -> None:
        with self._lock:
            self.state, self.task_id = state, task_id
            self.tasks_done += done
            if device is not None:
                self.device = device
        self._write()

    def stop(self) -> None:
        if not self._started:
            return
        self._started = False
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.registry.remove(self.worker_id)
        except Exception:
            log.exception("could not remove worker %s from the registry", self.worker_id)

    def _run(self) -> None:
        while not self._stop.wait(max(0.5, self.registry.ttl / 3)):
            self._write()

    def _write(self, register: bool = False) -> None:
        if not self._started:
            return
        with self._write_lock:
            self._write_latest(register)

    def _write_latest(self, register: bool) -> None:
        with self._lock:
            state, task_id, device, total = self.state, self.task_id, self.device, self.tasks_done
        try:
            if not register and self.registry.update(
                self.worker_id, state=state, task_id=task_id, tasks_done=total, device=device
            ):
                return
            self.registry.register(  # first, or again after the row was pruned while this worker was silent
                self.worker_id,
                self.model,
                device=device,
                options=self.options,
                state=state,
                tasks_done=total,
                started_at=self.started_at,
            )
        except Exception:
            log.exception("worker %s: registry write failed", self.worker_id)
