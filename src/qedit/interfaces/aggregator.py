"""The aggregator's task API: ``POST /v1/images/generations`` -> task id, then poll the task.

As its reference documents: model ``qwen-image-edit``; prompt limited to 2000 tokens; 1-3
``image_urls``; optional ``mask_url``; ``callback_url`` (https, no internal addresses, <= 2048 chars),
called on completion, failure or cancellation with up to 3 retries. Links live 24 h. qedit's own
extras: ``negative_prompt``, ``output_format``, ``loras`` (up to 3 ``{path, scale}``) and ``fast``.

The token bound is checked with an estimate (one token per CJK character, per word, per
punctuation mark), since the API process has no tokenizer; the engine enforces the model's exact
limit when it runs.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from qedit.interfaces.common import SizeText, edit_params, output_urls
from qedit.loras.spec import MAX_LORAS, LoraSpec
from qedit.netfetch import MAX_URL_CHARS
from qedit.params import MAX_PROMPT_CHARS, NUM_MAX, SEED_MAX, EditParams
from qedit.service.records import TaskOptions, TaskRecord, TaskStatus
from qedit.service.storage import Storage

MODELS = ("qwen-image-edit", "qwen-image-edit-plus")
SPEC_OF_MODEL = {"qwen-image-edit": "qwen-image-edit", "qwen-image-edit-plus": "qwen-image-edit-2509"}
"""The aggregator's model -> the qedit model it names: run there when served, else on the server's model."""
MAX_TOKENS = 2000
_TOKEN_RE = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\u3040-\u30ff\uac00-\ud7af]|[^\W_]+|[^\w\s]", re.UNICODE)


def estimate_tokens(text: str) -> int:
    return len(_TOKEN_RE.findall(text))


class GenerationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Literal["qwen-image-edit", "qwen-image-edit-plus"] = Field(default="qwen-image-edit")
    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description=f"at most {MAX_TOKENS} tokens")
    image_urls: list[str] = Field(min_length=1, max_length=3, description="1-3 reference images (URL or data URI)")
    mask_url: str | None = Field(default=None, description="white = may change; same size as the last image")
    callback_url: str | None = Field(default=None, max_length=MAX_URL_CHARS, description="HTTPS callback")
    size: SizeText | None = Field(default=None, description="WxH output size, 256-1536 per side; default: the input's")
    n: int = Field(default=1, ge=1, le=NUM_MAX)
    seed: int = Field(default=-1, ge=-1, le=SEED_MAX)
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    output_format: Literal["png", "jpeg", "webp"] = "png"
    # qedit extras
    loras: list[LoraSpec] = Field(
        default_factory=list,
        max_length=MAX_LORAS,
        description=f"up to {MAX_LORAS} LoRAs {{path, scale}}: a file in the server's LoRA folder, an allowed hub "
        "repo or URL; scale -4 to 4",
    )
    fast: Literal[4, 8] | None = Field(default=None, description="Lightning: 4 or 8 steps without true CFG")

    @field_validator("prompt")
    @classmethod
    def _tokens(cls, v: str) -> str:
        n = estimate_tokens(v)
        if n > MAX_TOKENS:
            raise ValueError(f"at most {MAX_TOKENS} tokens allowed, got about {n}")
        return v

    def to_params(self) -> EditParams:
        return edit_params(
            self.prompt,
            size=self.size,
            num_images=self.n,
            seed=self.seed,
            negative_prompt=self.negative_prompt,
            loras=self.loras,
            fast=self.fast,
        )

    def to_options(self) -> TaskOptions:
        return TaskOptions(output_format=self.output_format, client_model=self.model)

    def model_hint(self) -> str:
        return SPEC_OF_MODEL[self.model]


class GenerationImage(BaseModel):
    url: str


class GenerationError(BaseModel):
    message: str | None
    code: str | None


class GenerationUsage(BaseModel):
    images: int
    compute_seconds: float


class GenerationTask(BaseModel):
    task_id: str
    object: Literal["image.task"] = "image.task"
    model: str
    status: Literal["queued", "processing", "succeeded", "failed", "cancelled"]
    progress: int = Field(description="0-100")
    created_at: int
    completed_at: int | None
    data: list[GenerationImage] = Field(description="result links, valid 24 h")
    expires_at: int | None
    error: GenerationError | None
    usage: GenerationUsage


STATUS = {
    TaskStatus.CREATED: "queued",
    TaskStatus.PROCESSING: "processing",
    TaskStatus.COMPLETED: "succeeded",
    TaskStatus.FAILED: "failed",
    TaskStatus.CANCELLED: "cancelled",
}


def view(task: TaskRecord, storage: Storage) -> dict[str, Any]:
    """``GenerationTask``: the task as the aggregator shows it (and as its callback carries it)."""
    if task.status == TaskStatus.COMPLETED:
        progress = 100
    else:
        progress = round(100 * task.progress_step / task.progress_total) if task.progress_total else 0
    return {
        "task_id": task.id,
        "object": "image.task",
        "model": task.options.client_model or task.model,
        "status": STATUS[task.status],
        "progress": progress,
        "created_at": int(task.created_at),
        "completed_at": int(task.finished_at) if task.finished_at else None,
        "data": [{"url": u} for u in output_urls(task, storage)],
        "expires_at": storage.expires_at(task.finished_at) if task.finished_at else None,
        "error": {"message": task.error, "code": task.error_reason} if task.error else None,
        "usage": {"images": task.n_outputs, "compute_seconds": round(task.compute_seconds, 3)},
    }


def webhook_body(task: TaskRecord, storage: Storage) -> dict[str, Any]:
    return view(task, storage)
