"""WaveSpeed v3: ``wavespeed-ai/qwen-image/edit``, ``/edit-plus`` and their LoRA endpoints
(``/edit-lora``, ``/edit-plus-lora``, ``/edit-2511-lora``) as its reference documents them.

Fields, defaults and bounds follow the reference (size ``W*H`` 256-1536 per side, seed -1..2^31-1,
output_format jpeg|png|webp default jpeg; ``loras`` up to 3 ``{path, scale}``). Unknown fields are
refused, not dropped. The endpoint a task came through is the model its result reports; the model
that runs is the endpoint's variant where this server serves it (``SPEC_OF_ENDPOINT``), else the
server's default model.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from qedit.interfaces.common import SizeText, edit_params, iso, ms, output_data_uris, output_urls
from qedit.loras.spec import MAX_LORAS, LoraSpec
from qedit.params import MAX_PROMPT_CHARS, SEED_MAX, EditParams
from qedit.service.records import TaskOptions, TaskRecord, TaskStatus
from qedit.service.storage import Storage

MODEL_EDIT = "wavespeed-ai/qwen-image/edit"
MODEL_EDIT_PLUS = "wavespeed-ai/qwen-image/edit-plus"
MODEL_EDIT_LORA = "wavespeed-ai/qwen-image/edit-lora"
MODEL_EDIT_PLUS_LORA = "wavespeed-ai/qwen-image/edit-plus-lora"
MODEL_EDIT_2511_LORA = "wavespeed-ai/qwen-image/edit-2511-lora"
SPEC_OF_ENDPOINT = {
    MODEL_EDIT: "qwen-image-edit",
    MODEL_EDIT_LORA: "qwen-image-edit",
    MODEL_EDIT_PLUS: "qwen-image-edit-2509",
    MODEL_EDIT_PLUS_LORA: "qwen-image-edit-2509",
    MODEL_EDIT_2511_LORA: "qwen-image-edit-2511",
}
"""The endpoint -> the qedit model it names: run there when the server serves it, else on the server's model."""
LORAS_DESCRIPTION = (
    f"Up to {MAX_LORAS} LoRAs, each {{path, scale}}: path is a .safetensors file (or folder) in the server's "
    "LoRA folder, a repo of an allowed hub organisation (owner/repo[/file.safetensors]) or a URL on an allowed "
    "host; scale -4 to 4, default 1."
)


class WaveSpeedCommon(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="The positive prompt.")
    size: SizeText | None = Field(
        default=None, description="The size of the generated media in pixels (width*height), 256 ~ 1536 per dimension."
    )
    seed: int = Field(default=-1, ge=-1, le=SEED_MAX, description="-1 means a random seed will be used.")
    output_format: Literal["jpeg", "png", "webp"] = "jpeg"
    enable_base64_output: bool = Field(default=False, description="Outputs as BASE64 data URIs instead of URLs.")
    enable_sync_mode: bool = Field(default=False, description="Wait for the result and answer with it.")

    def to_params(self) -> EditParams:
        return edit_params(self.prompt, size=self.size, seed=self.seed)

    def to_options(self, model: str) -> TaskOptions:
        return TaskOptions(output_format=self.output_format, base64=self.enable_base64_output, client_model=model)


class WaveSpeedEdit(WaveSpeedCommon):
    """``POST /api/v3/wavespeed-ai/qwen-image/edit``"""

    image: str = Field(description="The image to edit: URL, data URI or base64 (or task://ID/N).")


class WaveSpeedEditPlus(WaveSpeedCommon):
    """``POST /api/v3/wavespeed-ai/qwen-image/edit-plus``: 1-3 images, the last is edited."""

    images: list[str] = Field(min_length=1, max_length=3, description="1-3 images: URL, data URI or base64.")


class WaveSpeedLoras(WaveSpeedCommon):
    """The LoRA endpoints' extra field."""

    loras: list[LoraSpec] = Field(default_factory=list, max_length=MAX_LORAS, description=LORAS_DESCRIPTION)

    def to_params(self) -> EditParams:
        return edit_params(self.prompt, size=self.size, seed=self.seed, loras=self.loras)


class WaveSpeedEditLora(WaveSpeedLoras):
    """``POST /api/v3/wavespeed-ai/qwen-image/edit-lora``: one image and up to 3 LoRAs."""

    image: str = Field(description="The image to edit: URL, data URI or base64 (or task://ID/N).")


class WaveSpeedEditPlusLora(WaveSpeedLoras):
    """``POST /api/v3/wavespeed-ai/qwen-image/edit-plus-lora`` and ``/edit-2511-lora``: 1-3 images, the last
    is edited, and up to 3 LoRAs."""

    images: list[str] = Field(min_length=1, max_length=3, description="1-3 images: URL, data URI or base64.")


class Urls(BaseModel):
    get: str


class Timings(BaseModel):
    inference: int = Field(description="Inference time in milliseconds")


class Prediction(BaseModel):
    id: str
    model: str
    outputs: list[str]
    urls: Urls
    has_nsfw_contents: list[bool]
    status: Literal["created", "processing", "completed", "failed"]
    created_at: str | None
    error: str
    timings: Timings


class PredictionResponse(BaseModel):
    code: int
    message: str
    data: Prediction


class PredictionPage(BaseModel):
    items: list[Prediction]
    page: int
    page_size: int
    total: int


class PredictionListResponse(BaseModel):
    code: int
    message: str
    data: PredictionPage


class SecretData(BaseModel):
    secret: str


class SecretResponse(BaseModel):
    code: int
    message: str
    data: SecretData


class UploadCreate(BaseModel):
    """``POST /api/v3/media/uploads``: what the SDK's ``upload()`` asks for before it PUTs the bytes."""

    model_config = ConfigDict(extra="ignore")  # the SDK may add fields; none changes what we do

    filename: str = Field(min_length=1, max_length=200)
    size: int = Field(ge=1)
    content_type: str | None = None


class UploadInstruction(BaseModel):
    method: Literal["PUT"] = "PUT"
    url: str
    headers: dict[str, str]


class UploadTicket(BaseModel):
    upload: UploadInstruction
    download_url: str = Field(description="signed; usable as an image input of any endpoint")
    expires_at: int


class UploadResponse(BaseModel):
    code: int
    message: str
    data: UploadTicket


STATUS = {
    TaskStatus.CREATED: "created",
    TaskStatus.PROCESSING: "processing",
    TaskStatus.COMPLETED: "completed",
    TaskStatus.FAILED: "failed",
    TaskStatus.CANCELLED: "failed",  # WaveSpeed has no "cancelled"
}


def prediction(task: TaskRecord, storage: Storage) -> dict[str, Any]:
    """``Prediction``: the ``data`` of ``GET /api/v3/predictions/{id}/result`` (and of its webhook)."""
    outputs = output_data_uris(task, storage) if task.options.base64 else output_urls(task, storage)
    return {
        "id": task.id,
        "model": task.options.client_model or task.model,
        "outputs": outputs,
        "urls": {"get": f"{task.base_url.rstrip('/')}/api/v3/predictions/{task.id}/result"},
        "has_nsfw_contents": [False] * len(outputs),
        "status": STATUS[task.status],
        "created_at": iso(task.created_at),
        "error": task.error or "",
        "timings": {"inference": ms(task.inference_seconds) or 0},
    }


def envelope(data: Any, code: int = 200, message: str = "success") -> dict[str, Any]:
    """WaveSpeed wraps every answer: ``{code, message, data}``."""
    return {"code": code, "message": message, "data": data}


def webhook_body(task: TaskRecord, storage: Storage) -> dict[str, Any]:
    return prediction(task, storage)
