"""``GET /v1/models`` and ``GET /v1/workers``: which models may be asked for, and who serves them.

Read from the worker registry (``service.workers``), so an API process in Celery mode sees every
``qedit worker`` on every host. ``/v1/models`` has OpenAI's list shape (``{"object": "list", "data":
[{"id", "object": "model", "owned_by"}]}``, what its SDK's ``models.list()`` reads) plus the live
worker counts and the model's image limit.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from qedit.api.deps import CallerDep, ServicesDep
from qedit.api.submit import known_models, model_max_images
from qedit.interfaces.common import iso
from qedit.service.wiring import Services
from qedit.service.workers import ModelWorkers, served_model

router = APIRouter(tags=["models"])


class ModelCard(BaseModel):
    id: str = Field(description="what a request's `model` names (native `model`; see docs/service.md#models)")
    object: Literal["model"] = "model"
    created: int = Field(description="when its oldest live worker started (epoch s); 0 without one")
    owned_by: str = "qedit"
    default: bool = Field(description="the model a request that names none runs on")
    workers: int = Field(description="live workers serving it; 0: requests wait or are refused (QEDIT_NO_WORKER)")
    busy: int
    idle: int
    loading: int
    max_images: int = Field(description="images one edit may take")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class WorkerCard(BaseModel):
    id: str = Field(description="kind@host:pid:n, as tasks record their worker")
    kind: str = Field(description="embedded (a thread of the API) or celery (a qedit worker process)")
    host: str
    pid: int
    model: str
    device: str | None
    options: dict[str, Any] = Field(description="the engine options and batching it runs with")
    state: Literal["loading", "idle", "busy"]
    task_id: str | None = Field(description="the task it runs (the first of a batch) while busy")
    tasks_done: int = Field(description="tasks it ended (completed, failed or cancelled) since it started")
    started_at: str | None
    last_heartbeat: str | None


class WorkerList(BaseModel):
    object: Literal["list"] = "list"
    data: list[WorkerCard]


def _models(services: Services) -> dict[str, Any]:
    live = services.workers.live()
    counts = services.workers.models()
    default = served_model(services.settings.model)
    data = []
    for model in known_models(services, counts):
        c = counts.get(model, ModelWorkers())
        started = [w.started_at for w in live if w.model == model]
        data.append(
            {
                "id": model,
                "object": "model",
                "created": int(min(started)) if started else 0,
                "owned_by": "qedit",
                "default": model == default,
                "workers": c.workers,
                "busy": c.busy,
                "idle": c.idle,
                "loading": c.loading,
                "max_images": model_max_images(services, model),
            }
        )
    return {"object": "list", "data": data}


def _workers(services: Services) -> dict[str, Any]:
    data = [
        {
            "id": w.id,
            "kind": w.kind,
            "host": w.host,
            "pid": w.pid,
            "model": w.model,
            "device": w.device,
            "options": w.options,
            "state": w.state.value,
            "task_id": w.task_id,
            "tasks_done": w.tasks_done,
            "started_at": iso(w.started_at),
            "last_heartbeat": iso(w.last_heartbeat),
        }
        for w in services.workers.live()
    ]
    return {"object": "list", "data": data}


@router.get("/v1/models", response_model=ModelList, summary="Models requests may name, with their live workers")
async def list_models(services: ServicesDep, caller: CallerDep) -> dict:
    """The server's default model, `QEDIT_MODELS`, and every model a live worker serves."""
    return await run_in_threadpool(_models, services)


@router.get("/v1/workers", response_model=WorkerList, summary="Live workers: model, device, state, tasks done")
async def list_workers(services: ServicesDep, caller: CallerDep) -> dict:
    """Workers heard from within `QEDIT_WORKER_TTL` seconds, embedded threads and `qedit worker` processes alike."""
    return await run_in_threadpool(_workers, services)
