"""The OpenAPI document, made to say what the server really does.

FastAPI's generated document promises a 422 that qedit never sends (validation errors are 400s in
the service's own shape) and knows nothing of the errors routes raise, of the key, or of the event
stream. Rather than repeat ``responses=`` on every route, the document is post-processed once from
what each route is: its path (WaveSpeed's envelope under ``/api/v3``, OpenAI's shape elsewhere),
whether it needs a key (it depends on ``get_caller``), whether it takes a body, path parameters,
or creates a task. A test holds the document to the server with schemathesis.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from starlette.routing import BaseRoute

from qedit.api.deps import get_caller
from qedit.api.errors import WAVESPEED_PREFIX


class ErrorDetail(BaseModel):
    message: str = Field(description="one line: the field, the limit and the value")
    type: str = Field(description="e.g. invalid_request_error, authentication_error, rate_limit_error")
    param: str | None = Field(description="the field at fault, when there is one")
    code: str = Field(description="e.g. invalid_input, missing_api_key, too_many_tasks, body_too_large")


class Error(BaseModel):
    """Every refusal outside /api/v3 (OpenAI's error shape, which its SDK reads)."""

    error: ErrorDetail


class WaveSpeedError(BaseModel):
    """Every refusal under /api/v3 (WaveSpeed's envelope)."""

    code: int = Field(description="the HTTP status")
    message: str
    data: None = None
    field: str | None = None


WHY = {
    400: "Invalid request: the message names the field, the limit and the value",
    401: "Missing, unknown or revoked API key",
    403: "The URL's signature does not match",
    404: "Not found (or another key's)",
    409: "A task:// input whose task has not completed",
    410: "Expired: the result files (and their URLs) are gone",
    413: "Request body over the limit (QEDIT_MAX_BODY_BYTES)",
    429: "Rate limit, concurrent tasks or concurrent fetches of this key exceeded; see Retry-After",
    503: "Not ready: the model is loading or failed to load; a submission: no live worker serves the model "
    "(QEDIT_NO_WORKER=refuse), see Retry-After",
    504: "A synchronous request waited longer than its limit",
}
SUBMITS = {
    ("POST", "/v1/edits"),
    ("POST", "/v1/edits/upload"),
    ("POST", "/v1/images/edits"),
    ("POST", "/v1/images/generations"),
}
SYNC_TIMEOUTS = {("POST", "/v1/images/edits")}  # the only route that answers 504 when a wait runs out
READY = {("GET", "/readyz")}
SIGNED = {("GET", "/v1/files/{task_id}/{name}"), ("PUT", "/api/v3/media/uploads/{upload_id}/{name}")}
BODY_TYPES = {
    ("GET", "/v1/edits/{task_id}/events"): (
        "text/event-stream",
        "Server-sent events: `event: queued|started|step|completed|failed|cancelled`, `data:` the task as JSON "
        "(`step` carries progress n/N); the stream ends at a final state.",
    ),
    ("GET", "/metrics"): ("text/plain", "Prometheus text exposition format"),
    ("GET", "/v1/files/{task_id}/{name}"): ("image/*", "The file (PNG, JPEG or WebP as the task asked)"),
}


def api_routes(routes: Sequence[BaseRoute]) -> Iterator[APIRoute]:
    """Every API route, also those of included routers (FastAPI >= 0.165 keeps them nested; qedit's
    routers carry their full paths, so no include prefix is lost)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):
            yield from api_routes(route.original_router.routes)


def _needs_key(dependant: Dependant) -> bool:
    return any(d.call is get_caller or _needs_key(d) for d in dependant.dependencies)


def _codes(route: APIRoute, method: str, submits: bool) -> set[int]:
    key = (method, route.path)
    codes = {400} if (route.dependant.query_params or route.dependant.path_params or route.body_field) else set()
    if _needs_key(route.dependant):
        codes |= {401, 429}
    if route.body_field is not None or method in ("POST", "PUT", "PATCH"):
        codes |= {400, 413}
    if route.dependant.path_params:
        codes.add(404)
    if key in SUBMITS or submits:
        codes |= {404, 409, 410, 429, 503}
    if key in SIGNED:
        codes |= {403, 410}
    if key in SYNC_TIMEOUTS:
        codes.add(504)
    if key in READY:
        codes.add(503)
    return codes


def _is_submit(route: APIRoute, method: str) -> bool:
    """Routes that create a task (every WaveSpeed model route does)."""
    return method == "POST" and route.path.startswith(f"{WAVESPEED_PREFIX}/") and "/media/" not in route.path


def build(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes, tags=app.openapi_tags
    )
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for model in (Error, ErrorDetail, WaveSpeedError):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schema.pop("$defs", None)
        schemas[model.__name__] = schema
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    doc["components"]["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer KEY"},
        "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
    }
    for route in api_routes(app.routes):
        if not route.include_in_schema:
            continue
        for method in route.methods:
            op = doc["paths"].get(route.path, {}).get(method.lower())
            if op is None:
                continue
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            ref = "WaveSpeedError" if route.path.startswith(WAVESPEED_PREFIX) else "Error"
            for code in sorted(_codes(route, method, _is_submit(route, method))):
                responses.setdefault(
                    str(code),
                    {
                        "description": WHY[code],
                        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
                    },
                )
            if _needs_key(route.dependant):
                op["security"] = [{"bearer": []}, {"apiKey": []}]
            typed = BODY_TYPES.get((method, route.path))
            if typed:
                media, description = typed
                ok = next(c for c in ("200", "201", "202") if c in responses)
                responses[ok] = {"description": description, "content": {media: {"schema": {"type": "string"}}}}
    return doc


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
