"""Typed dependencies: the app's services, the calling key (auth + rate limit), the base URL.

A key sees only its own tasks: every lookup goes through ``Caller.scope``. In local mode
(``auth = none``, only when started so) every caller is anonymous and unlimited.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import deque
from typing import Annotated

from fastapi import Depends, Request

from qedit.api.errors import ApiError
from qedit.service.services import Services
from qedit.service.store import ApiKey


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


@dataclasses.dataclass(frozen=True)
class Caller:
    key: ApiKey | None

    @property
    def key_id(self) -> str | None:
        return self.key.id if self.key else None

    @property
    def scope(self) -> str | None:
        """The ``key_id`` filter for store lookups (anonymous callers see anonymous tasks)."""
        return self.key_id


class RateLimiter:
    """Requests per minute per key, a sliding window in this process (one per API server)."""

    def __init__(self) -> None:
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def check(self, key_id: str, limit: int, now: float | None = None) -> float | None:
        """None if allowed (and counted), else seconds until a slot frees."""
        now = time.monotonic() if now is None else now
        with self._lock:
            hits = self._hits.setdefault(key_id, deque())
            while hits and hits[0] <= now - 60.0:
                hits.popleft()
            if len(hits) >= limit:
                return 60.0 - (now - hits[0])
            hits.append(now)
            return None


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


def get_caller(request: Request, services: ServicesDep) -> Caller:
    settings = services.settings
    if settings.auth == "none":
        return Caller(key=None)
    token = _bearer(request)
    if not token:
        raise ApiError("missing API key: send Authorization: Bearer <key>", status=401, field="authorization",
                       code="missing_api_key", headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    key = services.store.key_by_secret(token)
    if key is None:
        raise ApiError(f"unknown or revoked API key {token[:7]}...", status=401, field="authorization",
                       code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
    limit = key.rate_limit_rpm or settings.rate_limit_rpm
    wait = request.app.state.rate_limiter.check(key.id, limit)
    if wait is not None:
        retry = max(1, math.ceil(wait))
        raise ApiError(f"rate limit of {limit} requests per minute exceeded; retry in {retry} s", status=429,
                       field="authorization", code="rate_limited", headers={"Retry-After": str(retry)})  # fmt: skip
    return Caller(key=key)


CallerDep = Annotated[Caller, Depends(get_caller)]


def base_url(request: Request, services: ServicesDep) -> str:
    """Where clients reach us: the configured public URL, else the URL they called."""
    return (services.settings.public_url or str(request.base_url)).rstrip("/")


BaseUrlDep = Annotated[str, Depends(base_url)]
