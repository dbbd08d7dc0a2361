"""The task store's tables (SQLAlchemy 2): tasks, webhook attempts, API keys.

Times are float epoch seconds, so SQLite and Postgres compare them the same way and no timezone
can be lost on the way. JSON columns hold what is read whole (parameters, inputs, outputs).
"""

from __future__ import annotations

from typing import Any, ClassVar

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSON, list[Any]: JSON}


class TaskRow(Base):
    __tablename__ = "qedit_tasks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_id: Mapped[str | None] = mapped_column(String(32), index=True)
    interface: Mapped[str] = mapped_column(String(16))  # native | wavespeed | openai | aggregator
    model: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))  # created | processing | completed | failed | cancelled
    params: Mapped[dict[str, Any]] = mapped_column(JSON)  # EditParams.model_dump(mode="json")
    inputs: Mapped[list[Any]] = mapped_column(JSON)  # [{"path": relative path, "source": str}]
    mask: Mapped[str | None] = mapped_column(String(300))
    parent_id: Mapped[str | None] = mapped_column(String(32))
    options: Mapped[dict[str, Any]] = mapped_column(JSON)  # output_format, base64, interface extras
    base_url: Mapped[str] = mapped_column(String(500))
    webhook_url: Mapped[str | None] = mapped_column(String(2048))
    webhook_style: Mapped[str] = mapped_column(String(16), default="standard")  # standard | wavespeed
    webhook_state: Mapped[str] = mapped_column(String(16), default="none")  # none|pending|sending|delivered|failed
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

    outputs: Mapped[list[Any]] = mapped_column(JSON, default=list)  # [{"file", "seed", "width", "height", ...}]
    n_outputs: Mapped[int] = mapped_column(Integer, default=0)
    compute_seconds: Mapped[float] = mapped_column(Float, default=0.0)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    error_reason: Mapped[str | None] = mapped_column(String(32))
    files_expired: Mapped[bool] = mapped_column(Boolean, default=False)

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
