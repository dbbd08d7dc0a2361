"""Webhook delivery: signed, retried with backoff, every attempt recorded on the task.

A task's terminal transition sets ``webhook_state = pending`` in the same update, so a delivery
survives a crash: whoever finds it pending (the worker right away, else the sweeper) moves it to
``sending`` with a conditional update and delivers it. The webhook id is the same for every retry of
one event, so receivers can de-duplicate. WaveSpeed tasks are signed WaveSpeed's way (``v3,`` hex),
the others the Standard Webhooks way (``v1,`` base64); both over ``{id}.{timestamp}.{body}``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import httpx

from qedit.config import Settings
from qedit.errors import InvalidInput
from qedit.service.fetch import BlockedAddress, UrlPolicy, check_url, guarded_client
from qedit.service.signing import standard_signature, wavespeed_signature, webhook_secret
from qedit.service.storage import LocalStorage
from qedit.service.store import TaskStore, WebhookAttempt
from qedit.service.views import webhook_body

log = logging.getLogger("qedit.webhooks")


def validate_webhook_url(url: str, settings: Settings, field: str) -> str:
    """At submit time: https (http only in dev), <= 2048 chars, no internal address literal."""
    policy = UrlPolicy(allow_private=settings.allow_private_urls, allow_http=settings.allow_http_urls)
    check_url(url, policy, field)
    return url


class WebhookSender:
    def __init__(
        self,
        settings: Settings,
        store: TaskStore,
        storage: LocalStorage,
        secret: bytes,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.store = store
        self.storage = storage
        self.secret = secret
        self.policy = UrlPolicy(allow_private=settings.allow_private_urls, allow_http=settings.allow_http_urls)
        self.sleep = sleep

    def max_duration(self) -> float:
        """The longest one delivery can take (all attempts and waits): older 'sending' means it died."""
        s = self.settings
        waits = sum(s.webhook_backoff * 2**i for i in range(s.webhook_retries))
        return (s.webhook_retries + 1) * (s.webhook_timeout + 1) + waits

    def deliver(self, task_id: str) -> str | None:
        """Deliver the task's pending event; returns the final state, or None if not ours to send."""
        if not self.store.set_webhook_state(task_id, "sending", expect="pending"):
            return None
        task = self.store.get(task_id)
        if task is None or not task.webhook_url:
            return None
        body = json.dumps(webhook_body(task, self.storage), separators=(",", ":")).encode()
        msg_id = f"msg_{task.id}_{task.status}"
        whsec = webhook_secret(self.secret, task.key_id)
        sign = wavespeed_signature if task.webhook_style == "wavespeed" else standard_signature
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
                    r = client.post(task.webhook_url, content=body, headers=headers)
                    status_code = r.status_code
                    if not 200 <= r.status_code < 300:
                        error = f"HTTP {r.status_code}"
                except (httpx.HTTPError, BlockedAddress, InvalidInput) as e:
                    error = f"{type(e).__name__}: {e}"
                self.store.record_webhook_attempt(
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
                    self.store.set_webhook_state(task.id, "delivered")
                    return "delivered"
                log.info("webhook %s attempt %d to %s failed: %s", msg_id, attempt, task.webhook_url, error)
                if attempt <= s.webhook_retries:
                    self.sleep(s.webhook_backoff * 2 ** (attempt - 1))
        self.store.set_webhook_state(task.id, "failed")
        return "failed"
