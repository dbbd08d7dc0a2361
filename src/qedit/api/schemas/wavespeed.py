"""WaveSpeed v3: ``wavespeed-ai/qwen-image/edit`` and ``/edit-plus`` as its reference documents them.

Fields, defaults and bounds follow the reference (size ``W*H`` 256-1536 per side, seed -1..2^31-1,
output_format jpeg|png|webp default jpeg). Unknown fields are refused, not dropped.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from qedit.api.schemas import SizeText, size_or_none
from qedit.params import MAX_PROMPT_CHARS, SEED_MAX, EditParams, validate

MODEL_EDIT = "wavespeed-ai/qwen-image/edit"
MODEL_EDIT_PLUS = "wavespeed-ai/qwen-image/edit-plus"


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
        data: dict[str, Any] = {"prompt": self.prompt, "seed": self.seed}
        if (size := size_or_none(self.size)) is not None:
            data["size"] = size
        return validate(EditParams, data)

    @property
    def options(self) -> dict[str, Any]:
        return {"output_format": self.output_format, "base64": self.enable_base64_output}


class WaveSpeedEdit(WaveSpeedCommon):
    """``POST /api/v3/wavespeed-ai/qwen-image/edit``"""

    image: str = Field(description="The image to edit: URL, data URI or base64 (or task://ID/N).")


class WaveSpeedEditPlus(WaveSpeedCommon):
    """``POST /api/v3/wavespeed-ai/qwen-image/edit-plus``: 1-3 images, the last is edited."""

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
