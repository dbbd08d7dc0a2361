"""Liveness, readiness (the model is loaded) and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from qedit import __version__
from qedit.api.deps import ServicesDep

router = APIRouter(tags=["ops"])


@router.get("/healthz", summary="The process answers")
async def healthz() -> dict:
    return {"status": "ok", "version": __version__}


@router.get("/readyz", summary="Ready to run edits (model loaded); 503 until then")
async def readyz(services: ServicesDep) -> JSONResponse:
    d = services.dispatcher
    error = getattr(d, "load_error", None)
    body = {
        "status": "ready" if d.ready else ("error" if error else "loading"),
        "model": services.settings.model,
        "dispatch": services.settings.dispatch,
    }
    if error:
        body["error"] = error
    return JSONResponse(body, status_code=200 if d.ready else 503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(services: ServicesDep) -> Response:
    data = await run_in_threadpool(generate_latest, services.metrics.registry)
    return Response(data, media_type=CONTENT_TYPE_LATEST)
