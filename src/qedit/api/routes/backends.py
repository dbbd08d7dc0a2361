"""``GET /v1/backends``: the operator's view of where tasks go (docs/service.md#backends).

Names, kinds, models, prices, caps, what is in flight and each backend's health; never a URL or a
key. Without a backends file the one backend is this server's own workers.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from qedit.api.deps import CallerDep, ServicesDep
from qedit.service.wiring import Services

router = APIRouter(tags=["ops"])


class BackendInfo(BaseModel):
    name: str
    kind: str = Field(description="local | qedit | wavespeed")
    models: list[str] = Field(description="model names it serves ('*' = any)")
    price_per_image: float
    priority: int = Field(description="tie-break between equal prices: lower first")
    max_concurrency: int
    in_flight: int
    state: Literal["up", "down", "half-open"]
    last_error: str | None
    next_check_in: float | None = Field(description="seconds until its next health check or probe")
    served: int = Field(description="tasks it completed since this server started")
    failed: int = Field(description="attempts it failed since this server started (the task moved on)")


class BackendList(BaseModel):
    object: Literal["list"] = "list"
    data: list[BackendInfo] = Field(description="in the order tasks try them: price, then priority")


def _view(services: Services) -> list[dict]:
    view = getattr(services.dispatcher, "backends_view", None)
    if view is not None:
        return view()
    s = services.settings
    workers = s.workers if s.dispatch == "embedded" else 0
    ready = services.dispatcher.ready
    return [
        {
            "name": "local",
            "kind": "local",
            "models": [s.model],
            "price_per_image": s.price_per_image,
            "priority": 0,
            "max_concurrency": workers,
            "in_flight": services.tasks.count(status="processing"),
            "state": "up" if ready else "down",
            "last_error": getattr(services.dispatcher, "load_error", None),
            "next_check_in": None,
            "served": 0,
            "failed": 0,
        }
    ]


@router.get("/v1/backends", response_model=BackendList, summary="Backends, their prices and health")
async def list_backends(services: ServicesDep, caller: CallerDep) -> dict:
    return {"object": "list", "data": await run_in_threadpool(_view, services)}
