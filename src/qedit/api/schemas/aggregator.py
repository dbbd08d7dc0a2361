"""The aggregator's task API: ``POST /v1/images/generations`` -> task id, then poll the task.

As its reference documents: model ``qwen-image-edit``; prompt limited to 2000 tokens; 1-3
``image_urls``; optional ``mask_url``; ``callback_url`` (https, no internal addresses, <= 2048 chars),
called on completion, failure or cancellation with up to 3 retries. Links live 24 h.

The token bound is checked with an estimate (one token per CJK character, per word, per
punctuation mark), since the API process has no tokenizer; the engine enforces the model's exact
limit when it runs.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from qedit.api.schemas import SizeText, size_or_none
from qedit.params import MAX_PROMPT_CHARS, NUM_MAX, SEED_MAX, EditParams, validate
from qedit.service.fetch import MAX_URL_CHARS

MODELS = ("qwen-image-edit", "qwen-image-edit-plus")
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

    @field_validator("prompt")
    @classmethod
    def _tokens(cls, v: str) -> str:
        n = estimate_tokens(v)
        if n > MAX_TOKENS:
            raise ValueError(f"at most {MAX_TOKENS} tokens allowed, got about {n}")
        return v

    def to_params(self) -> EditParams:
        data: dict[str, Any] = {"prompt": self.prompt, "num_images": self.n, "seed": self.seed}
        if (size := size_or_none(self.size)) is not None:
            data["size"] = size
        if self.negative_prompt is not None:
            data["negative_prompt"] = self.negative_prompt
        return validate(EditParams, data)


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
