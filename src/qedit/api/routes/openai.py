"""OpenAI Images compatible ``POST /v1/images/edits``: synchronous from the client's side (bounded)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Request, UploadFile
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile as StarletteUpload

from qedit.api.deps import BaseUrlDep, CallerDep, ServicesDep
from qedit.api.errors import ApiError
from qedit.api.submit import Source, read_upload, submit, wait
from qedit.errors import InvalidInput
from qedit.interfaces import openai
from qedit.interfaces.openai import FILE_FIELDS, OpenAIEdit, OpenAIImagesResponse
from qedit.service.records import Interface, TaskStatus

router = APIRouter(tags=["openai"])


@router.post("/v1/images/edits", response_model=OpenAIImagesResponse, summary="OpenAI-compatible image edit")
async def images_edits(
    request: Request,
    form: Annotated[OpenAIEdit, Form()],
    services: ServicesDep,
    caller: CallerDep,
    base: BaseUrlDep,
    image: Annotated[list[UploadFile] | None, File(description="one image file (or use image[])")] = None,
    image_array: Annotated[list[UploadFile] | None, File(alias="image[]", description="1-3 image files")] = None,
    mask: Annotated[UploadFile | None, File(description="white = may change (or alpha 0 = change)")] = None,
) -> dict:
    raw = await request.form()
    unknown = sorted(set(raw.keys()) - set(OpenAIEdit.model_fields) - set(FILE_FIELDS))
    if unknown:
        raise InvalidInput("is not a known field of /v1/images/edits", field=unknown[0])
    for key in raw:
        if key not in FILE_FIELDS and isinstance(raw[key], StarletteUpload):
            raise InvalidInput("must be a form value, not a file", field=key)
    uploads = [*(image or []), *(image_array or [])]
    if not uploads:
        raise InvalidInput("at least 1 image file is needed (image or image[])", field="image")
    limit = services.settings.max_input_bytes
    images = [Source(await read_upload(f, limit, f"image[{i}]"), f"image[{i}]") for i, f in enumerate(uploads)]
    mask_src = Source(await read_upload(mask, limit, "mask"), "mask") if mask is not None else None
    task = await submit(
        services,
        caller,
        interface=Interface.OPENAI,
        params=form.to_params(),
        images=images,
        mask=mask_src,
        options=form.to_options(),
        base_url=base,
        model=form.model,
        exact_model=False,
    )
    task = await wait(services, task.id, services.settings.sync_timeout)
    if task.status == TaskStatus.FAILED:
        status = 400 if task.error_reason == "invalid_input" else 500
        raise ApiError(
            f"the edit failed: {task.error} (task {task.id})", status=status, code=task.error_reason or "failed"
        )
    if task.status == TaskStatus.CANCELLED:
        raise ApiError(f"the edit was cancelled (task {task.id})", status=409, code="cancelled")
    if task.status != TaskStatus.COMPLETED:
        raise ApiError(
            f"the edit did not finish within {services.settings.sync_timeout:g} s; it keeps running: "
            f"GET /v1/edits/{task.id}",
            status=504,
            code="timeout",
        )
    return await run_in_threadpool(openai.images_response, task, services.storage)
