"""Native API: ``/v1/edits`` (create, get, cancel, list, events), uploads, usage, webhook secret."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from qedit.api.deps import BaseUrlDep, Caller, CallerDep, ServicesDep
from qedit.api.submit import Source, get_task, read_upload, submit, wait
from qedit.errors import InvalidInput
from qedit.interfaces import native
from qedit.interfaces.native import EditCreate, EditList, EditOptions, EditTask, Usage, WebhookSecret
from qedit.params import validate
from qedit.service.records import TERMINAL, Interface, TaskRecord, TaskStatus, WebhookState
from qedit.service.signing import webhook_secret
from qedit.service.wiring import Services

router = APIRouter(tags=["native"])

SSE_POLL = 0.1
SSE_KEEPALIVE = 15.0
SSE_MAX_SECONDS = 6 * 3600


def _view(services: ServicesDep, task: TaskRecord) -> dict:
    attempts = services.outbox.attempts(task.id) if task.webhook_url else None
    return native.view(task, services.storage, attempts)


async def _answer(services: ServicesDep, task: TaskRecord, sync: bool, response: Response) -> dict:
    if sync:
        task = await wait(services, task.id, services.settings.sync_timeout)
    response.status_code = 200 if task.status in TERMINAL else 202
    response.headers["Location"] = f"/v1/edits/{task.id}"
    return await run_in_threadpool(_view, services, task)


async def _create(
    services: Services,
    caller: Caller,
    base: str,
    response: Response,
    options: EditOptions,
    images: list[Source],
    mask: Source | None,
) -> dict:
    """Both create routes: submit, then 202 with the task (200 with the result when ``sync`` finished)."""
    task = await submit(
        services,
        caller,
        interface=Interface.NATIVE,
        params=options.to_params(),
        images=images,
        mask=mask,
        webhook_url=options.webhook_url,
        options=options.to_options(),
        base_url=base,
        model=options.model,
    )
    return await _answer(services, task, options.sync, response)


@router.post("/v1/edits", response_model=EditTask, status_code=202, summary="Create an edit (JSON)")
async def create_edit(
    body: EditCreate, services: ServicesDep, caller: CallerDep, base: BaseUrlDep, response: Response
) -> dict:
    """Queue an edit; 202 with the task (or 200 with the result when ``sync`` and it finished in time)."""
    images = [Source(v, f"images[{i}]") for i, v in enumerate(body.images)]
    mask = Source(body.mask, "mask") if body.mask is not None else None
    return await _create(services, caller, base, response, body, images, mask)


@router.post("/v1/edits/upload", response_model=EditTask, status_code=202, summary="Create an edit (multipart)")
async def create_edit_upload(
    services: ServicesDep,
    caller: CallerDep,
    base: BaseUrlDep,
    response: Response,
    image: Annotated[list[UploadFile], File(description="1-3 image files; the last is edited")],
    params: Annotated[str, Form(description="JSON object: the fields of POST /v1/edits except images and mask")],
    mask: Annotated[UploadFile | None, File(description="optional mask, same size as the last image")] = None,
) -> dict:
    try:
        raw = json.loads(params)
    except json.JSONDecodeError as e:
        raise InvalidInput(f"is not valid JSON: {e}", field="params") from None
    if not isinstance(raw, dict):
        raise InvalidInput("must be a JSON object", field="params")
    options: EditOptions = validate(EditOptions, raw, "params")
    limit = services.settings.max_input_bytes
    images = [Source(await read_upload(f, limit, f"image[{i}]"), f"image[{i}]") for i, f in enumerate(image)]
    mask_src = Source(await read_upload(mask, limit, "mask"), "mask") if mask is not None else None
    return await _create(services, caller, base, response, options, images, mask_src)


@router.get("/v1/edits/{task_id}", response_model=EditTask, summary="An edit's status and result")
async def get_edit(task_id: str, services: ServicesDep, caller: CallerDep) -> dict:
    task = await get_task(services, caller, task_id)
    return await run_in_threadpool(_view, services, task)


@router.delete("/v1/edits/{task_id}", response_model=EditTask, summary="Cancel an edit")
async def cancel_edit(task_id: str, services: ServicesDep, caller: CallerDep) -> dict:
    """A queued edit is cancelled at once; a running one stops at its next step (poll or watch events)."""
    await get_task(services, caller, task_id)
    task = await run_in_threadpool(services.tasks.request_cancel, task_id, caller.scope)
    assert task is not None
    if task.webhook_state == WebhookState.PENDING:
        services.dispatcher.deliver_webhook(task.id)
    return await run_in_threadpool(_view, services, task)


@router.get("/v1/edits", response_model=EditList, summary="History of edits, newest first")
async def list_edits(
    services: ServicesDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    status: Annotated[TaskStatus | None, Query()] = None,
) -> dict:
    before = None
    if cursor:
        ts, _, tid = cursor.partition("_")
        try:
            before = (float(ts), tid)
        except ValueError:
            raise InvalidInput(f"not a cursor from this API: {cursor[:60]!r}", field="cursor") from None
    tasks = await run_in_threadpool(
        services.tasks.list_tasks, caller.scope, limit=limit + 1, before=before, status=status
    )
    page = tasks[:limit]
    data = [await run_in_threadpool(_view, services, t) for t in page]
    more = len(tasks) > limit
    by_status = await run_in_threadpool(services.tasks.counts_by_status, caller.scope)
    return {
        "object": "list",
        "data": data,
        "has_more": more,
        "next_cursor": f"{page[-1].created_at!r}_{page[-1].id}" if more and page else None,
        "counts": native.counts(by_status),
    }


@router.get("/v1/edits/{task_id}/events", summary="Server-sent events: queued, step n/N, completed/failed")
async def edit_events(task_id: str, services: ServicesDep, caller: CallerDep, request: Request) -> StreamingResponse:
    """``event: queued|started|step|completed|failed|cancelled``, ``data:`` JSON; ends at a final state."""
    await get_task(services, caller, task_id)
    return StreamingResponse(
        _events(services, task_id, request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _events(services: ServicesDep, task_id: str, request: Request) -> AsyncIterator[bytes]:
    last: tuple[str, int, int, int] | None = None
    start = time.monotonic()
    quiet_since = time.monotonic()
    while time.monotonic() - start < SSE_MAX_SECONDS:
        task = await run_in_threadpool(services.tasks.get, task_id)
        if task is None:
            return
        state = (task.status, task.attempt, task.progress_step, task.progress_total)
        if state != last:
            if task.status == TaskStatus.CREATED and last is None:
                yield _sse("queued", {"id": task.id, "status": task.status})
            elif task.status == TaskStatus.PROCESSING:
                if last is None or last[0] != TaskStatus.PROCESSING or last[1] != task.attempt:
                    yield _sse("started", {"id": task.id, "attempt": task.attempt})
                if task.progress_total:
                    yield _sse("step", {"id": task.id, "step": task.progress_step, "total": task.progress_total})
            elif task.status in TERMINAL:
                yield _sse(task.status, await run_in_threadpool(_view, services, task))
                return
            last = state
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > SSE_KEEPALIVE:
            yield b": keep-alive\n\n"
            quiet_since = time.monotonic()
        if await request.is_disconnected():
            return
        await asyncio.sleep(SSE_POLL)


@router.get("/v1/usage", response_model=Usage, summary="This key's usage and cost")
async def usage(
    services: ServicesDep,
    caller: CallerDep,
    since: Annotated[float | None, Query(description="only tasks created at/after this Unix time")] = None,
) -> dict:
    u = await run_in_threadpool(services.keys.usage, caller.key_id, since)
    price = services.settings.price_per_image
    groups = await run_in_threadpool(services.keys.images_by_backend, caller.key_id, since)
    by_backend = [
        {"backend": b or "local", "price_per_image": price if p is None else p, "images": n} for b, p, n in groups
    ]
    for g in by_backend:
        g["cost"] = round(g["images"] * g["price_per_image"], 6)
    key = {"id": caller.key.id, "name": caller.key.name, "prefix": caller.key.prefix} if caller.key else None
    return {
        "key": key,
        "tasks": u.tasks,
        "completed": u.completed,
        "failed": u.failed,
        "images": u.images,
        "compute_seconds": round(u.compute_seconds, 3),
        "price_per_image": price,
        "cost": round(sum(g["cost"] for g in by_backend), 6),  # each task at the price of the backend that served it
        "currency": "USD",
        "by_backend": by_backend,
    }


@router.get("/v1/webhooks/secret", response_model=WebhookSecret, summary="The secret webhooks are signed with")
async def native_webhook_secret(services: ServicesDep, caller: CallerDep) -> dict:
    return {"secret": webhook_secret(services.secret, caller.key_id)}
