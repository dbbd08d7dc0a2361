"""Typed dependencies: the app's services, the calling key (auth + rate limit), the base URL.

A key sees only its own tasks: every lookup goes through ``Caller.scope``. In local mode
(``auth = none``, only when started so) every caller is anonymous and unlimited.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Annotated

from fastapi import Depends, Request

from qedit.api.errors import ApiError
from qedit.config import Settings
from qedit.service.keys import ApiKey
from qedit.service.wiring import Services


def get_services(request: Request) -> Services:
    return request.app.state.services


logger = logging.getLogger(__name__)

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


class SharedRateLimiter:
    """The same sliding window kept in Redis, so that every API process counts against one limit.

    One Lua script per check (atomic; Redis's clock, so hosts need not agree on the time). If Redis
    cannot be reached the request is let through and a warning logged: an outage of the limiter
    should not become an outage of the API.
    """

    SCRIPT = """
    local t = redis.call('TIME')
    local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60)
    if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
      local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
      return tostring(60 - (now - tonumber(oldest[2])))
    end
    redis.call('ZADD', KEYS[1], now, ARGV[2])
    redis.call('EXPIRE', KEYS[1], 61)
    return false
    """

    def __init__(self, url: str, prefix: str = "qedit:rpm:") -> None:
        import redis

        self._client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._script = self._client.register_script(self.SCRIPT)
        self._prefix = prefix

    def check(self, key_id: str, limit: int, now: float | None = None) -> float | None:
        import redis

        try:
            wait = self._script(keys=[self._prefix + key_id], args=[limit, uuid.uuid4().hex])
        except redis.RedisError as e:
            logger.warning("rate limiter unreachable (%s): request let through", e)
            return None
        return None if wait is None else float(wait)


def rate_limiter(settings: Settings) -> RateLimiter | SharedRateLimiter:
    return SharedRateLimiter(settings.rate_limit_url) if settings.rate_limit_url else RateLimiter()


def bearer(headers: Mapping[str, str]) -> str | None:
    """The key a request carries: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    header = headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or None


def authenticate(services: Services, token: str | None) -> ApiKey:
    """The live key with this secret, or the 401 every route answers (one rule, also used by
    ``body_limit`` to refuse before a request's body is read)."""
    if not token:
        raise ApiError(
            "missing API key: send Authorization: Bearer <key>",
            status=401,
            field="authorization",
            code="missing_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    key = services.keys.by_secret(token)
    if key is None:
        raise ApiError(
            f"unknown or revoked API key {token[:7]}...",
            status=401,
            field="authorization",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return key


AUTHENTICATED = "qedit_key"  # the request-scope state entry where body_limit leaves the key it checked


def get_caller(request: Request, services: ServicesDep) -> Caller:
    settings = services.settings
    if settings.auth == "none":
        return Caller(key=None)
    key = request.scope.get("state", {}).get(AUTHENTICATED)
    if key is None:
        key = authenticate(services, bearer(request.headers))
    limit = key.rate_limit_rpm or settings.rate_limit_rpm
    wait = request.app.state.rate_limiter.check(key.id, limit)
    if wait is not None:
        retry = max(1, math.ceil(wait))
        raise ApiError(
            f"rate limit of {limit} requests per minute exceeded; retry in {retry} s",
            status=429,
            field="authorization",
            code="rate_limited",
            headers={"Retry-After": str(retry)},
        )
    return Caller(key=key)


CallerDep = Annotated[Caller, Depends(get_caller)]


def base_url(request: Request, services: ServicesDep) -> str:
    """Where clients reach us: the configured public URL, else the URL they called."""
    return (services.settings.public_url or str(request.base_url)).rstrip("/")


BaseUrlDep = Annotated[str, Depends(base_url)]
