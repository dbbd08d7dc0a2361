"""Task records: the one place a task's state changes, each change a conditional update.

Why conditional updates: any number of workers (threads, Celery processes, a restarted server)
may look at the same task. A claim moves ``created`` (or ``processing`` whose lease ran out) to
``processing`` and bumps ``attempt``; every later write names the attempt it belongs to, so a
worker that lost its lease can never complete, fail or cancel a task someone else now runs. A task
is therefore run again after a crash but completed at most once.

Also here, because they are conditions on the same rows: what the dispatcher must (re)send, and
which finished tasks' files have outlived their URLs. No torch: the API reads and writes tasks
without the engine.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, case, func, or_, select, update

from qedit.service.database import Database
from qedit.service.records import (
    ACTIVE,
    TERMINAL,
    FailureReason,
    Interface,
    NewTask,
    RouteAttempt,
    TaskOutput,
    TaskRecord,
    TaskStatus,
    WebhookState,
)
from qedit.service.tables import ApiKeyRow, TaskRow

TASKS = TaskRow.__table__  # state changes are Core updates: no ORM bookkeeping on the hot path
ANY_KEY = object()  # "do not filter by key" (local mode, internal callers)
_FIELDS = tuple(f.name for f in dataclasses.fields(TaskRecord))


def record(row: TaskRow) -> TaskRecord:
    values = {name: getattr(row, name) for name in _FIELDS}
    values.update(
        status=TaskStatus(row.status), webhook_state=WebhookState(row.webhook_state), interface=Interface(row.interface)
    )
    return TaskRecord(**values)


class AtCapacity(Exception):
    """A key already has ``limit`` tasks queued or running; the new one was not stored."""

    def __init__(self, active: int, limit: int) -> None:
        super().__init__(f"{active} tasks queued or running, at most {limit} at once")
        self.active = active
        self.limit = limit


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    owned: bool  # False: the lease was lost (someone else runs the task now), stop working on it
    cancel_requested: bool


class TaskStore:
    """Tasks and their leases over the task database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- create and read --------------------------------------------------------------------------

    def add(self, task: NewTask, *, max_active: int | None = None) -> TaskRecord:
        """Persist a task (status ``created``) and return it; the API answers only after this commits.

        ``max_active``: the key's limit on queued + running tasks, checked in the same serialized
        transaction as the insert (the key's row locked on PostgreSQL, the write lock taken on
        SQLite), so that parallel submissions cannot all pass the count before any of them inserts.
        Over the limit: ``AtCapacity``, and nothing is written.
        """
        row = TaskRow(
            id=task.id,
            key_id=task.key_id,
            interface=task.interface,
            model=task.model,
            status=TaskStatus.CREATED,
            params=task.params,
            inputs=task.inputs,
            mask=task.mask,
            parent_id=task.parent_id,
            options=task.options,
            base_url=task.base_url,
            webhook_url=task.webhook_url,
            webhook_state=WebhookState.NONE,
            created_at=time.time(),
            attempt=0,
            cancel_requested=False,
            progress_step=0,
            progress_total=0,
            outputs=[],
            n_outputs=0,
            compute_seconds=0.0,
            timings={},
            files_expired=False,
        )
        if max_active is None or task.key_id is None:
            with self.db.transaction() as s:
                s.add(row)
            return record(row)
        with self.db.serialized() as s:
            s.execute(select(ApiKeyRow.id).where(ApiKeyRow.id == task.key_id).with_for_update())
            active = s.scalar(self._active_query(task.key_id)) or 0
            if active >= max_active:
                raise AtCapacity(int(active), max_active)
            s.add(row)
        return record(row)

    def get(self, task_id: str, key_id: object = ANY_KEY) -> TaskRecord | None:
        """The task, or None if it does not exist or belongs to another key (the same answer, on purpose)."""
        with self.db.transaction() as s:
            row = s.get(TaskRow, task_id)
            if row is None or (key_id is not ANY_KEY and row.key_id != key_id):
                return None
            return record(row)

    def model_of(self, task_id: str) -> str | None:
        """The model a task must run on (which Celery queue its message goes to)."""
        with self.db.transaction() as s:
            return s.scalar(select(TaskRow.model).where(TaskRow.id == task_id))

    def list_tasks(
        self,
        key_id: object = ANY_KEY,
        *,
        limit: int = 20,
        offset: int = 0,
        before: tuple[float, str] | None = None,
        status: str | None = None,
    ) -> list[TaskRecord]:
        """Newest first; ``before`` is the (created_at, id) of the last task of the previous page."""
        q = select(TaskRow)
        if key_id is not ANY_KEY:
            q = q.where(TaskRow.key_id == key_id)
        if status:
            q = q.where(TaskRow.status == status)
        if before is not None:
            ts, tid = before
            q = q.where(or_(TaskRow.created_at < ts, (TaskRow.created_at == ts) & (TaskRow.id < tid)))
        q = q.order_by(TaskRow.created_at.desc(), TaskRow.id.desc()).offset(offset).limit(limit)
        with self.db.transaction() as s:
            return [record(r) for r in s.scalars(q)]

    def count(self, key_id: object = ANY_KEY, status: str | None = None) -> int:
        q = select(func.count()).select_from(TaskRow)
        if key_id is not ANY_KEY:
            q = q.where(TaskRow.key_id == key_id)
        if status:
            q = q.where(TaskRow.status == status)
        with self.db.transaction() as s:
            return int(s.scalar(q) or 0)

    def counts_by_status(self, key_id: object = ANY_KEY) -> dict[str, int]:
        """Tasks per status (only those present), one GROUP BY over the key's index when ``key_id`` is given."""
        q = select(TaskRow.status, func.count()).select_from(TaskRow)
        if key_id is not ANY_KEY:
            q = q.where(TaskRow.key_id == key_id)
        with self.db.transaction() as s:
            rows = s.execute(q.group_by(TaskRow.status))
            return {str(status): int(n) for status, n in rows}

    def failures_by_reason(self) -> dict[str, int]:
        with self.db.transaction() as s:
            rows = s.execute(
                select(TaskRow.error_reason, func.count())
                .where(TaskRow.status == TaskStatus.FAILED)
                .group_by(TaskRow.error_reason)
            )
            return {reason or "unknown": int(n) for reason, n in rows}

    @staticmethod
    def _active_query(key_id: str | None) -> Select[tuple[int]]:
        q = select(func.count()).select_from(TaskRow).where(TaskRow.status.in_(ACTIVE))
        return q.where(TaskRow.key_id == key_id)

    def active_count(self, key_id: str | None) -> int:
        with self.db.transaction() as s:
            return int(s.scalar(self._active_query(key_id)) or 0)

    # -- the claim and the terminal transitions ----------------------------------------------------

    def _candidates(self, now: float, limit: int, task_id: str | None, model: str | None) -> list[tuple[str, str, int]]:
        runnable = or_(
            (TaskRow.status == TaskStatus.CREATED) & TaskRow.cancel_requested.is_(False),
            (TaskRow.status == TaskStatus.PROCESSING) & (TaskRow.lease_until < now),
        )
        q = select(TaskRow.id, TaskRow.status, TaskRow.attempt).where(runnable)
        if task_id is not None:
            q = q.where(TaskRow.id == task_id)
        if model is not None:
            q = q.where(TaskRow.model == model)
        q = q.order_by(TaskRow.created_at, TaskRow.id).limit(limit)
        with self.db.transaction() as s:
            return [(r.id, r.status, r.attempt) for r in s.execute(q)]

    def claim(
        self,
        worker: str,
        lease_seconds: float,
        *,
        task_id: str | None = None,
        max_attempts: int = 3,
        model: str | None = None,
    ) -> TaskRecord | None:
        """Take the oldest runnable task (or ``task_id``) for ``worker``; None when there is none.

        ``model``: only a task of that model (a worker claims only what its engine serves; a message
        for another model's task, however it arrived, finds nothing to claim).

        A task whose earlier runs all died (lease expired ``max_attempts`` times) is failed instead
        of being run again, so one input that kills the process cannot take the service down forever.
        """
        for _ in range(4):  # candidates can be taken by others between the read and the update
            candidates = self._candidates(time.time(), 8 if task_id is None else 1, task_id, model)
            if not candidates:
                return None
            for tid, status, attempt in candidates:
                now = time.time()
                if status == TaskStatus.PROCESSING and attempt >= max_attempts:
                    self._give_up(tid, attempt, now)
                    continue
                with self.db.transaction() as s:
                    res = s.execute(
                        update(TASKS)
                        .where(TaskRow.id == tid, TaskRow.status == status, TaskRow.attempt == attempt)
                        .values(
                            status=TaskStatus.PROCESSING,
                            attempt=attempt + 1,
                            lease_until=now + lease_seconds,
                            worker=worker,
                            started_at=now,
                            progress_step=0,
                        )
                    )
                    if res.rowcount == 1:
                        row = s.get(TaskRow, tid, populate_existing=True)
                        assert row is not None
                        return record(row)
        return None

    def queued(self, limit: int = 64, exclude: Sequence[str] = (), model: str | None = None) -> list[TaskRecord]:
        """Tasks waiting for a first run, oldest first (a batching worker looks here for companions)."""
        q = select(TaskRow).where(TaskRow.status == TaskStatus.CREATED, TaskRow.cancel_requested.is_(False))
        if model is not None:
            q = q.where(TaskRow.model == model)
        if exclude:
            q = q.where(TaskRow.id.not_in(list(exclude)))
        q = q.order_by(TaskRow.created_at, TaskRow.id).limit(limit)
        with self.db.transaction() as s:
            return [record(r) for r in s.scalars(q)]

    def _give_up(self, task_id: str, attempt: int, now: float) -> None:
        with self.db.transaction() as s:
            s.execute(
                update(TASKS)
                .where(TaskRow.id == task_id, TaskRow.status == TaskStatus.PROCESSING, TaskRow.attempt == attempt)
                .values(
                    status=TaskStatus.FAILED,
                    finished_at=now,
                    lease_until=None,
                    error_reason="crashed",
                    error=f"the worker stopped {attempt} times while running this task",
                    webhook_state=_webhook_pending(),
                )
            )

    def heartbeat(
        self, task_id: str, attempt: int, lease_seconds: float, step: int | None = None, total: int | None = None
    ) -> Heartbeat:
        """Extend the lease (and record progress); tells the worker whether to go on."""
        values: dict[str, Any] = {"lease_until": time.time() + lease_seconds}
        if step is not None and total is not None:
            values.update(progress_step=step, progress_total=total)
        with self.db.transaction() as s:
            res = s.execute(
                update(TASKS)
                .where(TaskRow.id == task_id, TaskRow.status == TaskStatus.PROCESSING, TaskRow.attempt == attempt)
                .values(**values)
            )
            if res.rowcount != 1:
                return Heartbeat(owned=False, cancel_requested=False)
            cancel = s.scalar(select(TaskRow.cancel_requested).where(TaskRow.id == task_id))
            return Heartbeat(owned=True, cancel_requested=bool(cancel))

    def _finish(self, task_id: str, attempt: int, **values: Any) -> bool:
        with self.db.transaction() as s:
            res = s.execute(
                update(TASKS)
                .where(TaskRow.id == task_id, TaskRow.status == TaskStatus.PROCESSING, TaskRow.attempt == attempt)
                .values(finished_at=time.time(), lease_until=None, webhook_state=_webhook_pending(), **values)
            )
            return res.rowcount == 1

    def complete(
        self,
        task_id: str,
        attempt: int,
        outputs: list[TaskOutput],
        timings: dict[str, float],
        compute_seconds: float,
        progress: tuple[int, int] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> bool:
        """Record success, only if this attempt still owns the task (so it completes at most once).

        ``extra``: more columns set in the same update (the gateway's ``route``, ``backend``, ``price_per_image``).
        """
        extra = {**(extra or {}), **({"progress_step": progress[0], "progress_total": progress[1]} if progress else {})}
        return self._finish(
            task_id,
            attempt,
            status=TaskStatus.COMPLETED,
            outputs=outputs,
            n_outputs=len(outputs),
            timings=timings,
            compute_seconds=compute_seconds,
            error=None,
            error_reason=None,
            **extra,
        )

    def fail(
        self,
        task_id: str,
        attempt: int,
        error: str,
        reason: FailureReason,
        compute_seconds: float = 0.0,
        extra: dict[str, Any] | None = None,
    ) -> bool:
        return self._finish(
            task_id,
            attempt,
            status=TaskStatus.FAILED,
            error=error,
            error_reason=reason,
            compute_seconds=compute_seconds,
            **(extra or {}),
        )

    def finish_cancelled(self, task_id: str, attempt: int, compute_seconds: float = 0.0) -> bool:
        return self._finish(
            task_id,
            attempt,
            status=TaskStatus.CANCELLED,
            error="cancelled",
            error_reason="cancelled",
            compute_seconds=compute_seconds,
        )

    def set_route(
        self, task_id: str, attempt: int, route: list[RouteAttempt], backend: str | None, price: float | None
    ) -> bool:
        """The gateway's attempt chain (and who served), written by the attempt that owns the task, at any status:
        a local backend's worker records the end itself, the chain follows it."""
        values = {"route": route, "backend": backend, "price_per_image": price}
        with self.db.transaction() as s:
            res = s.execute(update(TASKS).where(TaskRow.id == task_id, TaskRow.attempt == attempt).values(**values))
            return res.rowcount == 1

    def request_cancel(self, task_id: str, key_id: object = ANY_KEY) -> TaskRecord | None:
        """Cancel a queued task now; ask a running one to stop at its next step. None if not found."""
        task = self.get(task_id, key_id)
        if task is None or task.status in TERMINAL:
            return task
        with self.db.transaction() as s:
            res = s.execute(
                update(TASKS)
                .where(TaskRow.id == task_id, TaskRow.status == TaskStatus.CREATED)
                .values(
                    status=TaskStatus.CANCELLED,
                    finished_at=time.time(),
                    error="cancelled",
                    error_reason="cancelled",
                    webhook_state=_webhook_pending(),
                )
            )
            if res.rowcount == 0:
                s.execute(
                    update(TASKS)
                    .where(TaskRow.id == task_id, TaskRow.status == TaskStatus.PROCESSING)
                    .values(cancel_requested=True)
                )
        return self.get(task_id)

    def expire_lease(self, task_id: str, attempt: int) -> bool:
        """Make a running task claimable now (its process is known to be dead)."""
        with self.db.transaction() as s:
            res = s.execute(
                update(TASKS)
                .where(
                    TaskRow.id == task_id,
                    TaskRow.status == TaskStatus.PROCESSING,
                    TaskRow.attempt == attempt,
                    TaskRow.lease_until > 0.0,  # once: a later sweep finds it already released
                )
                .values(lease_until=0.0, dispatched_at=None)
            )
            return res.rowcount == 1

    def mark_dispatched(self, task_ids: Sequence[str]) -> None:
        if not task_ids:
            return
        with self.db.transaction() as s:
            s.execute(update(TASKS).where(TaskRow.id.in_(list(task_ids))).values(dispatched_at=time.time()))

    def needing_dispatch(self, older_than: float, limit: int = 100, models: Sequence[str] | None = None) -> list[str]:
        """Tasks a broker may have lost: queued and not (re)sent recently, or running with a dead lease.

        ``models``: only tasks of these (those with live workers: a message for a model nobody serves
        waits in its queue already, and re-sending it every sweep would only pile up copies).
        """
        now = time.time()
        cutoff = now - older_than
        q = (
            select(TaskRow.id)
            .where(
                or_(
                    (TaskRow.status == TaskStatus.CREATED)
                    & TaskRow.cancel_requested.is_(False)
                    & or_(TaskRow.dispatched_at.is_(None), TaskRow.dispatched_at < cutoff),
                    (TaskRow.status == TaskStatus.PROCESSING)
                    & (TaskRow.lease_until < now)
                    & or_(TaskRow.dispatched_at.is_(None), TaskRow.dispatched_at < cutoff),
                )
            )
            .order_by(TaskRow.created_at)
            .limit(limit)
        )
        if models is not None:
            q = q.where(TaskRow.model.in_(list(models)))
        with self.db.transaction() as s:
            return list(s.scalars(q))

    # -- retention --------------------------------------------------------------------------------

    def expired(self, before: float, limit: int = 500) -> list[TaskRecord]:
        """Finished tasks whose files outlived the URL lifetime and are still on disk."""
        q = (
            select(TaskRow)
            .where(TaskRow.status.in_(TERMINAL), TaskRow.finished_at < before, TaskRow.files_expired.is_(False))
            .limit(limit)
        )
        with self.db.transaction() as s:
            return [record(r) for r in s.scalars(q)]

    def mark_files_expired(self, task_ids: Sequence[str]) -> None:
        if task_ids:
            with self.db.transaction() as s:
                s.execute(update(TASKS).where(TaskRow.id.in_(list(task_ids))).values(files_expired=True))


def _webhook_pending() -> Any:
    """``pending`` if the task has a webhook URL, else unchanged: computed in SQL, in the same update."""
    return case((TaskRow.webhook_url.is_not(None), WebhookState.PENDING.value), else_=TaskRow.webhook_state)
