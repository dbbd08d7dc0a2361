"""Every refusal is one JSON object naming the field, the limit and the value.

Two shapes, chosen by path: WaveSpeed's envelope (``{code, message, data}``) under ``/api/v3``, and
OpenAI's ``{"error": {message, type, param, code}}`` everywhere else (the ``openai`` SDK reads it, and
it is a fine shape for our own API too). Pydantic's errors become the same single line as
``qedit.params.validate`` makes.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from qedit.errors import QeditError, quote

WAVESPEED_PREFIX = "/api/v3"


class ApiError(QeditError):
    """An HTTP-level refusal (auth, limits, not found) with optional response headers."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        field: str | None = None,
        code: str = "error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, field=field, status=status)
        self.code = code
        self.headers = headers or {}


_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    410: "gone_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    504: "timeout_error",
}


def error_response(
    request: Request, status: int, message: str, field: str | None, code: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    text = f"{field}: {message}" if field else message
    body: dict[str, Any]
    if request.url.path.startswith(WAVESPEED_PREFIX):
        body = {"code": status, "message": text, "data": None, "field": field}
    else:
        body = {"error": {"message": text, "type": _TYPES.get(status, "api_error"), "param": field, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_message(err: dict[str, Any]) -> tuple[str | None, str]:
    loc = [str(p) for p in err.get("loc", ())]
    if loc and loc[0] in ("body", "query", "path", "form", "header", "cookie"):  # where, not which field
        loc = loc[1:]  # (only the first: a field may be called "path", as a LoRA's is)
    field = ".".join(loc) or None
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    value = err.get("input")
    if err.get("type") == "missing":
        return field, "is required"
    if err.get("type") == "extra_forbidden":
        return field, "is not a known field"
    if err.get("type") == "string_pattern_mismatch" and loc and loc[-1] == "size":  # the schema's pattern, in words
        return field, f"expected WxH (e.g. 1024x768), W*H or auto, got {quote(value)}"
    if "got" in msg or value is None or isinstance(value, dict):
        return field, msg
    if isinstance(value, list):
        msg = f"{msg} (got {len(value)} items)"
    elif isinstance(value, str) and len(value) > 100:
        msg = f"{msg} (got {len(value)} characters)"
    else:
        msg = f"{msg} (got {value!r})"
    return field, msg


def install(app: FastAPI) -> None:
    @app.exception_handler(QeditError)
    async def _qedit_error(request: Request, exc: QeditError) -> JSONResponse:
        code = getattr(exc, "code", "invalid_input")
        return error_response(request, exc.status, exc.message, exc.field, code, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        field, msg = _validation_message(errors[0]) if errors else (None, "invalid request")
        return error_response(request, 400, msg, field, "invalid_input")

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(
            request, exc.status_code, str(exc.detail), None, "http_error", dict(exc.headers) if exc.headers else None
        )
