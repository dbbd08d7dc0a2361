"""The one submission path every interface ends in: limits -> inputs -> files -> store -> dispatch.

Interfaces differ only in how they name things; once their schema has produced ``EditParams`` and a
list of image sources, the rest is here, so every interface refuses the same bad inputs the same
way, and nothing is queued unless all of it passed. ``wait`` serves sync modes (bounded).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from starlette.concurrency import run_in_threadpool

from qedit.api.deps import Caller
from qedit.api.errors import ApiError
from qedit.errors import InvalidInput
from qedit.models.snapshot import spec_of
from qedit.params import EditParams
from qedit.service.inputs import ImageInput
from qedit.service.services import Services
from qedit.service.store import TERMINAL, NewTask, TaskRecord
from qedit.service.webhooks import validate_webhook_url


@dataclasses.dataclass(frozen=True)
class Source:
    """An image as the client gave it: a string (URL, data URI, base64, task://) or uploaded bytes."""

    value: str | bytes
    field: str


def model_max_images(services: Services) -> int:
    """How many images the served model takes, known without loading it (torch-free spec lookup)."""
    settings = services.settings
    if settings.model == "instant":
        return settings.max_images
    spec = spec_of(settings.model)  # a broken snapshot: the worker reports it, the engine checks the count
    return min(spec.max_images, settings.max_images) if spec else settings.max_images


def check_capacity(services: Services, caller: Caller) -> None:
    """Per-key concurrent tasks (queued + running): a 429 with Retry-After before any work is done."""
    if caller.key is None:
        return
    limit = caller.key.max_concurrent_tasks or services.settings.max_concurrent_tasks
    active = services.store.active_count(caller.key_id)
    if active >= limit:
        raise ApiError(
            f"{active} tasks queued or running, at most {limit} at once for this key; retry later",
            status=429,
            field="authorization",
            code="too_many_tasks",
            headers={"Retry-After": "2"},
        )


def _resolve(
    services: Services, caller: Caller, images: list[Source], mask: Source | None, max_images: int
) -> tuple[list[ImageInput], ImageInput | None]:
    resolver = services.inputs
    resolver.check_count(len(images), field="images")
    if len(images) > max_images:
        raise InvalidInput(
            f"model {services.settings.model} takes at most {max_images} image(s), got {len(images)}", field="images"
        )

    def one(src: Source, is_mask: bool = False) -> ImageInput:
        if isinstance(src.value, bytes):
            return resolver.from_upload(src.value, src.field, mask=is_mask)
        return resolver.from_string(src.value, src.field, caller.scope, mask=is_mask)

    resolved = [one(s) for s in images]
    mask_input = None
    if mask is not None:
        mask_input = one(mask, is_mask=True)
        if mask_input.size != resolved[-1].size:
            (mw, mh), (iw, ih) = mask_input.size, resolved[-1].size
            raise InvalidInput(
                f"mask is {mw}x{mh} but the edited (last) image is {iw}x{ih}; they must match", field=mask.field
            )
    return resolved, mask_input


def _persist(
    services: Services,
    caller: Caller,
    interface: str,
    params: EditParams,
    images: list[ImageInput],
    mask: ImageInput | None,
    webhook_url: str | None,
    webhook_style: str,
    options: dict[str, Any],
    base_url: str,
) -> TaskRecord:
    task = NewTask(interface=interface, model=services.settings.model, params={}, inputs=[], base_url=base_url)
    storage = services.storage
    inputs = []
    for i, img in enumerate(images):
        path = storage.write_input(task.id, f"{i}.{img.ext}", img.data)
        inputs.append(
            {
                "path": path,
                "source": img.source,
                "width": img.size[0],
                "height": img.size[1],
                "parent_id": img.parent_id,
            }
        )
    mask_path = storage.write_input(task.id, f"mask.{mask.ext}", mask.data) if mask else None
    parent = images[-1].parent_id or next((i.parent_id for i in images if i.parent_id), None)
    task = dataclasses.replace(
        task,
        key_id=caller.key_id,
        params=params.model_dump(mode="json"),
        inputs=inputs,
        mask=mask_path,
        parent_id=parent,
        options=options,
        webhook_url=webhook_url,
        webhook_style=webhook_style,
    )
    return services.store.add(task)


async def submit(
    services: Services,
    caller: Caller,
    *,
    interface: str,
    params: EditParams,
    images: list[Source],
    mask: Source | None = None,
    webhook_url: str | None = None,
    webhook_field: str = "webhook_url",
    webhook_style: str = "standard",
    options: dict[str, Any] | None = None,
    base_url: str,
) -> TaskRecord:
    """Validate everything, persist the task, hand it to a worker; the task exists when this returns."""
    if webhook_url is not None:
        validate_webhook_url(webhook_url, services.settings, webhook_field)
    check_capacity(services, caller)
    max_images = model_max_images(services)
    try:
        resolved, mask_input = await run_in_threadpool(_resolve, services, caller, images, mask, max_images)
        task = await run_in_threadpool(
            _persist,
            services,
            caller,
            interface,
            params,
            resolved,
            mask_input,
            webhook_url,
            webhook_style,
            options or {},
            base_url,
        )
    except InvalidInput:
        services.metrics.rejected.labels("invalid_input").inc()
        raise
    services.dispatcher.submit(task.id)
    services.metrics.submitted.labels(interface).inc()
    return task


async def wait(services: Services, task_id: str, timeout: float) -> TaskRecord:
    """Poll the store until the task is terminal or ``timeout`` passes; returns its latest state."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        task = await run_in_threadpool(services.store.get, task_id)
        assert task is not None
        if task.status in TERMINAL or time.monotonic() >= deadline:
            return task
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.25)


async def get_task(services: Services, caller: Caller, task_id: str, field: str = "id") -> TaskRecord:
    task = await run_in_threadpool(services.store.get, task_id, caller.scope)
    if task is None:
        raise ApiError(f"task {task_id} not found", status=404, field=field, code="not_found")
    return task
