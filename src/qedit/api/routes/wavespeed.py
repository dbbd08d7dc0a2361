"""WaveSpeed v3 compatible routes: its clients and SDK work by pointing their base URL here."""

from __future__ import annotations

import re
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from qedit.api.deps import BaseUrlDep, CallerDep, ServicesDep
from qedit.api.errors import ApiError
from qedit.api.submit import Source, get_task, read_upload, submit, wait
from qedit.errors import InvalidInput
from qedit.interfaces import wavespeed
from qedit.interfaces.wavespeed import (
    MODEL_EDIT,
    MODEL_EDIT_2511_LORA,
    MODEL_EDIT_LORA,
    MODEL_EDIT_PLUS,
    MODEL_EDIT_PLUS_LORA,
    PredictionListResponse,
    PredictionResponse,
    SecretResponse,
    UploadCreate,
    UploadResponse,
    WaveSpeedCommon,
    WaveSpeedEdit,
    WaveSpeedEditLora,
    WaveSpeedEditPlus,
    WaveSpeedEditPlusLora,
)
from qedit.netfetch import MAX_URL_CHARS
from qedit.service.records import TERMINAL, Interface
from qedit.service.signing import webhook_secret

router = APIRouter(prefix="/api/v3", tags=["wavespeed"])

WebhookQuery = Annotated[
    str | None,
    Query(
        max_length=MAX_URL_CHARS,
        description="POSTed the result data on completed and failed; signed (see /api/v3/webhook/secret)",
    ),
]


async def _submit(
    body: WaveSpeedCommon,
    model: str,
    images: list[Source],
    services: ServicesDep,
    caller: CallerDep,
    base: str,
    webhook: str | None,
) -> dict:
    task = await submit(
        services,
        caller,
        interface=Interface.WAVESPEED,
        params=body.to_params(),
        images=images,
        webhook_url=webhook,
        webhook_field="webhook",
        options=body.to_options(model),
        base_url=base,
        model=wavespeed.SPEC_OF_ENDPOINT[model],
        exact_model=False,
    )
    if body.enable_sync_mode:
        task = await wait(services, task.id, services.settings.sync_timeout)
    data = await run_in_threadpool(wavespeed.prediction, task, services.storage)
    if body.enable_sync_mode and task.status not in TERMINAL:
        data["error"] = (
            f"Sync mode timed out after {services.settings.sync_timeout:g} s; "
            f"the task keeps running: query {data['urls']['get']}"
        )
    return wavespeed.envelope(data)


@router.post("/wavespeed-ai/qwen-image/edit", response_model=PredictionResponse, summary="Qwen Image Edit")
async def edit(
    body: WaveSpeedEdit, services: ServicesDep, caller: CallerDep, base: BaseUrlDep, webhook: WebhookQuery = None
) -> dict:
    return await _submit(body, MODEL_EDIT, [Source(body.image, "image")], services, caller, base, webhook)


@router.post("/wavespeed-ai/qwen-image/edit-plus", response_model=PredictionResponse, summary="Qwen Image Edit Plus")
async def edit_plus(
    body: WaveSpeedEditPlus, services: ServicesDep, caller: CallerDep, base: BaseUrlDep, webhook: WebhookQuery = None
) -> dict:
    images = [Source(v, f"images[{i}]") for i, v in enumerate(body.images)]
    return await _submit(body, MODEL_EDIT_PLUS, images, services, caller, base, webhook)


@router.post("/wavespeed-ai/qwen-image/edit-lora", response_model=PredictionResponse, summary="Qwen Image Edit LoRA")
async def edit_lora(
    body: WaveSpeedEditLora, services: ServicesDep, caller: CallerDep, base: BaseUrlDep, webhook: WebhookQuery = None
) -> dict:
    """One image and up to 3 LoRAs; each LoRA is checked (allowed, a LoRA of the model's shapes) at submit."""
    return await _submit(body, MODEL_EDIT_LORA, [Source(body.image, "image")], services, caller, base, webhook)


@router.post(
    "/wavespeed-ai/qwen-image/edit-plus-lora", response_model=PredictionResponse, summary="Qwen Image Edit Plus LoRA"
)
async def edit_plus_lora(
    body: WaveSpeedEditPlusLora,
    services: ServicesDep,
    caller: CallerDep,
    base: BaseUrlDep,
    webhook: WebhookQuery = None,
) -> dict:
    """1-3 images (the last is edited) and up to 3 LoRAs."""
    images = [Source(v, f"images[{i}]") for i, v in enumerate(body.images)]
    return await _submit(body, MODEL_EDIT_PLUS_LORA, images, services, caller, base, webhook)


@router.post(
    "/wavespeed-ai/qwen-image/edit-2511-lora", response_model=PredictionResponse, summary="Qwen Image Edit 2511 LoRA"
)
async def edit_2511_lora(
    body: WaveSpeedEditPlusLora,
    services: ServicesDep,
    caller: CallerDep,
    base: BaseUrlDep,
    webhook: WebhookQuery = None,
) -> dict:
    """1-3 images (the last is edited) and up to 3 LoRAs; runs on the model this server serves."""
    images = [Source(v, f"images[{i}]") for i, v in enumerate(body.images)]
    return await _submit(body, MODEL_EDIT_2511_LORA, images, services, caller, base, webhook)


@router.get("/predictions/{task_id}/result", response_model=PredictionResponse, summary="Get the result")
async def result(task_id: str, services: ServicesDep, caller: CallerDep) -> dict:
    task = await get_task(services, caller, task_id, field="requestId")
    return wavespeed.envelope(await run_in_threadpool(wavespeed.prediction, task, services.storage))


@router.get("/predictions", response_model=PredictionListResponse, summary="List predictions, newest first")
async def predictions(
    services: ServicesDep,
    caller: CallerDep,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict:
    tasks = await run_in_threadpool(
        services.tasks.list_tasks, caller.scope, limit=page_size, offset=(page - 1) * page_size
    )
    total = await run_in_threadpool(services.tasks.count, caller.scope)
    items = [await run_in_threadpool(wavespeed.prediction, t, services.storage) for t in tasks]
    return wavespeed.envelope({"items": items, "page": page, "page_size": page_size, "total": total})


@router.get("/webhook/secret", response_model=SecretResponse, summary="The secret webhooks are signed with")
async def secret(services: ServicesDep, caller: CallerDep) -> dict:
    return wavespeed.envelope({"secret": webhook_secret(services.secret, caller.key_id)})


@router.post("/media/uploads", response_model=UploadResponse, summary="Start an upload (the SDK's upload())")
async def create_upload(body: UploadCreate, services: ServicesDep, caller: CallerDep, base: BaseUrlDep) -> dict:
    """Answers a signed PUT URL for the bytes and the download URL to use as an image input."""
    limit = services.settings.max_input_bytes
    if body.size > limit:
        raise InvalidInput(f"file is {body.size} bytes, at most {limit} allowed", field="size")
    name = _safe_name(body.filename)
    put, download, expires = services.storage.upload_urls(base, uuid.uuid4().hex, name)
    return wavespeed.envelope(
        {"upload": {"method": "PUT", "url": put, "headers": {}}, "download_url": download, "expires_at": expires}
    )


@router.put("/media/uploads/{upload_id}/{name}", summary="Upload the bytes (signed URL from POST /media/uploads)")
async def put_upload(
    upload_id: str,
    name: str,
    request: Request,
    services: ServicesDep,
    expires: Annotated[int, Query()],
    sig: Annotated[str, Query(max_length=128)],
) -> dict:
    problem = services.storage.check_put(upload_id, name, expires, sig)
    if problem is not None:
        raise ApiError(f"the upload URL is invalid: {problem}", status=403, field="sig", code="bad_signature")
    data = await read_upload(request, services.settings.max_input_bytes, "file")
    image = await run_in_threadpool(services.inputs.from_upload, data, "file")
    await run_in_threadpool(services.storage.write_upload, upload_id, name, image.data)
    return wavespeed.envelope({"size": len(data)})


def _safe_name(filename: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", filename.rsplit("/", 1)[-1])[-64:].lstrip(".")
    return name or "upload"
