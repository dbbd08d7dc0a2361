"""``create_app(settings)``: the FastAPI app with its services; nothing happens at import.

The services (store, workers or Celery dispatch, sweeper) start with the app's lifespan and stop
with it, so ``uvicorn`` (or a test) owns their whole life. The API never imports torch: the engine
is loaded by the worker threads (embedded) or by ``qedit worker`` processes (Celery).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from qedit import __version__
from qedit.api import errors, openapi
from qedit.api.body_limit import BodyLimit
from qedit.api.deps import rate_limiter
from qedit.api.routes import aggregator, backends, files, models, native, openai, ops, playground, wavespeed
from qedit.config import Settings
from qedit.interfaces import webhook_payload
from qedit.models.protocol import EditEngine
from qedit.service.wiring import Services, build_services

log = logging.getLogger("qedit.api")

DESCRIPTION = """\
Asynchronous image edits with Qwen-Image-Edit over the interfaces clients already speak:
WaveSpeed v3 (`/api/v3/...`), the aggregator task API (`/v1/images/generations`), OpenAI Images
(`/v1/images/edits`) and the native API (`/v1/edits`). Authenticate with `Authorization: Bearer KEY`
(or `X-API-Key: KEY`; a server started with `--no-auth` takes no key). Errors are 4xx JSON naming
the field, never 422.

LoRAs: `loras: [{path, scale}]` (up to 3; scale -4 to 4) on the native, aggregator and OpenAI
(a JSON string form field) interfaces and WaveSpeed's `edit-lora`, `edit-plus-lora` and
`edit-2511-lora`; `fast: 4 | 8` runs the Lightning few-step recipe. A LoRA must be a file in the
server's LoRA folder, a repo of an allowed hub organisation or a URL on an allowed host; it is checked
(a safetensors LoRA of the served model's shapes) before the task is queued, and every output records
each LoRA's name, sha256 and scale in its metadata.
"""


def create_app(
    settings: Settings, *, engine_factory: Callable[[Settings], EditEngine] | None = None, start_services: bool = True
) -> FastAPI:
    """Build the app; its services start when the app starts (``start_services=False``: API only, for docs)."""
    services: Services = build_services(settings, webhook_payload, engine_factory=engine_factory)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if start_services:
            services.start()
        log.info(
            "qedit %s serving model %s (%s dispatch, auth %s)",
            __version__,
            settings.model,
            settings.dispatch,
            settings.auth,
        )
        try:
            yield
        finally:
            services.stop()

    # /docs and /redoc from assets shipped in fastapi-offline's package: they render on an offline machine
    app = FastAPIOffline(title="qedit", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.services = services
    app.state.rate_limiter = rate_limiter(settings)
    errors.install(app)
    app.add_middleware(BodyLimit, services=services)  # key and size checked before a body is read
    for module in (native, wavespeed, openai, aggregator, models, files, ops, backends, playground):
        app.include_router(module.router)
    openapi.install(app)
    app.mount("/playground/static", StaticFiles(directory=playground.PAGE), name="playground")
    return app
