"""The aggregator's task API: submit with image URLs, poll the task, get the callback."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from tests.support.images import png_bytes
from tests.support.receiver import Receiver
from tests.support.server import wait_status


@pytest.fixture
def host() -> Iterator[Receiver]:
    r = Receiver(files={"/cat.png": png_bytes((600, 400)), "/mask.png": png_bytes((600, 400), mode="L")})
    yield r
    r.close()


def test_task_from_image_urls_to_callback(dev_client: httpx.Client, host: Receiver) -> None:
    r = dev_client.post(
        "/v1/images/generations",
        json={
            "model": "qwen-image-edit",
            "prompt": "把猫换成狗 and keep the sofa",
            "image_urls": [host.url + "/cat.png"],
            "mask_url": host.url + "/mask.png",
            "callback_url": host.url + "/done",
            "n": 2,
        },
    )
    assert r.status_code == 200, r.text
    created = r.json()
    assert created["status"] == "queued" and created["model"] == "qwen-image-edit"
    task = wait_status(dev_client, created["task_id"], ("succeeded", "failed"), path="/v1/images/generations/{id}")
    assert task["status"] == "succeeded" and task["progress"] == 100 and len(task["data"]) == 2
    assert task["expires_at"] - task["completed_at"] == 24 * 3600
    assert Image.open(io.BytesIO(httpx.get(task["data"][0]["url"]).content)).size == (600, 400)
    assert dev_client.get(f"/v1/tasks/{created['task_id']}").json() == task
    callback = json.loads(host.wait_for(1)[0].body)
    assert callback["task_id"] == created["task_id"] and callback["status"] == "succeeded"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"model": "dall-e-3"}, "model", ["qwen-image-edit"]),
        ({"prompt": "猫" * 2001}, "prompt", ["2000 tokens", "2001"]),
        ({"prompt": "x" * 8001}, "prompt", ["8000 characters", "8001"]),
        ({"image_urls": []}, "image_urls", ["at least 1"]),
        ({"image_urls": ["https://example.com/a.png"] * 4}, "image_urls", ["at most 3"]),
        ({"callback_url": "http://example.com/cb"}, "callback_url", ["https"]),
        ({"callback_url": "https://10.0.0.8/cb"}, "callback_url", ["10.0.0.8"]),
        ({"callback_url": "https://e.com/" + "x" * 2100}, "callback_url", ["2048"]),
    ],
)
def test_bad_requests_name_the_field(client: httpx.Client, body: dict, field: str, words: list[str]) -> None:
    full = {"model": "qwen-image-edit", "prompt": "x", "image_urls": ["https://example.com/a.png"], **body}
    r = client.post("/v1/images/generations", json=full)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == field and all(w in err["message"] for w in words), err
