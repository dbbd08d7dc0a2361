"""The webhook outbox: which finished tasks still owe their client a webhook, and every attempt.

A task's terminal transition sets ``webhook_state = pending`` in the same update (see ``tasks``), so
a delivery survives a crash. Whoever finds it pending (the worker right away, else the sweeper)
takes it with a conditional move to ``sending``: one deliverer at a time.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from sqlalchemy import select, update

from qedit.service.database import Database
from qedit.service.records import WebhookState
from qedit.service.tables import TaskRow, WebhookAttemptRow

TASKS = TaskRow.__table__


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


class WebhookOutbox:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record_attempt(self, task_id: str, a: WebhookAttempt) -> None:
        with self.db.transaction() as s:
            s.add(WebhookAttemptRow(task_id=task_id, **dataclasses.asdict(a)))

    def attempts(self, task_id: str) -> list[WebhookAttempt]:
        q = select(WebhookAttemptRow).where(WebhookAttemptRow.task_id == task_id).order_by(WebhookAttemptRow.id)
        with self.db.transaction() as s:
            return [
                WebhookAttempt(**{f.name: getattr(r, f.name) for f in dataclasses.fields(WebhookAttempt)})
                for r in s.scalars(q)
            ]

    def move(self, task_id: str, state: WebhookState, *, expect: WebhookState | None = None) -> bool:
        """Move the delivery state; with ``expect``, only from that state (one deliverer at a time)."""
        q = update(TASKS).where(TaskRow.id == task_id)
        if expect is not None:
            q = q.where(TaskRow.webhook_state == expect.value)
        values: dict[str, Any] = {"webhook_state": state.value}
        if state == WebhookState.SENDING:
            values["webhook_started_at"] = time.time()
        with self.db.transaction() as s:
            return s.execute(q.values(**values)).rowcount == 1

    def reset_stuck(self, started_before: float) -> int:
        """Deliveries left ``sending`` by a process that died are made pending again."""
        with self.db.transaction() as s:
            res = s.execute(
                update(TASKS)
                .where(TaskRow.webhook_state == WebhookState.SENDING.value, TaskRow.webhook_started_at < started_before)
                .values(webhook_state=WebhookState.PENDING.value)
            )
            return res.rowcount

    def pending(self, limit: int = 50) -> list[str]:
        q = (
            select(TaskRow.id)
            .where(TaskRow.webhook_state == WebhookState.PENDING.value)
            .order_by(TaskRow.finished_at)
            .limit(limit)
        )
        with self.db.transaction() as s:
            return list(s.scalars(q))
