"""The aggregator's task API: submit with ``POST /v1/images/generations``, poll ``GET .../{task_id}``."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from qedit.api.deps import BaseUrlDep, CallerDep, ServicesDep
from qedit.api.submit import Source, get_task, submit
from qedit.interfaces import aggregator
from qedit.interfaces.aggregator import GenerationCreate, GenerationTask
from qedit.service.records import Interface

router = APIRouter(tags=["aggregator"])


@router.post("/v1/images/generations", response_model=GenerationTask, summary="Create an image editing task")
async def create_generation(body: GenerationCreate, services: ServicesDep, caller: CallerDep, base: BaseUrlDep) -> dict:
    images = [Source(v, f"image_urls[{i}]") for i, v in enumerate(body.image_urls)]
    mask = Source(body.mask_url, "mask_url") if body.mask_url else None
    task = await submit(
        services,
        caller,
        interface=Interface.AGGREGATOR,
        params=body.to_params(),
        images=images,
        mask=mask,
        webhook_url=body.callback_url,
        webhook_field="callback_url",
        options=body.to_options(),
        base_url=base,
        model=body.model_hint(),
        exact_model=False,
    )
    return aggregator.view(task, services.storage)


@router.get("/v1/images/generations/{task_id}", response_model=GenerationTask, summary="A task's status and result")
async def get_generation(task_id: str, services: ServicesDep, caller: CallerDep) -> dict:
    task = await get_task(services, caller, task_id, field="task_id")
    return await run_in_threadpool(aggregator.view, task, services.storage)


@router.get("/v1/tasks/{task_id}", response_model=GenerationTask, summary="Same as GET /v1/images/generations/{id}")
async def get_task_alias(task_id: str, services: ServicesDep, caller: CallerDep) -> dict:
    return await get_generation(task_id, services, caller)
