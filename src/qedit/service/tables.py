"""The task database's tables (SQLAlchemy 2): tasks, webhook attempts, API keys, workers.

Times are float epoch seconds, so SQLite and Postgres compare them the same way and no timezone
can be lost on the way. JSON columns hold what is read whole (parameters, inputs, outputs), each
typed by a model of ``records``: written from it, read back into it.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from qedit.params import EditParams
from qedit.service.records import RouteAttempt, TaskInput, TaskOptions, TaskOutput


class TypedJSON(TypeDecorator):
    """A JSON column whose value is ``model`` (a pydantic model, or a list/dict of them)."""

    impl = JSON
    cache_ok = True

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        self._adapter = TypeAdapter(model)

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return None if value is None else self._adapter.dump_python(value, mode="json")

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return None if value is None else self._adapter.validate_python(value)


class Base(DeclarativeBase):
    pass


class TaskRow(Base):
    __tablename__ = "qedit_tasks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_id: Mapped[str | None] = mapped_column(String(32), index=True)
    interface: Mapped[str] = mapped_column(String(16))  # records.Interface
    model: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))  # records.TaskStatus
    params: Mapped[EditParams] = mapped_column(TypedJSON(EditParams))
    inputs: Mapped[list[TaskInput]] = mapped_column(TypedJSON(list[TaskInput]))
    mask: Mapped[str | None] = mapped_column(String(300))
    parent_id: Mapped[str | None] = mapped_column(String(32))
    options: Mapped[TaskOptions] = mapped_column(TypedJSON(TaskOptions))
    base_url: Mapped[str] = mapped_column(String(500))
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    webhook_state: Mapped[str] = mapped_column(String(16), default="none")  # records.WebhookState
    webhook_started_at: Mapped[float | None] = mapped_column(Float)  # when the current delivery began

    created_at: Mapped[float] = mapped_column(Float)
    dispatched_at: Mapped[float | None] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)

    attempt: Mapped[int] = mapped_column(Integer, default=0)  # bumped by each claim; completion must match it
    lease_until: Mapped[float | None] = mapped_column(Float)
    worker: Mapped[str | None] = mapped_column(String(100))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    progress_step: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)

    outputs: Mapped[list[TaskOutput]] = mapped_column(TypedJSON(list[TaskOutput]), default=list)
    n_outputs: Mapped[int] = mapped_column(Integer, default=0)
    compute_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    timings: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)  # seconds per stage
    error: Mapped[str | None] = mapped_column(Text)
    error_reason: Mapped[str | None] = mapped_column(String(32))
    files_expired: Mapped[bool] = mapped_column(Boolean, default=False)
    # backends (service.backends): nullable, so Database.create_schema can add them to an older database
    route: Mapped[list[RouteAttempt] | None] = mapped_column(TypedJSON(list[RouteAttempt]), nullable=True)
    backend: Mapped[str | None] = mapped_column(String(64), nullable=True)
    price_per_image: Mapped[float | None] = mapped_column(Float, nullable=True)

    __table_args__ = (
        Index("ix_qedit_tasks_status_created", "status", "created_at"),
        Index("ix_qedit_tasks_key_created", "key_id", "created_at"),
    )


class WebhookAttemptRow(Base):
    __tablename__ = "qedit_webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("qedit_tasks.id", ondelete="CASCADE"), index=True)
    webhook_id: Mapped[str] = mapped_column(String(100))
    event: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int] = mapped_column(Integer)
    at: Mapped[float] = mapped_column(Float)
    url: Mapped[str] = mapped_column(String(2048))
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float] = mapped_column(Float, default=0.0)


class ApiKeyRow(Base):
    __tablename__ = "qedit_api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(String(16))  # shown in listings; the key itself is never stored
    hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)
    rate_limit_rpm: Mapped[int | None] = mapped_column(Integer)
    max_concurrent_tasks: Mapped[int | None] = mapped_column(Integer)


class WorkerRow(Base):
    """A worker that says it is alive (``service.workers``): one row per worker, refreshed by its heartbeat."""

    __tablename__ = "qedit_workers"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)  # the worker's name, kind@host:pid:n
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    model: Mapped[str] = mapped_column(String(200), index=True)  # as tasks store it (qedit_tasks.model)
    device: Mapped[str | None] = mapped_column(String(64))
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # EngineOptions.describe() + batching
    state: Mapped[str] = mapped_column(String(16))  # workers.WorkerState
    task_id: Mapped[str | None] = mapped_column(String(32))
    tasks_done: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[float] = mapped_column(Float)
    last_heartbeat: Mapped[float] = mapped_column(Float, index=True)
