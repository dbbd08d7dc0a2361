"""Webhook delivery: signed, retried with backoff, every attempt recorded in the outbox.

Whoever finds a delivery pending (the worker right away, else the sweeper) takes it through the
outbox's conditional move to ``sending`` and delivers it. The webhook id is the same for every
retry of one event, so receivers can de-duplicate. What is sent is the interface's business: the
sender is given a ``WebhookBody`` function (``qedit.interfaces.webhook_payload``) that answers the
body and the signature scheme: WaveSpeed's (``v3,`` hex) or Standard Webhooks' (``v1,`` base64),
both over ``{id}.{timestamp}.{body}``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import httpx

from qedit.config import Settings
from qedit.errors import InvalidInput
from qedit.netfetch import BlockedAddress, UrlPolicy, check_resolved, check_url, deadline, guarded_client
from qedit.service.outbox import WebhookAttempt, WebhookOutbox
from qedit.service.records import TaskRecord, WebhookState
from qedit.service.signing import standard_signature, wavespeed_signature, webhook_secret
from qedit.service.storage import Storage
from qedit.service.tasks import TaskStore

log = logging.getLogger("qedit.webhooks")


def validate_webhook_url(url: str, settings: Settings, field: str) -> str:
    """At submit time: https (http only in dev), <= 2048 chars, and a host that resolves now to
    public addresses only (blocking: call it off the event loop)."""
    policy = UrlPolicy(allow_private=settings.allow_private_urls, allow_http=settings.allow_http_urls)
    check_resolved(check_url(url, policy, field), policy, field)
    return url


class WebhookPayload(NamedTuple):
    body: dict[str, Any]
    scheme: Literal["standard", "wavespeed"]  # how it is signed


WebhookBody = Callable[[TaskRecord, Storage], WebhookPayload]
"""A finished task -> what its webhook carries, as its interface defines it."""


class WebhookSender:
    def __init__(
        self,
        settings: Settings,
        tasks: TaskStore,
        outbox: WebhookOutbox,
        storage: Storage,
        secret: bytes,
        body: WebhookBody,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.tasks = tasks
        self.outbox = outbox
        self.body = body
        self.storage = storage
        self.secret = secret
        self.policy = UrlPolicy(allow_private=settings.allow_private_urls, allow_http=settings.allow_http_urls)
        self.sleep = sleep

    def max_duration(self) -> float:
        """The longest one delivery can take (all attempts and waits): older 'sending' means it died."""
        s = self.settings
        waits = sum(s.webhook_backoff * 2**i for i in range(s.webhook_retries))
        return (s.webhook_retries + 1) * (s.webhook_timeout + 1) + waits

    def deliver(self, task_id: str) -> WebhookState | None:
        """Deliver the task's pending event; returns the final state, or None if not ours to send."""
        if not self.outbox.move(task_id, WebhookState.SENDING, expect=WebhookState.PENDING):
            return None
        task = self.tasks.get(task_id)
        if task is None or not task.webhook_url:
            self.outbox.move(task_id, WebhookState.NONE)  # nothing to send: not left "sending"
            return None
        msg_id = f"msg_{task.id}_{task.status}"
        try:
            payload = self.body(task, self.storage)
        except Exception as e:  # e.g. an output file gone from disk: recorded, not retried forever
            log.exception("webhook %s: cannot build the body", msg_id)
            self.outbox.record_attempt(
                task.id,
                WebhookAttempt(
                    webhook_id=msg_id,
                    event=task.status.value,
                    attempt=1,
                    at=time.time(),
                    url=task.webhook_url,
                    status_code=None,
                    error=f"cannot build the body: {type(e).__name__}: {e}",
                    duration_ms=0.0,
                ),
            )
            self.outbox.move(task.id, WebhookState.FAILED)
            return WebhookState.FAILED
        body = json.dumps(payload.body, separators=(",", ":")).encode()
        whsec = webhook_secret(self.secret, task.key_id)
        sign = wavespeed_signature if payload.scheme == "wavespeed" else standard_signature
        s = self.settings
        with guarded_client(self.policy, s.webhook_timeout) as client:
            for attempt in range(1, s.webhook_retries + 2):
                ts = int(time.time())
                headers = {
                    "content-type": "application/json",
                    "webhook-id": msg_id,
                    "webhook-timestamp": str(ts),
                    "webhook-signature": sign(whsec, msg_id, ts, body),
                }
                status_code, error = None, None
                t0 = time.perf_counter()
                try:
                    check_url(task.webhook_url, self.policy, "webhook")
                    with deadline(s.webhook_timeout):  # the whole attempt, however slowly the peer answers
                        r = client.post(task.webhook_url, content=body, headers=headers)
                    status_code = r.status_code
                    if not 200 <= r.status_code < 300:
                        error = f"HTTP {r.status_code}"
                except (httpx.HTTPError, httpx.InvalidURL, BlockedAddress, InvalidInput) as e:
                    error = f"{type(e).__name__}: {e}"
                self.outbox.record_attempt(
                    task.id,
                    WebhookAttempt(
                        webhook_id=msg_id,
                        event=task.status,
                        attempt=attempt,
                        at=time.time(),
                        url=task.webhook_url,
                        status_code=status_code,
                        error=error,
                        duration_ms=(time.perf_counter() - t0) * 1000,
                    ),
                )
                if error is None:
                    self.outbox.move(task.id, WebhookState.DELIVERED)
                    return WebhookState.DELIVERED
                log.info("webhook %s attempt %d to %s failed: %s", msg_id, attempt, task.webhook_url, error)
                if attempt <= s.webhook_retries:
                    self.sleep(s.webhook_backoff * 2 ** (attempt - 1))
        self.outbox.move(task.id, WebhookState.FAILED)
        return WebhookState.FAILED
