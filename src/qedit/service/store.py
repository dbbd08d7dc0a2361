"""Task records: the one place a task's state changes, each change a conditional update.

Why conditional updates: any number of workers (threads, Celery processes, a restarted server)
may look at the same task. A claim moves ``created`` (or ``processing`` whose lease ran out) to
``processing`` and bumps ``attempt``; every later write names the attempt it belongs to, so a
worker that lost its lease can never complete, fail or cancel a task someone else now runs. A task
is therefore run again after a crash but completed at most once.

SQLite by default (WAL, one file in the data dir); any SQLAlchemy URL works, Postgres included.
No torch here: the API reads and writes tasks without the engine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, case, create_engine, event, func, or_, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from qedit.service.tables import ApiKeyRow, Base, TaskRow, WebhookAttemptRow

TASKS = TaskRow.__table__  # state changes are Core updates: no ORM bookkeeping on the hot path
ACTIVE = ("created", "processing")
TERMINAL = ("completed", "failed", "cancelled")
ANY_KEY = object()  # "do not filter by key" (local mode, internal callers)


@dataclasses.dataclass(frozen=True)
class TaskRecord:
    """A snapshot of one task row, safe to pass between threads and out of the session."""

    id: str
    key_id: str | None
    interface: str
    model: str
    status: str
    params: dict[str, Any]
    inputs: list[Any]
    mask: str | None
    parent_id: str | None
    options: dict[str, Any]
    base_url: str
    webhook_url: str | None
    webhook_style: str
    webhook_state: str
    webhook_started_at: float | None
    created_at: float
    dispatched_at: float | None
    started_at: float | None
    finished_at: float | None
    attempt: int
    lease_until: float | None
    worker: str | None
    cancel_requested: bool
    progress_step: int
    progress_total: int
    outputs: list[Any]
    n_outputs: int
    compute_seconds: float
    timings: dict[str, Any]
    error: str | None
    error_reason: str | None
    files_expired: bool

    @property
    def queue_wait(self) -> float | None:
        return None if self.started_at is None else max(0.0, self.started_at - self.created_at)

    @property
    def inference_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None or self.status != "completed":
            return None
        return max(0.0, self.finished_at - self.started_at)


_FIELDS = tuple(f.name for f in dataclasses.fields(TaskRecord))


def _record(row: TaskRow) -> TaskRecord:
    return TaskRecord(**{name: getattr(row, name) for name in _FIELDS})


@dataclasses.dataclass(frozen=True)
class NewTask:
    """What the API hands the store: everything validated, input files already on disk."""

    interface: str
    model: str
    params: dict[str, Any]
    inputs: list[dict[str, Any]]
    base_url: str
    key_id: str | None = None
    mask: str | None = None
    parent_id: str | None = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    webhook_url: str | None = None
    webhook_style: str = "standard"
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)


@dataclasses.dataclass(frozen=True)
class Heartbeat:
    owned: bool  # False: the lease was lost (someone else runs the task now), stop working on it
    cancel_requested: bool


@dataclasses.dataclass(frozen=True)
class WebhookAttempt:
    webhook_id: str
    event: str
    attempt: int
    at: float
    url: str
    status_code: int | None
    error: str | None
    duration_ms: float


@dataclasses.dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    prefix: str
    created_at: float
    revoked_at: float | None
    rate_limit_rpm: int | None
    max_concurrent_tasks: int | None


@dataclasses.dataclass(frozen=True)
class Usage:
    tasks: int
    completed: int
    failed: int
    images: int
    compute_seconds: float


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL lets readers (the API) run while a writer (a worker) commits; busy_timeout queues writers."""
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=8, max_overflow=16
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=8, max_overflow=16)


class TaskStore:
    """Tasks, webhook attempts and API keys over one SQLAlchemy engine."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._schema_lock = threading.Lock()

    def create_schema(self) -> None:
        with self._schema_lock:
            Base.metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as s, s.begin():
            yield s

    # -- create and read --------------------------------------------------------------------------

    def add(self, task: NewTask) -> TaskRecord:
        """Persist a task (status ``created``) and return it; the API answers only after this commits."""
        row = TaskRow(
            id=task.id,
            key_id=task.key_id,
            interface=task.interface,
            model=task.model,
            status="created",
            params=task.params,
            inputs=task.inputs,
            mask=task.mask,
            parent_id=task.parent_id,
            options=task.options,
            base_url=task.base_url,
            webhook_url=task.webhook_url,
            webhook_style=task.webhook_style,
            webhook_state="none",
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
        with self.session() as s:
            s.add(row)
        return _record(row)

    def get(self, task_id: str, key_id: object = ANY_KEY) -> TaskRecord | None:
        """The task, or None if it does not exist or belongs to another key (the same answer, on purpose)."""
        with self.session() as s:
            row = s.get(TaskRow, task_id)
            if row is None or (key_id is not ANY_KEY and row.key_id != key_id):
                return None
            return _record(row)

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
        with self.session() as s:
            return [_record(r) for r in s.scalars(q)]

    def count(self, key_id: object = ANY_KEY, status: str | None = None) -> int:
        q = select(func.count()).select_from(TaskRow)
        if key_id is not ANY_KEY:
            q = q.where(TaskRow.key_id == key_id)
        if status:
            q = q.where(TaskRow.status == status)
        with self.session() as s:
            return int(s.scalar(q) or 0)

    def counts_by_status(self) -> dict[str, int]:
        with self.session() as s:
            rows = s.execute(select(TaskRow.status, func.count()).group_by(TaskRow.status))
            return {status: int(n) for status, n in rows}

    def failures_by_reason(self) -> dict[str, int]:
        with self.session() as s:
            rows = s.execute(
                select(TaskRow.error_reason, func.count())
                .where(TaskRow.status == "failed")
                .group_by(TaskRow.error_reason)
            )
            return {reason or "unknown": int(n) for reason, n in rows}

    def active_count(self, key_id: str | None) -> int:
        with self.session() as s:
            q = select(func.count()).select_from(TaskRow).where(TaskRow.status.in_(ACTIVE))
            q = q.where(TaskRow.key_id == key_id)
            return int(s.scalar(q) or 0)

    # -- the claim and the terminal transitions ----------------------------------------------------

    def _candidates(self, now: float, limit: int, task_id: str | None) -> list[tuple[str, str, int]]:
        runnable = or_(
            (TaskRow.status == "created") & TaskRow.cancel_requested.is_(False),
            (TaskRow.status == "processing") & (TaskRow.lease_until < now),
        )
        q = select(TaskRow.id, TaskRow.status, TaskRow.attempt).where(runnable)
        if task_id is not None:
            q = q.where(TaskRow.id == task_id)
        q = q.order_by(TaskRow.created_at, TaskRow.id).limit(limit)
        with self.session() as s:
            return [(r.id, r.status, r.attempt) for r in s.execute(q)]

    def claim(
        self, worker: str, lease_seconds: float, *, task_id: str | None = None, max_attempts: int = 3
    ) -> TaskRecord | None:
        """Take the oldest runnable task (or ``task_id``) for ``worker``; None when there is none.

        A task whose earlier runs all died (lease expired ``max_attempts`` times) is failed instead
        of being run again, so one input that kills the process cannot take the service down forever.
        """
        for _ in range(4):  # candidates can be taken by others between the read and the update
            candidates = self._candidates(time.time(), 8 if task_id is None else 1, task_id)
            if not candidates:
                return None
            for tid, status, attempt in candidates:
                now = time.time()
                if status == "processing" and attempt >= max_attempts:
                    self._give_up(tid, attempt, now)
                    continue
                with self.session() as s:
                    res = s.execute(
                        update(TASKS)
                        .where(TaskRow.id == tid, TaskRow.status == status, TaskRow.attempt == attempt)
                        .values(
                            status="processing",
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
                        return _record(row)
        return None

    def _give_up(self, task_id: str, attempt: int, now: float) -> None:
        with self.session() as s:
            s.execute(
                update(TASKS)
                .where(TaskRow.id == task_id, TaskRow.status == "processing", TaskRow.attempt == attempt)
                .values(
                    status="failed",
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
        with self.session() as s:
            res = s.execute(
                update(TASKS)
                .where(TaskRow.id == task_id, TaskRow.status == "processing", TaskRow.attempt == attempt)
                .values(**values)
            )
            if res.rowcount != 1:
                return Heartbeat(owned=False, cancel_requested=False)
            cancel = s.scalar(select(TaskRow.cancel_requested).where(TaskRow.id == task_id))
            return Heartbeat(owned=True, cancel_requested=bool(cancel))

    def _finish(self, task_id: str, attempt: int, **values: Any) -> bool:
        with self.session() as s:
            res = s.execute(
                update(TASKS)
                .where(TaskRow.id == task_id, TaskRow.status == "processing", TaskRow.attempt == attempt)
                .values(finished_at=time.time(), lease_until=None, webhook_state=_webhook_pending(), **values)
            )
            return res.rowcount == 1

    def complete(
        self,
        task_id: str,
        attempt: int,
        outputs: list[dict[str, Any]],
        timings: dict[str, float],
        compute_seconds: float,
        progress: tuple[int, int] | None = None,
    ) -> bool:
        """Record success, only if this attempt still owns the task (so it completes at most once)."""
        extra = {"progress_step": progress[0], "progress_total": progress[1]} if progress else {}
        return self._finish(
            task_id,
            attempt,
            status="completed",
            outputs=outputs,
            n_outputs=len(outputs),
            timings=timings,
            compute_seconds=compute_seconds,
            error=None,
            error_reason=None,
            **extra,
        )

    def fail(self, task_id: str, attempt: int, error: str, reason: str, compute_seconds: float = 0.0) -> bool:
        return self._finish(
            task_id, attempt, status="failed", error=error, error_reason=reason, compute_seconds=compute_seconds
        )

    def finish_cancelled(self, task_id: str, attempt: int, compute_seconds: float = 0.0) -> bool:
        return self._finish(
            task_id,
            attempt,
            status="cancelled",
            error="cancelled",
            error_reason="cancelled",
            compute_seconds=compute_seconds,
        )

    def request_cancel(self, task_id: str, key_id: object = ANY_KEY) -> TaskRecord | None:
        """Cancel a queued task now; ask a running one to stop at its next step. None if not found."""
        task = self.get(task_id, key_id)
        if task is None or task.status in TERMINAL:
            return task
        with self.session() as s:
            res = s.execute(
                update(TASKS)
                .where(TaskRow.id == task_id, TaskRow.status == "created")
                .values(
                    status="cancelled",
                    finished_at=time.time(),
                    error="cancelled",
                    error_reason="cancelled",
                    webhook_state=_webhook_pending(),
                )
            )
            if res.rowcount == 0:
                s.execute(
                    update(TASKS)
                    .where(TaskRow.id == task_id, TaskRow.status == "processing")
                    .values(cancel_requested=True)
                )
        return self.get(task_id)

    def expire_lease(self, task_id: str, attempt: int) -> bool:
        """Make a running task claimable now (its process is known to be dead)."""
        with self.session() as s:
            res = s.execute(
                update(TASKS)
                .where(TaskRow.id == task_id, TaskRow.status == "processing", TaskRow.attempt == attempt)
                .values(lease_until=0.0, dispatched_at=None)
            )
            return res.rowcount == 1

    def mark_dispatched(self, task_ids: Sequence[str]) -> None:
        if not task_ids:
            return
        with self.session() as s:
            s.execute(update(TASKS).where(TaskRow.id.in_(list(task_ids))).values(dispatched_at=time.time()))

    def needing_dispatch(self, older_than: float, limit: int = 100) -> list[str]:
        """Tasks a broker may have lost: queued and not (re)sent recently, or running with a dead lease."""
        now = time.time()
        cutoff = now - older_than
        q = (
            select(TaskRow.id)
            .where(
                or_(
                    (TaskRow.status == "created")
                    & TaskRow.cancel_requested.is_(False)
                    & or_(TaskRow.dispatched_at.is_(None), TaskRow.dispatched_at < cutoff),
                    (TaskRow.status == "processing")
                    & (TaskRow.lease_until < now)
                    & or_(TaskRow.dispatched_at.is_(None), TaskRow.dispatched_at < cutoff),
                )
            )
            .order_by(TaskRow.created_at)
            .limit(limit)
        )
        with self.session() as s:
            return list(s.scalars(q))

    # -- webhooks ---------------------------------------------------------------------------------

    def record_webhook_attempt(self, task_id: str, a: WebhookAttempt) -> None:
        with self.session() as s:
            s.add(WebhookAttemptRow(task_id=task_id, **dataclasses.asdict(a)))

    def webhook_attempts(self, task_id: str) -> list[WebhookAttempt]:
        q = select(WebhookAttemptRow).where(WebhookAttemptRow.task_id == task_id).order_by(WebhookAttemptRow.id)
        with self.session() as s:
            return [
                WebhookAttempt(
                    webhook_id=r.webhook_id,
                    event=r.event,
                    attempt=r.attempt,
                    at=r.at,
                    url=r.url,
                    status_code=r.status_code,
                    error=r.error,
                    duration_ms=r.duration_ms,
                )
                for r in s.scalars(q)
            ]

    def set_webhook_state(self, task_id: str, state: str, *, expect: str | None = None) -> bool:
        """Move the delivery state; with ``expect``, only from that state (one deliverer at a time)."""
        q = update(TASKS).where(TaskRow.id == task_id)
        if expect is not None:
            q = q.where(TaskRow.webhook_state == expect)
        values: dict[str, Any] = {"webhook_state": state}
        if state == "sending":
            values["webhook_started_at"] = time.time()
        with self.session() as s:
            return s.execute(q.values(**values)).rowcount == 1

    def reset_stuck_webhooks(self, started_before: float) -> int:
        """Deliveries left 'sending' by a process that died are made pending again."""
        with self.session() as s:
            res = s.execute(
                update(TASKS)
                .where(TaskRow.webhook_state == "sending", TaskRow.webhook_started_at < started_before)
                .values(webhook_state="pending")
            )
            return res.rowcount

    def pending_webhooks(self, limit: int = 50) -> list[str]:
        q = select(TaskRow.id).where(TaskRow.webhook_state == "pending").order_by(TaskRow.finished_at).limit(limit)
        with self.session() as s:
            return list(s.scalars(q))

    # -- retention --------------------------------------------------------------------------------

    def expired(self, before: float, limit: int = 500) -> list[TaskRecord]:
        """Finished tasks whose files outlived the URL lifetime and are still on disk."""
        q = (
            select(TaskRow)
            .where(TaskRow.status.in_(TERMINAL), TaskRow.finished_at < before, TaskRow.files_expired.is_(False))
            .limit(limit)
        )
        with self.session() as s:
            return [_record(r) for r in s.scalars(q)]

    def mark_files_expired(self, task_ids: Sequence[str]) -> None:
        if task_ids:
            with self.session() as s:
                s.execute(update(TASKS).where(TaskRow.id.in_(list(task_ids))).values(files_expired=True))

    # -- keys and usage ---------------------------------------------------------------------------

    def create_key(
        self, name: str, *, rate_limit_rpm: int | None = None, max_concurrent_tasks: int | None = None
    ) -> tuple[ApiKey, str]:
        """A new key; the secret is returned once and only its hash is kept."""
        secret = "qk_" + secrets.token_urlsafe(24)
        row = ApiKeyRow(
            id=uuid.uuid4().hex[:16],
            name=name,
            prefix=secret[:7],
            hash=hash_key(secret),
            created_at=time.time(),
            rate_limit_rpm=rate_limit_rpm,
            max_concurrent_tasks=max_concurrent_tasks,
        )
        with self.session() as s:
            s.add(row)
        return _key(row), secret

    def list_keys(self, include_revoked: bool = True) -> list[ApiKey]:
        q = select(ApiKeyRow).order_by(ApiKeyRow.created_at)
        if not include_revoked:
            q = q.where(ApiKeyRow.revoked_at.is_(None))
        with self.session() as s:
            return [_key(r) for r in s.scalars(q)]

    def key_by_secret(self, secret: str) -> ApiKey | None:
        """The live key with this secret, or None (unknown and revoked look the same)."""
        q = select(ApiKeyRow).where(ApiKeyRow.hash == hash_key(secret), ApiKeyRow.revoked_at.is_(None))
        with self.session() as s:
            row = s.scalars(q).first()
            return _key(row) if row else None

    def revoke_key(self, key_id_or_prefix: str) -> ApiKey | None:
        with self.session() as s:
            rows = list(
                s.scalars(
                    select(ApiKeyRow).where(or_(ApiKeyRow.id == key_id_or_prefix, ApiKeyRow.prefix == key_id_or_prefix))
                )
            )
            if len(rows) != 1:
                return None
            row = rows[0]
            if row.revoked_at is None:
                row.revoked_at = time.time()
            return _key(row)

    def usage(self, key_id: str | None, since: float | None = None) -> Usage:
        base = select(
            func.count(),
            func.coalesce(func.sum(TaskRow.n_outputs), 0),
            func.coalesce(func.sum(TaskRow.compute_seconds), 0.0),
        ).where(TaskRow.key_id == key_id)
        if since is not None:
            base = base.where(TaskRow.created_at >= since)
        with self.session() as s:
            total, _, compute = s.execute(base).one()
            completed, images, _ = s.execute(base.where(TaskRow.status == "completed")).one()
            failed, _, _ = s.execute(base.where(TaskRow.status == "failed")).one()
        return Usage(
            tasks=int(total),
            completed=int(completed),
            failed=int(failed),
            images=int(images),
            compute_seconds=float(compute),
        )


def _key(row: ApiKeyRow) -> ApiKey:
    return ApiKey(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        rate_limit_rpm=row.rate_limit_rpm,
        max_concurrent_tasks=row.max_concurrent_tasks,
    )


def _webhook_pending() -> Any:
    """``pending`` if the task has a webhook URL, else unchanged: computed in SQL, in the same update."""
    return case((TaskRow.webhook_url.is_not(None), "pending"), else_=TaskRow.webhook_state)
