"""OpenAI Images ``POST /v1/images/edits`` (multipart), as the official ``openai`` SDK sends it.

Images come as ``image`` (one file) or ``image[]`` (several, the SDK's array form), up to 3; the
last is the one edited. OpenAI-only knobs we cannot honour are accepted only at values that change
nothing (``background=transparent`` or ``stream=true`` are refused, not silently dropped); qedit's
own knobs (seed, steps, cfg, negative prompt, ``fast``, and ``loras`` as a JSON string, since a
form has no nested values) may be added as extra form fields.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from qedit.errors import InvalidInput
from qedit.interfaces.common import SizeText, edit_params, output_b64, output_urls
from qedit.loras.spec import MAX_LORAS
from qedit.params import (
    CFG_MAX,
    CFG_MIN,
    MAX_PROMPT_CHARS,
    NUM_MAX,
    SEED_MAX,
    STEPS_MAX,
    STEPS_MIN,
    EditParams,
)
from qedit.service.records import TaskOptions, TaskRecord
from qedit.service.storage import Storage

FILE_FIELDS = ("image", "image[]", "mask")


class OpenAIEdit(BaseModel):
    """The non-file form fields."""

    model_config = ConfigDict(extra="ignore")  # the route refuses unknown keys itself (files share the form)

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    n: int = Field(default=1, ge=1, le=NUM_MAX, description=f"images to make, 1-{NUM_MAX}")
    size: SizeText = Field(default="auto", description="WxH, 256-1536 per side, or auto (the input's size)")
    response_format: Literal["url", "b64_json"] = "url"
    output_format: Literal["png", "jpeg", "webp"] = "png"
    model: str | None = Field(
        default=None,
        max_length=500,
        description="a model this server serves (GET /v1/models) runs there; any other name (gpt-image-1, ...) "
        "runs on the server's default model",
    )
    user: str | None = None
    quality: Literal["auto", "low", "medium", "high", "standard"] | None = None
    background: Literal["auto", "opaque"] | None = None
    input_fidelity: Literal["high", "low"] | None = None
    output_compression: int | None = Field(default=None, ge=0, le=100)
    stream: Literal[False] | None = None
    partial_images: Literal[0] | None = None
    # qedit extras
    seed: int = Field(default=-1, ge=-1, le=SEED_MAX)
    negative_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS)
    num_inference_steps: int | None = Field(default=None, ge=STEPS_MIN, le=STEPS_MAX)
    true_cfg_scale: float | None = Field(default=None, ge=CFG_MIN, le=CFG_MAX)
    loras: str | None = Field(
        default=None,
        max_length=16_384,
        description=f'JSON array of up to {MAX_LORAS} LoRAs, e.g. [{{"path": "style.safetensors", "scale": 0.8}}] '
        "(a file in the server's LoRA folder, an allowed hub repo or URL; scale -4 to 4)",
    )
    fast: Literal[4, 8] | None = Field(
        default=None, description="Lightning: 4 or 8 steps without true CFG (leave num_inference_steps unset)"
    )

    @field_validator("fast", mode="before")
    @classmethod
    def _fast_text(cls, v: Any) -> Any:
        """Form values are text: "8" is 8 (a ``Literal`` takes no text for a number by itself)."""
        return int(v) if isinstance(v, str) and v.strip().isdigit() else v

    def to_params(self) -> EditParams:
        return edit_params(
            self.prompt,
            size=self.size,
            num_images=self.n,
            seed=self.seed,
            negative_prompt=self.negative_prompt,
            num_inference_steps=self.num_inference_steps,
            true_cfg_scale=self.true_cfg_scale,
            loras=self._loras(),
            fast=self.fast,
        )

    def _loras(self) -> Any:
        """The form's JSON text -> a list for ``EditParams`` (which checks each entry and the count)."""
        if self.loras is None or not self.loras.strip():
            return None
        try:
            value = json.loads(self.loras)
        except json.JSONDecodeError as e:
            raise InvalidInput(
                f'is not valid JSON ({e.msg}); expected [{{"path": ..., "scale": ...}}]', field="loras"
            ) from None
        if not isinstance(value, list):
            raise InvalidInput(
                f"must be a JSON array of {{path, scale}} objects, got {type(value).__name__}", field="loras"
            )
        return value

    def to_options(self) -> TaskOptions:
        return TaskOptions(
            output_format=self.output_format, base64=self.response_format == "b64_json", client_model=self.model
        )


class OpenAIImage(BaseModel):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


class OpenAIImagesResponse(BaseModel):
    created: int
    data: list[OpenAIImage]
    output_format: str
    size: str | None
    background: Literal["opaque"] = "opaque"


def images_response(task: TaskRecord, storage: Storage) -> dict[str, Any]:
    """``OpenAIImagesResponse`` for a completed task (OpenAI's edits answer synchronously)."""
    if task.options.base64:
        data = [{"b64_json": b} for b in output_b64(task, storage)]
    else:
        data = [{"url": u} for u in output_urls(task, storage)]
    first = task.outputs[0] if task.outputs else None
    return {
        "created": int(task.created_at),
        "data": data,
        "output_format": task.options.output_format,
        "size": f"{first.width}x{first.height}" if first else None,
        "background": "opaque",
    }
