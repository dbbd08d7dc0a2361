"""Webhooks against a local receiver: signatures a customer can verify, retries, attempts on the task."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
from collections.abc import Iterator

import httpx
import pytest

from tests.support.images import b64, png_bytes
from tests.support.receiver import Receiver
from tests.support.server import wait_status


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _standard_ok(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks verification, written from its spec (not from qedit's code)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(sig == f"v1,{expected}" for sig in headers["webhook-signature"].split())


def _wavespeed_ok(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """WaveSpeed's: ``v3,`` + hex HMAC-SHA256 of ``{id}.{timestamp}.{raw body}``."""
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    return headers["webhook-signature"] == "v3," + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def test_native_webhook_is_retried_with_one_id_and_every_attempt_recorded(
    dev_client: httpx.Client, receiver: Receiver
) -> None:
    receiver.fail_first = 2
    r = dev_client.post(
        "/v1/edits", json={"prompt": "x", "images": [b64(png_bytes())], "webhook_url": receiver.url + "/hook"}
    )
    task_id = r.json()["id"]
    got = receiver.wait_for(3)
    assert len(got) == 3
    assert len({g.headers["webhook-id"] for g in got}) == 1  # stable across retries
    gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
    assert gaps[1] > gaps[0] * 1.5  # backoff grows
    secret = dev_client.get("/v1/webhooks/secret").json()["secret"]
    assert all(_standard_ok(secret, g.headers, g.body) for g in got)
    payload = json.loads(got[-1].body)
    assert payload["id"] == task_id and payload["status"] == "completed" and payload["outputs"][0]["url"]
    task = wait_status(dev_client, task_id)
    webhook = task["webhook"]
    for _ in range(40):
        if webhook["state"] == "delivered":
            break
        webhook = dev_client.get(f"/v1/edits/{task_id}").json()["webhook"]
    assert webhook["state"] == "delivered"
    assert [a["status_code"] for a in webhook["attempts"]] == [500, 500, 200]
    assert [a["attempt"] for a in webhook["attempts"]] == [1, 2, 3]


def test_wavespeed_webhook_posts_the_result_data_signed_v3(dev_client: httpx.Client, receiver: Receiver) -> None:
    r = dev_client.post(
        "/api/v3/wavespeed-ai/qwen-image/edit",
        params={"webhook": receiver.url + "/ws"},
        json={"prompt": "x", "image": b64(png_bytes())},
    )
    task_id = r.json()["data"]["id"]
    got = receiver.wait_for(1)[0]
    secret = dev_client.get("/api/v3/webhook/secret").json()["data"]["secret"]
    assert _wavespeed_ok(secret, got.headers, got.body)
    assert not _wavespeed_ok(secret, got.headers, got.body + b" ")
    sent = json.loads(got.body)
    result = dev_client.get(f"/api/v3/predictions/{task_id}/result").json()["data"]
    assert sent == result and sent["status"] == "completed"


def test_failure_and_cancellation_are_posted_too(dev_client: httpx.Client, receiver: Receiver) -> None:
    dev_client.post(
        "/v1/images/generations",
        json={
            "model": "qwen-image-edit",
            "prompt": "[fail]",
            "image_urls": [f"data:image/png;base64,{b64(png_bytes())}"],
            "callback_url": receiver.url + "/agg",
        },
    )
    failed = json.loads(receiver.wait_for(1)[0].body)
    assert failed["status"] == "failed" and failed["error"]["code"] == "engine_error"
    slow = dev_client.post(
        "/v1/edits",
        json={
            "prompt": "x",
            "images": [b64(png_bytes())],
            "num_inference_steps": 100,
            "webhook_url": receiver.url + "/n",
        },
    ).json()
    wait_status(dev_client, slow["id"], ("processing",))
    dev_client.delete(f"/v1/edits/{slow['id']}")
    cancelled = json.loads(receiver.wait_for(2)[1].body)
    assert cancelled["id"] == slow["id"] and cancelled["status"] == "cancelled"


def test_a_receiver_that_never_answers_200_gets_4_attempts(dev_client: httpx.Client, receiver: Receiver) -> None:
    receiver.fail_first = 100
    task_id = dev_client.post(
        "/v1/edits", json={"prompt": "x", "images": [b64(png_bytes())], "webhook_url": receiver.url}
    ).json()["id"]
    assert len(receiver.wait_for(4)) == 4
    for _ in range(50):
        webhook = dev_client.get(f"/v1/edits/{task_id}").json()["webhook"]
        if webhook["state"] == "failed":
            break
        __import__("time").sleep(0.1)
    assert webhook["state"] == "failed" and len(webhook["attempts"]) == 4
    assert len(receiver.received) == 4  # no fifth
