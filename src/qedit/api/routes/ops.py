"""Liveness, readiness (the model is loaded) and Prometheus metrics.

``/readyz`` also says how the engine runs (``engine``: model, ``EngineOptions``, batching), read
from this process's settings, so an operator can check what a deployment was started with; in
Celery mode those are the API's settings, and each ``qedit worker`` reports its own in its metrics
and in ``GET /v1/workers``. ``models`` counts the live workers of each model (from the worker
registry, so every host's), the server's default model included even when it has none.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from qedit import __version__
from qedit.api.deps import ServicesDep
from qedit.api.submit import known_models
from qedit.config import Settings

router = APIRouter(tags=["ops"])


@router.get("/healthz", summary="The process answers")
async def healthz() -> dict:
    return {"status": "ok", "version": __version__}


@router.get("/readyz", summary="Ready to run edits (model loaded); 503 until then")
async def readyz(services: ServicesDep) -> JSONResponse:
    d = services.dispatcher
    error = getattr(d, "load_error", None)
    counts = await run_in_threadpool(services.workers.models)
    body = {
        "status": "ready" if d.ready else ("error" if error else "loading"),
        "model": services.settings.model,
        "dispatch": services.settings.dispatch,
        "engine": engine_description(services.settings),
        "models": {m: counts[m].workers if m in counts else 0 for m in known_models(services, counts)},
    }
    if error:
        body["error"] = error
    return JSONResponse(body, status_code=200 if d.ready else 503)


def engine_description(settings: Settings) -> dict[str, Any]:
    return {
        "model": settings.model,
        "options": settings.engine_options().describe(),
        "batch_size": settings.batch_size,
        "batch_wait": settings.batch_wait,
    }


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(services: ServicesDep) -> Response:
    data = await run_in_threadpool(generate_latest, services.metrics.registry)
    return Response(data, media_type=CONTENT_TYPE_LATEST)
