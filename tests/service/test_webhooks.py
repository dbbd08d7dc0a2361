"""The webhook sender on its own: signatures a customer can verify, retries, the outbox's record.

Deliveries go to a real HTTP receiver on 127.0.0.1; the sender's ``sleep`` is injected, so retries
take no time and the backoff it asked for is visible.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
from typing import Any

import pytest

from qedit.interfaces import webhook_payload
from qedit.service.instant import InstantEngine
from qedit.service.records import Interface, TaskOptions, WebhookState
from qedit.service.signing import webhook_secret
from qedit.service.webhooks import WebhookSender
from qedit.service.wiring import Core
from qedit.service.worker import Worker
from tests.support.receiver import Receiver
from tests.support.server import free_port
from tests.support.tasks import current, queue_edit


def standard_ok(whsec: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks verification: the reference library if installed, else its spec by hand."""
    try:
        from standardwebhooks import Webhook  # type: ignore[import-not-found]
    except ImportError:
        key = base64.b64decode(whsec.removeprefix("whsec_"))
        signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
        expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        return any(hmac.compare_digest(sig, expected) for sig in headers["webhook-signature"].split())
    try:
        Webhook(whsec).verify(body, headers)
    except Exception:
        return False
    return True


def wavespeed_ok(whsec: str, headers: dict[str, str], body: bytes) -> bool:
    """WaveSpeed's: ``v3,`` + hex HMAC-SHA256 of ``{id}.{timestamp}.{raw body}``, keyed by the secret string."""
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    return headers["webhook-signature"] == "v3," + hmac.new(whsec.encode(), signed, hashlib.sha256).hexdigest()


def finished(core: Core, **kw: Any) -> str:
    """A task run to its end, its webhook left pending for the sender under test."""
    tid = queue_edit(core, **kw)
    Worker(core, engine_factory=lambda s: InstantEngine(), on_webhook=lambda t: None).run_next(tid)
    assert current(core, tid).webhook_state == WebhookState.PENDING
    return tid


def sender(core: Core, sleeps: list[float]) -> WebhookSender:
    return WebhookSender(
        core.settings, core.tasks, core.outbox, core.storage, core.secret, webhook_payload, sleep=sleeps.append
    )


def test_native_webhook_is_signed_standard_webhooks_with_the_keys_own_secret(core: Core, receiver: Receiver) -> None:
    tid = finished(core, key_id="key-a", webhook_url=receiver.url + "/hook")
    assert sender(core, []).deliver(tid) == WebhookState.DELIVERED
    (got,) = receiver.received
    headers, body = got.headers, got.body
    assert headers["webhook-id"] == f"msg_{tid}_completed" and headers["content-type"] == "application/json"
    assert abs(int(headers["webhook-timestamp"]) - time.time()) < 60
    assert headers["webhook-signature"].startswith("v1,")
    whsec = webhook_secret(core.secret, "key-a")
    assert whsec.startswith("whsec_")
    assert standard_ok(whsec, headers, body)
    assert not standard_ok(whsec, headers, body.replace(b"completed", b"failed"))  # tampered
    assert not standard_ok(webhook_secret(core.secret, "key-b"), headers, body)  # another key's secret
    payload = json.loads(body)
    assert payload["id"] == tid and payload["status"] == "completed" and payload["object"] == "edit"
    own = core.storage.own_file(payload["outputs"][0]["url"])  # a signed URL of the stored output
    assert own is not None and own[0] == tid and own[1] == core.storage.read(current(core, tid).outputs[0].file)
    assert current(core, tid).webhook_state == WebhookState.DELIVERED


def test_wavespeed_webhook_is_signed_the_wavespeed_way(core: Core, receiver: Receiver) -> None:
    tid = finished(
        core,
        key_id="key-a",
        interface=Interface.WAVESPEED,
        options=TaskOptions(client_model="wavespeed-ai/qwen-image/edit"),
        webhook_url=receiver.url + "/ws",
    )
    assert sender(core, []).deliver(tid) == WebhookState.DELIVERED
    (got,) = receiver.received
    whsec = webhook_secret(core.secret, "key-a")
    assert got.headers["webhook-signature"].startswith("v3,")
    assert wavespeed_ok(whsec, got.headers, got.body)
    assert not wavespeed_ok(whsec, got.headers, got.body + b" ")
    assert not standard_ok(whsec, got.headers, got.body)
    payload = json.loads(got.body)
    assert payload["id"] == tid and payload["status"] == "completed"
    assert payload["model"] == "wavespeed-ai/qwen-image/edit" and len(payload["outputs"]) == 1


def test_a_500_is_retried_with_doubling_backoff_then_delivered_and_every_attempt_recorded(
    make_core: Any, receiver: Receiver
) -> None:
    core: Core = make_core(webhook_retries=3, webhook_backoff=0.5)
    tid = finished(core, webhook_url=receiver.url + "/hook")
    receiver.fail_first = 2
    sleeps: list[float] = []
    assert sender(core, sleeps).deliver(tid) == WebhookState.DELIVERED
    assert sleeps == [0.5, 1.0]
    attempts = core.outbox.attempts(tid)
    assert [(a.attempt, a.status_code, a.error) for a in attempts] == [
        (1, 500, "HTTP 500"),
        (2, 500, "HTTP 500"),
        (3, 200, None),
    ]
    assert {(a.webhook_id, a.event, a.url) for a in attempts} == {
        (f"msg_{tid}_completed", "completed", receiver.url + "/hook")
    }
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 1  # one id: receivers de-duplicate
    assert len({r.body for r in receiver.received}) == 1
    assert current(core, tid).webhook_state == WebhookState.DELIVERED


def test_after_the_last_retry_the_delivery_is_failed_and_not_sent_again(make_core: Any, receiver: Receiver) -> None:
    core: Core = make_core(webhook_retries=2, webhook_backoff=1)
    tid = finished(core, webhook_url=receiver.url + "/hook")
    receiver.fail_first = 99
    sleeps: list[float] = []
    s = sender(core, sleeps)
    assert s.deliver(tid) == WebhookState.FAILED
    assert sleeps == [1, 2] and len(receiver.received) == 3
    assert [a.status_code for a in core.outbox.attempts(tid)] == [500, 500, 500]
    assert current(core, tid).webhook_state == WebhookState.FAILED
    assert s.deliver(tid) is None and len(receiver.received) == 3


def test_an_unreachable_receiver_is_recorded_as_a_connection_error(make_core: Any) -> None:
    core: Core = make_core(webhook_retries=1)
    tid = finished(core, webhook_url=f"http://127.0.0.1:{free_port()}/hook")  # nothing listens there
    assert sender(core, []).deliver(tid) == WebhookState.FAILED
    attempts = core.outbox.attempts(tid)
    assert [a.status_code for a in attempts] == [None, None]
    assert all((a.error or "").startswith("ConnectError") for a in attempts)


def test_a_private_address_is_refused_when_not_allowed_and_the_attempt_recorded(
    make_core: Any, receiver: Receiver
) -> None:
    core: Core = make_core(allow_private_urls=False, webhook_retries=1)
    tid = finished(core, webhook_url=receiver.url + "/hook")
    assert sender(core, []).deliver(tid) == WebhookState.FAILED
    assert receiver.received == []
    attempts = core.outbox.attempts(tid)
    assert len(attempts) == 2 and all(a.status_code is None for a in attempts)
    assert all("loopback" in (a.error or "") for a in attempts)


def test_a_name_resolving_to_a_private_address_is_refused_at_connect(
    make_core: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    core: Core = make_core(allow_private_urls=False, webhook_retries=0)
    tid = finished(core, webhook_url=receiver.url.replace("127.0.0.1", "hooks.example") + "/hook")
    real = socket.getaddrinfo
    monkeypatch.setattr(
        socket, "getaddrinfo", lambda h, *a, **k: real("127.0.0.1" if h == "hooks.example" else h, *a, **k)
    )
    assert sender(core, []).deliver(tid) == WebhookState.FAILED
    assert receiver.received == []
    (attempt,) = core.outbox.attempts(tid)
    assert (attempt.error or "").startswith("BlockedAddress: hooks.example resolves to a loopback")


def test_of_two_concurrent_deliveries_only_one_sends(core: Core, receiver: Receiver) -> None:
    tid = finished(core, webhook_url=receiver.url + "/hook")
    s = sender(core, [])
    start = threading.Barrier(2)
    results: list[WebhookState | None] = []

    def deliver() -> None:
        start.wait()
        results.append(s.deliver(tid))

    threads = [threading.Thread(target=deliver) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results, key=str) == [None, WebhookState.DELIVERED]
    assert len(receiver.received) == 1 and len(core.outbox.attempts(tid)) == 1


def test_nothing_is_sent_for_a_task_without_a_pending_event(core: Core, receiver: Receiver) -> None:
    unfinished = queue_edit(core, webhook_url=receiver.url)
    no_hook = queue_edit(core)
    Worker(core, engine_factory=lambda s: InstantEngine(), on_webhook=lambda t: None).run_next(no_hook)
    s = sender(core, [])
    assert s.deliver(unfinished) is None and s.deliver(no_hook) is None
    assert receiver.received == [] and core.outbox.attempts(unfinished) == []
    assert current(core, unfinished).webhook_state == WebhookState.NONE


def test_max_duration_bounds_one_delivery_with_all_its_attempts_and_waits(make_core: Any) -> None:
    core: Core = make_core(webhook_retries=3, webhook_timeout=10, webhook_backoff=2)
    assert core.webhooks.max_duration() == 4 * 11 + (2 + 4 + 8)
