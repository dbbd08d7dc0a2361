"""The one submission path every interface ends in: limits -> LoRAs -> inputs -> checks -> files -> store
-> dispatch.

Interfaces differ only in how they name things; once their schema has produced ``EditParams``,
``TaskOptions`` and a list of image sources, the rest is here, so every interface refuses the same
bad inputs the same way (``qedit.request_check``, as the CLI and the engine do; LoRAs and ``fast``
through ``qedit.service.loras.LoraCheck``, the allow-list the worker resolves them with), and nothing
is queued, stored or counted unless all of it passed. ``wait`` serves sync modes (bounded).

Which model runs (``choose_model``), the same rule for every interface: no model named -> the
server's ``model``; a name of a model the server knows (``model``, ``QEDIT_MODELS``, or one a live
worker serves; matched as given or as its canonical id, so ``qwen-image-edit-2509`` finds the
worker serving ``Qwen/Qwen-Image-Edit-2509``) -> that model. Any other name: the native API refuses
it (400 naming ``model`` and the served ones); the dialects whose ``model`` is their own catalogue's
name (the aggregator's ``qwen-image-edit``, OpenAI's ``gpt-image-1``, a WaveSpeed endpoint) run it on
the server's ``model``, as they always did. A known model no live worker serves: queued until one
comes (``QEDIT_NO_WORKER=wait``, the default) or 503 with Retry-After (``refuse``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Iterable

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request

from qedit.api.deps import Caller
from qedit.api.errors import ApiError
from qedit.errors import InvalidInput
from qedit.models.snapshot import spec_of
from qedit.models.specs import SPECS, ModelSpec
from qedit.params import EditParams
from qedit.request_check import check_image_count, check_request
from qedit.service.inputs import ImageInput
from qedit.service.records import TERMINAL, Interface, NewTask, TaskInput, TaskOptions, TaskRecord
from qedit.service.tasks import AtCapacity
from qedit.service.webhooks import validate_webhook_url
from qedit.service.wiring import Services
from qedit.service.workers import INSTANT, served_model

NO_WORKER_RETRY = 5  # seconds a refused client is told to wait: about a worker's start without weights to fetch


@dataclasses.dataclass(frozen=True)
class Source:
    """An image as the client gave it: a string (URL, data URI, base64, task://) or uploaded bytes."""

    value: str | bytes
    field: str


@dataclasses.dataclass(frozen=True)
class Inputs:
    images: list[ImageInput]
    mask: ImageInput | None


def model_spec(model: str) -> ModelSpec | None:
    """The spec of a model id without loading it: a spec name, a snapshot dir, or a real spec's hub id."""
    return spec_of(model) or next((s for s in SPECS.values() if s.hub_id == model), None)


def model_max_images(services: Services, model: str | None = None) -> int:
    """How many images ``model`` (default: the served one) takes, known without loading it."""
    settings = services.settings
    model = model or settings.model
    if model == INSTANT:
        return settings.max_images
    spec = model_spec(model)  # a broken snapshot: the worker reports it, the engine checks the count
    return min(spec.max_images, settings.max_images) if spec else settings.max_images


def known_models(services: Services, live: Iterable[str] | None = None) -> list[str]:
    """Models a request may name: the server's ``model``, ``QEDIT_MODELS``, then those with live workers."""
    settings = services.settings
    configured = [served_model(m) for m in (settings.model, *settings.models)]
    return list(dict.fromkeys([*configured, *(services.workers.models() if live is None else live)]))


def choose_model(services: Services, requested: str | None, *, exact: bool = True, field: str = "model") -> str:
    """The model a submission runs on (see the module's docstring); refuses before anything is read."""
    default = served_model(services.settings.model)
    live = services.workers.models()
    known = known_models(services, live)
    model = default
    if requested is not None and requested.strip():
        name = requested.strip()
        model = name if name in known else served_model(name)
        if model not in known:
            if exact:
                raise InvalidInput(f"{name!r} is not served here; served models: {', '.join(known)}", field=field)
            model = default
    refuse = services.settings.no_worker == "refuse"
    if refuse and model not in live and not services.dispatcher.routes(model):
        raise ApiError(
            f"no worker serves model {model} at the moment; retry later (GET /v1/models lists the live ones)",
            status=503,
            field=field,
            code="no_worker",
            headers={"Retry-After": str(NO_WORKER_RETRY)},
        )
    return model


def capacity_limit(services: Services, caller: Caller) -> int | None:
    """The caller's limit on queued + running tasks (None: anonymous callers are unlimited)."""
    if caller.key is None:
        return None
    return caller.key.max_concurrent_tasks or services.settings.max_concurrent_tasks


def too_many_tasks(active: int, limit: int) -> ApiError:
    return ApiError(
        f"{active} tasks queued or running, at most {limit} at once for this key; retry later",
        status=429,
        field="authorization",
        code="too_many_tasks",
        headers={"Retry-After": "2"},
    )


def check_capacity(services: Services, caller: Caller) -> None:
    """Per-key concurrent tasks: a 429 with Retry-After before any work is done.

    A quick look only, to spare fetching for a key that is already full; the rule itself is
    enforced where the task is inserted (``TaskStore.add(max_active=...)``), atomically.
    """
    limit = capacity_limit(services, caller)
    if limit is None:
        return
    active = services.tasks.active_count(caller.key_id)
    if active >= limit:
        raise too_many_tasks(active, limit)


def _read_inputs(services: Services, caller: Caller, images: list[Source], mask: Source | None) -> Inputs:
    reader = services.inputs

    def one(src: Source, is_mask: bool = False) -> ImageInput:
        if isinstance(src.value, bytes):
            return reader.from_upload(src.value, src.field, mask=is_mask)
        return reader.from_string(src.value, src.field, caller.scope, mask=is_mask)

    return Inputs([one(s) for s in images], one(mask, is_mask=True) if mask is not None else None)


def _check_and_read(
    services: Services,
    caller: Caller,
    images: list[Source],
    mask: Source | None,
    params: EditParams,
    webhook_url: str | None,
    webhook_field: str,
) -> Inputs:
    """The webhook's host, the LoRAs (headers only), then the images: cheapest refusals first."""
    if webhook_url is not None:
        validate_webhook_url(webhook_url, services.settings, webhook_field)
    services.loras.check(params)
    return _read_inputs(services, caller, images, mask)


def _outbound(images: list[Source], mask: Source | None, params: EditParams, webhook_url: str | None) -> bool:
    """Whether the submission makes the server call out (URLs, LoRAs from hub or URL, a webhook host)."""
    sources = [*images, *([mask] if mask else [])]
    urls = any(isinstance(s.value, str) and s.value.lstrip().startswith(("http://", "https://")) for s in sources)
    return urls or bool(params.loras) or webhook_url is not None


def _persist(
    services: Services,
    caller: Caller,
    interface: Interface,
    params: EditParams,
    inputs: Inputs,
    options: TaskOptions,
    webhook_url: str | None,
    base_url: str,
    model: str,
) -> TaskRecord:
    task_id = uuid.uuid4().hex
    storage = services.storage
    stored = [
        TaskInput(
            path=storage.write_input(task_id, f"{i}.{img.ext}", img.data),
            source=img.source,
            width=img.size[0],
            height=img.size[1],
            parent_id=img.parent_id,
        )
        for i, img in enumerate(inputs.images)
    ]
    mask = inputs.mask
    mask_path = storage.write_input(task_id, f"mask.{mask.ext}", mask.data) if mask else None
    images = inputs.images
    parent = images[-1].parent_id or next((i.parent_id for i in images if i.parent_id), None)
    task = NewTask(
        id=task_id,
        interface=interface,
        model=model,
        params=params,
        inputs=stored,
        base_url=base_url,
        key_id=caller.key_id,
        mask=mask_path,
        parent_id=parent,
        options=options,
        webhook_url=webhook_url,
    )
    try:
        return services.tasks.add(task, max_active=capacity_limit(services, caller))
    except AtCapacity as e:  # lost the race to parallel submissions of the same key: nothing is kept
        storage.delete_task_files(task_id)
        raise too_many_tasks(e.active, e.limit) from None


async def submit(
    services: Services,
    caller: Caller,
    *,
    interface: Interface,
    params: EditParams,
    images: list[Source],
    options: TaskOptions,
    base_url: str,
    mask: Source | None = None,
    webhook_url: str | None = None,
    webhook_field: str = "webhook_url",
    model: str | None = None,
    exact_model: bool = True,
) -> TaskRecord:
    """Validate everything, persist the task, hand it to a worker; the task exists when this returns.

    ``model``: the client's choice (``choose_model``; ``exact_model=False`` for a dialect's own names)."""
    check_capacity(services, caller)
    try:
        model = await run_in_threadpool(choose_model, services, model, exact=exact_model)
        max_images = model_max_images(services, model)
        check_image_count(len(images), max_images=max_images, model=model)  # before fetching anything
        args = (services, caller, images, mask, params, webhook_url, webhook_field)
        if _outbound(images, mask, params, webhook_url):  # on threads of its own, a few per key
            inputs = await services.fetches.run(caller.key_id, _check_and_read, *args)
        else:
            inputs = await run_in_threadpool(_check_and_read, *args)
        check_request(
            params,
            [i.size for i in inputs.images],
            max_images=max_images,
            model=model,
            mask=inputs.mask.mask if inputs.mask else None,
            mask_must_match=True,
            mask_field=mask.field if mask else "mask",
        )
        task = await run_in_threadpool(
            _persist, services, caller, interface, params, inputs, options, webhook_url, base_url, model
        )
    except InvalidInput:
        services.metrics.rejected.labels("invalid_input").inc()
        raise
    services.dispatcher.submit(task.id, model)
    services.metrics.submitted.labels(interface.value).inc()
    return task


async def wait(services: Services, task_id: str, timeout: float) -> TaskRecord:
    """Poll the store until the task is terminal or ``timeout`` passes; returns its latest state."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        task = await run_in_threadpool(services.tasks.get, task_id)
        assert task is not None
        if task.status in TERMINAL or time.monotonic() >= deadline:
            return task
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.25)


async def get_task(services: Services, caller: Caller, task_id: str, field: str = "id") -> TaskRecord:
    task = await run_in_threadpool(services.tasks.get, task_id, caller.scope)
    if task is None:
        raise ApiError(f"task {task_id} not found", status=404, field=field, code="not_found")
    return task


async def read_upload(source: UploadFile | Request, limit: int, field: str) -> bytes:
    """An uploaded file's (or a raw request body's) bytes, refused as soon as they pass ``limit``."""
    if isinstance(source, Request):
        data = bytearray()
        async for chunk in source.stream():
            data += chunk
            if len(data) > limit:
                break
    else:
        data = bytearray(await source.read(limit + 1))
    if len(data) > limit:
        raise InvalidInput(f"file is more than {limit} bytes, at most {limit} allowed", field=field)
    return bytes(data)
