"""The native API (``/v1/edits``): every engine option, named exactly as ``EditParams`` names it.

The request *is* ``EditParams`` plus where the images come from and how to deliver, so the mapping
onto the engine's parameters is a field selection (``to_params``) and the bounds in /docs are the
engine's own. The public view of a task is also its webhook body.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from qedit.errors import InvalidInput
from qedit.interfaces.common import iso, ms, output_b64, output_urls
from qedit.netfetch import MAX_URL_CHARS
from qedit.params import EditParams, parse_size
from qedit.service.outbox import WebhookAttempt
from qedit.service.records import TaskOptions, TaskRecord, TaskStatus, WebhookState
from qedit.service.storage import Storage

IMAGE_SOURCE = "an https URL, a data URI, bare base64, or task://ID/N (output N of an earlier task)"


class EditOptions(EditParams):
    """Engine parameters plus output and delivery options (the form of ``POST /v1/edits/upload``)."""

    output_format: Literal["png", "jpeg", "webp"] = "png"
    base64: bool = Field(default=False, description="also return each output as base64 (b64_json)")
    webhook_url: str | None = Field(
        default=None, max_length=MAX_URL_CHARS, description="POSTed on completed/failed/cancelled (https)"
    )
    sync: bool = Field(default=False, description="wait (bounded by the server's sync_timeout) for the result")
    model: str | None = Field(
        default=None,
        max_length=200,  # the task table's column
        description="the model to run (GET /v1/models); default: the server's. A model no live worker serves "
        "waits for one, or is refused with 503, as the server is set up",
    )

    @field_validator("size", mode="before")
    @classmethod
    def _size_text(cls, v: Any) -> Any:
        """``"1024x768"`` / ``"1024*768"`` as well as ``[1024, 768]``."""
        if isinstance(v, str):
            try:
                return parse_size(v)
            except InvalidInput as e:
                raise ValueError(e.message) from None
        return v

    def to_params(self) -> EditParams:
        return EditParams.model_validate(self.model_dump(include=set(EditParams.model_fields)))

    def to_options(self) -> TaskOptions:
        return TaskOptions(output_format=self.output_format, base64=self.base64)


class EditCreate(EditOptions):
    """``POST /v1/edits``: 1-3 images (the last is edited, the others are references), optional mask."""

    images: list[str] = Field(min_length=1, max_length=3, description=f"1-3 images: each {IMAGE_SOURCE}")
    mask: str | None = Field(default=None, description=f"white = may change; size of the last image: {IMAGE_SOURCE}")


class Progress(BaseModel):
    step: int
    total: int


class EditOutput(BaseModel):
    index: int
    url: str = Field(description="signed; valid until expires_at")
    b64_json: str | None = None
    seed: int
    width: int
    height: int
    format: str
    metadata: dict[str, str] = Field(description="the engine's metadata, also embedded in the file")


class EditInputInfo(BaseModel):
    source: str
    width: int
    height: int


class TaskError(BaseModel):
    message: str | None
    reason: str | None = Field(description="invalid_input | engine_error | crashed | cancelled")


class WebhookAttemptInfo(BaseModel):
    webhook_id: str
    event: str
    attempt: int
    at: str | None
    status_code: int | None
    error: str | None
    duration_ms: float


class WebhookInfo(BaseModel):
    url: str
    state: WebhookState
    attempts: list[WebhookAttemptInfo]


class BackendAttempt(BaseModel):
    """One try on one backend (a server with a backends file, docs/service.md#backends)."""

    backend: str
    kind: str = Field(description="local | qedit | wavespeed")
    started_at: str | None
    ended_at: str | None
    outcome: str = Field(
        description="running | completed | failed (the task moved on) | rejected | cancelled | lost | interrupted"
    )
    status_code: int | None = Field(description="the backend's HTTP status, where it answered")
    error: str | None
    remote_id: str | None = Field(description="the task's id on that backend")


class EditTask(BaseModel):
    id: str
    object: Literal["edit"] = "edit"
    interface: str
    model: str
    status: TaskStatus
    created_at: str | None
    started_at: str | None
    finished_at: str | None
    queue_wait_ms: int | None
    inference_ms: int | None
    timings: dict[str, float] = Field(description="seconds per engine stage, inference and queue_wait")
    attempt: int
    progress: Progress
    params: dict[str, Any]
    parent_id: str | None = Field(description="the task whose output this edit started from (task://)")
    inputs: list[EditInputInfo]
    outputs: list[EditOutput]
    expires_at: str | None
    error: TaskError | None
    webhook: WebhookInfo | None
    backend: str | None = Field(default=None, description="the backend that served it (a server with backends)")
    attempts: list[BackendAttempt] = Field(default_factory=list, description="each backend tried, in order")


class EditCounts(BaseModel):
    """All of the key's edits by state, not only the page's (the Playground's "running · completed")."""

    queued: int
    running: int
    completed: int
    failed: int
    cancelled: int


class EditList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EditTask]
    has_more: bool
    next_cursor: str | None = Field(description="pass as ?cursor= for the next (older) page")
    counts: EditCounts = Field(description="the key's edits per state, whatever the page, cursor and status filter")


def counts(by_status: dict[str, int]) -> dict[str, int]:
    """``EditCounts`` from the store's per-status counts (queued = created, running = processing)."""
    return {
        "queued": by_status.get(TaskStatus.CREATED.value, 0),
        "running": by_status.get(TaskStatus.PROCESSING.value, 0),
        "completed": by_status.get(TaskStatus.COMPLETED.value, 0),
        "failed": by_status.get(TaskStatus.FAILED.value, 0),
        "cancelled": by_status.get(TaskStatus.CANCELLED.value, 0),
    }


class BackendCost(BaseModel):
    backend: str = Field(description="'local' for tasks this server ran without a backends file")
    price_per_image: float
    images: int
    cost: float


class Usage(BaseModel):
    key: dict[str, str] | None
    tasks: int
    completed: int
    failed: int
    images: int
    compute_seconds: float
    price_per_image: float
    cost: float
    currency: Literal["USD"] = "USD"
    by_backend: list[BackendCost] = Field(
        default_factory=list, description="completed images and cost per serving backend and price"
    )


class WebhookSecret(BaseModel):
    secret: str = Field(description="HMAC-SHA256 key of this key's webhooks (Standard Webhooks whsec_ form)")


def view(task: TaskRecord, storage: Storage, attempts: list[WebhookAttempt] | None = None) -> dict[str, Any]:
    """``EditTask``: the task as ``GET /v1/edits/{id}`` shows it (and as its webhook carries it)."""
    urls = output_urls(task, storage)
    b64: list[str | None] = [*output_b64(task, storage)] if task.options.base64 else [None] * len(urls)
    outputs = [
        {
            "index": i,
            "url": url,
            "b64_json": data,
            "seed": o.seed,
            "width": o.width,
            "height": o.height,
            "format": o.format,
            "metadata": o.metadata,
        }
        for i, (o, url, data) in enumerate(zip(task.outputs, urls, b64, strict=False))
    ]
    webhook = None
    if task.webhook_url:
        webhook = {
            "url": task.webhook_url,
            "state": task.webhook_state,
            "attempts": [
                {
                    "webhook_id": a.webhook_id,
                    "event": a.event,
                    "attempt": a.attempt,
                    "at": iso(a.at),
                    "status_code": a.status_code,
                    "error": a.error,
                    "duration_ms": round(a.duration_ms, 1),
                }
                for a in (attempts or [])
            ],
        }
    return {
        "id": task.id,
        "object": "edit",
        "interface": task.interface,
        "model": task.model,
        "status": task.status,
        "created_at": iso(task.created_at),
        "started_at": iso(task.started_at),
        "finished_at": iso(task.finished_at),
        "queue_wait_ms": ms(task.queue_wait),
        "inference_ms": ms(task.inference_seconds),
        "timings": task.timings,
        "attempt": task.attempt,
        "progress": {"step": task.progress_step, "total": task.progress_total},
        "params": task.params.model_dump(mode="json"),
        "parent_id": task.parent_id,
        "inputs": [{"source": i.source, "width": i.width, "height": i.height} for i in task.inputs],
        "outputs": outputs,
        "expires_at": iso(storage.expires_at(task.finished_at)) if task.finished_at else None,
        "error": {"message": task.error, "reason": task.error_reason} if task.error else None,
        "webhook": webhook,
        "backend": task.backend,
        "attempts": [
            {
                "backend": a.backend,
                "kind": a.kind,
                "started_at": iso(a.started_at),
                "ended_at": iso(a.ended_at),
                "outcome": a.outcome,
                "status_code": a.status_code,
                "error": a.error,
                "remote_id": a.remote_id,
            }
            for a in (task.route or [])
        ],
    }


def webhook_body(task: TaskRecord, storage: Storage) -> dict[str, Any]:
    return view(task, storage)
