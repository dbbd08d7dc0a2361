"""What a task is made of, typed: its statuses, its inputs, outputs and options, its snapshot.

The JSON columns of the task table hold these models (see ``tables.TypedJSON``), so a key exists
because a class declares it, not because some writer happened to put it there; every reader gets
the same attributes back. Torch-free: the API, the worker and the interfaces all read tasks.
"""

from __future__ import annotations

import dataclasses
import enum
import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from qedit.params import EditParams


class TaskStatus(str, enum.Enum):
    CREATED = "created"  # queued: committed, no worker has it yet
    PROCESSING = "processing"  # a worker holds its lease
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value


ACTIVE = (TaskStatus.CREATED, TaskStatus.PROCESSING)
TERMINAL = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


class WebhookState(str, enum.Enum):
    """A task's webhook delivery: ``pending`` is set with the terminal transition, in the same update."""

    NONE = "none"  # no webhook, or the task is not finished
    PENDING = "pending"
    SENDING = "sending"  # one deliverer holds it (started at ``webhook_started_at``)
    DELIVERED = "delivered"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


class Interface(str, enum.Enum):
    """The API dialect a task was submitted through: it decides its public view and webhook body."""

    NATIVE = "native"
    WAVESPEED = "wavespeed"
    OPENAI = "openai"
    AGGREGATOR = "aggregator"

    def __str__(self) -> str:
        return self.value


FailureReason = Literal["invalid_input", "engine_error", "crashed", "cancelled"]
OutputFormat = Literal["png", "jpeg", "webp"]


class TaskInput(BaseModel):
    """One input image as stored: validated bytes under the data dir, and where they came from."""

    model_config = ConfigDict(frozen=True)

    path: str  # relative to the data dir
    source: str  # "upload", "url", "data-uri", "base64" or the task:// reference
    width: int
    height: int
    parent_id: str | None = None  # the task whose output this image is


class TaskOutput(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str  # the file name in result URLs
    file: str  # relative to the data dir
    seed: int
    width: int
    height: int
    format: OutputFormat
    metadata: dict[str, str] = Field(default_factory=dict)  # the engine's, also embedded in the file


class TaskOptions(BaseModel):
    """How to deliver, as the interface asked: file format, base64, the model name the client used."""

    model_config = ConfigDict(frozen=True)

    output_format: OutputFormat = "png"
    base64: bool = False
    client_model: str | None = None  # echoed in the interface's view (e.g. "wavespeed-ai/qwen-image/edit")


class RouteAttempt(BaseModel):
    """One try of a task on one backend (``service.backends``): the task's attempt chain is a list of these."""

    model_config = ConfigDict(frozen=True)

    backend: str
    kind: str  # local | qedit | wavespeed
    started_at: float
    ended_at: float | None = None
    outcome: str  # completed | failed (this backend; the task moves on) | rejected (the request's fault) | ...
    status_code: int | None = None  # the remote's HTTP status, where one answered
    error: str | None = None
    remote_id: str | None = None  # the task's id on the remote backend


@dataclasses.dataclass(frozen=True)
class TaskRecord:
    """A snapshot of one task row, safe to pass between threads and out of the session."""

    id: str
    key_id: str | None
    interface: Interface
    model: str
    status: TaskStatus
    params: EditParams
    inputs: list[TaskInput]
    mask: str | None
    parent_id: str | None
    options: TaskOptions
    base_url: str
    webhook_url: str | None
    webhook_state: WebhookState
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
    outputs: list[TaskOutput]
    n_outputs: int
    compute_seconds: float
    timings: dict[str, float]
    error: str | None
    error_reason: str | None
    files_expired: bool
    route: list[RouteAttempt] | None = None  # the attempt chain through the backends (None: no gateway)
    backend: str | None = None  # the backend that served it
    price_per_image: float | None = None  # that backend's price when it served it

    @property
    def queue_wait(self) -> float | None:
        return None if self.started_at is None else max(0.0, self.started_at - self.created_at)

    @property
    def inference_seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None or self.status != TaskStatus.COMPLETED:
            return None
        return max(0.0, self.finished_at - self.started_at)


@dataclasses.dataclass(frozen=True)
class NewTask:
    """What the API hands the store: everything validated, input files already on disk."""

    interface: Interface
    model: str
    params: EditParams
    inputs: list[TaskInput]
    base_url: str
    key_id: str | None = None
    mask: str | None = None
    parent_id: str | None = None
    options: TaskOptions = dataclasses.field(default_factory=TaskOptions)
    webhook_url: str | None = None
    id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex)
