"""Request bodies: the key checked before a byte is read, the size capped before anything is parsed.

FastAPI reads and parses a body before any dependency runs: a 200 MB JSON body with no key was
parsed (700 MB resident) only to be answered 401. This ASGI middleware sits in front of the app:

- when keys are required, a request with a body must carry a live key; otherwise the 401 every
  route gives is sent at once and the body is never read (the signed upload URL is the exception:
  its signature is its permission, checked by its route);
- a declared ``Content-Length`` over ``Settings.body_limit`` is a 413 at once; a chunked body is
  counted as it streams and refused (413) the moment it passes the cap, never buffered beyond it.
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qedit.api.deps import AUTHENTICATED, authenticate, bearer
from qedit.api.errors import ApiError, error_response
from qedit.service.wiring import Services

WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
SIGNED_UPLOADS = "/api/v3/media/uploads/"  # PUT to a signed URL: no key, the signature is checked


class BodyLimit:
    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services
        self.limit = services.settings.body_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in WITH_BODY:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        try:
            await self._authenticate(scope, headers)
            self._check_declared(headers)
        except ApiError as e:
            response = error_response(Request(scope), e.status, e.message, e.field, e.code, e.headers)
            await response(scope, receive, send)
            return
        await self.app(scope, self._counting(receive), send)

    async def _authenticate(self, scope: Scope, headers: Headers) -> None:
        if self.services.settings.auth == "none":
            return
        if scope["method"] == "PUT" and scope["path"].startswith(SIGNED_UPLOADS):
            return
        key = await run_in_threadpool(authenticate, self.services, bearer(headers))
        scope.setdefault("state", {})[AUTHENTICATED] = key  # get_caller uses it: one lookup per request

    def _check_declared(self, headers: Headers) -> None:
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            raise ApiError(self._message(f"is {int(declared)} bytes"), status=413, code="body_too_large")

    def _message(self, what: str) -> str:
        return f"request body {what}, at most {self.limit} allowed (QEDIT_MAX_BODY_BYTES)"

    def _counting(self, receive: Receive) -> Receive:
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message: dict[str, Any] = dict(await receive())
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    # an HTTPException passes FastAPI's body parsing unchanged and becomes our JSON 413
                    raise HTTPException(413, self._message(f"is more than {self.limit} bytes"))
            return message  # type: ignore[return-value]

        return counted
