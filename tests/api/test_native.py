"""The native API end to end against a real server: create, result files, history, cancel, events, chains."""

from __future__ import annotations

import io
import json
import time

import httpx
from PIL import Image

from qedit import imageio
from tests.support.images import b64, data_uri, png_bytes
from tests.support.server import Server, wait_status

GREEN = (20, 160, 60)


def _create(client: httpx.Client, **fields: object) -> dict:
    body = {"prompt": "make the wall red", "images": [b64(png_bytes(colour=GREEN))], **fields}
    r = client.post("/v1/edits", json=body)
    assert r.status_code == 202, r.text
    return r.json()


def test_edit_is_queued_then_completed_with_a_downloadable_result(client: httpx.Client) -> None:
    created = _create(client, seed=7, output_format="png")
    assert created["status"] in ("created", "processing", "completed")
    task = wait_status(client, created["id"])
    assert task["status"] == "completed", task
    assert task["queue_wait_ms"] is not None and task["inference_ms"] is not None
    out = task["outputs"][0]
    assert (out["seed"], out["width"], out["height"], out["format"]) == (7, 480, 400, "png")
    r = httpx.get(out["url"])  # signed: no key needed
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(r.content))
    assert image.size == (480, 400)
    assert image.convert("RGB").getpixel((5, 5)) == tuple(255 - c for c in GREEN)  # the instant engine inverts
    meta = imageio.read_metadata(r.content)
    assert meta["prompt"] == "make the wall red" and meta["seed"] == "7" and meta["task"] == created["id"]
    assert out["metadata"]["model"] == "instant"


def test_several_outputs_get_consecutive_seeds_and_the_requested_size(client: httpx.Client) -> None:
    task = wait_status(client, _create(client, seed=100, num_images=2, size="512x384", output_format="webp")["id"])
    assert [o["seed"] for o in task["outputs"]] == [100, 101]
    assert {(o["width"], o["height"], o["format"]) for o in task["outputs"]} == {(512, 384, "webp")}
    assert httpx.get(task["outputs"][1]["url"]).headers["content-type"] == "image/webp"


def test_sync_mode_answers_with_the_result(client: httpx.Client) -> None:
    r = client.post("/v1/edits", json={"prompt": "x", "images": [data_uri(png_bytes())], "sync": True, "base64": True})
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert r.json()["status"] == "completed" and out["b64_json"]
    assert Image.open(io.BytesIO(__import__("base64").b64decode(out["b64_json"]))).size == (480, 400)


def test_upload_multipart(client: httpx.Client) -> None:
    files = [("image", ("a.png", png_bytes(), "image/png")), ("image", ("b.jpg", png_bytes(fmt="JPEG"), "image/jpeg"))]
    r = client.post("/v1/edits/upload", files=files, data={"params": json.dumps({"prompt": "swap", "seed": 3})})
    assert r.status_code == 202, r.text
    task = wait_status(client, r.json()["id"])
    assert task["status"] == "completed" and len(task["inputs"]) == 2
    assert [i["source"] for i in task["inputs"]] == ["upload", "upload"]


def test_history_is_newest_first_and_paginated(client: httpx.Client) -> None:
    ids = [_create(client, prompt=f"edit {i}")["id"] for i in range(5)]
    page1 = client.get("/v1/edits", params={"limit": 3}).json()
    assert [t["id"] for t in page1["data"]] == ids[::-1][:3] and page1["has_more"]
    page2 = client.get("/v1/edits", params={"limit": 3, "cursor": page1["next_cursor"]}).json()
    assert [t["id"] for t in page2["data"]] == ids[::-1][3:] and not page2["has_more"]


def test_cancel_a_queued_and_a_running_task(client: httpx.Client) -> None:
    running = _create(client, num_inference_steps=100)  # 100 steps x 30 ms
    queued = _create(client, num_inference_steps=100)
    wait_status(client, running["id"], ("processing",))
    r = client.delete(f"/v1/edits/{queued['id']}")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    client.delete(f"/v1/edits/{running['id']}")
    task = wait_status(client, running["id"])
    assert task["status"] == "cancelled" and task["outputs"] == []
    assert 0 < task["progress"]["step"] < 100  # it stopped between steps


def test_events_stream_queued_steps_and_completion(client: httpx.Client) -> None:
    task = _create(client, num_inference_steps=30)  # 0.9 s: several progress writes
    events = []
    with client.stream("GET", f"/v1/edits/{task['id']}/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                events.append(line.removeprefix("event: "))
    assert events[-1] == "completed"
    assert "step" in events
    assert events.index("step") < events.index("completed")


def test_a_task_can_start_from_an_earlier_output(client: httpx.Client) -> None:
    first = wait_status(client, _create(client, prompt="step one")["id"])
    r = client.post("/v1/edits", json={"prompt": "step two", "images": [f"task://{first['id']}/0"]})
    assert r.status_code == 202, r.text
    second = wait_status(client, r.json()["id"])
    assert second["status"] == "completed" and second["parent_id"] == first["id"]
    chain = json.loads(second["outputs"][0]["metadata"]["chain"])
    assert [step["prompt"] for step in chain] == ["step one", "step two"]
    # inverted twice: back to the original colour
    pixel = Image.open(io.BytesIO(httpx.get(second["outputs"][0]["url"]).content)).convert("RGB").getpixel((1, 1))
    assert pixel == GREEN


def test_a_key_sees_only_its_own_tasks(server: Server, client: httpx.Client) -> None:
    task = _create(client)
    with server.client(server.create_key("other")) as other:
        assert other.get(f"/v1/edits/{task['id']}").status_code == 404
        assert other.delete(f"/v1/edits/{task['id']}").status_code == 404
        assert other.get("/v1/edits").json()["data"] == []
        r = other.post("/v1/edits", json={"prompt": "x", "images": [f"task://{task['id']}/0"]})
        assert r.status_code == 404 and r.json()["error"]["param"] == "images[0]"


def test_failed_edit_reports_the_engine_error(client: httpx.Client) -> None:
    task = wait_status(client, _create(client, prompt="please [fail]")["id"])
    assert task["status"] == "failed" and task["error"]["reason"] == "engine_error"
    assert "fail" in task["error"]["message"] and task["outputs"] == []


def test_webhook_secret_is_per_key(server: Server, client: httpx.Client) -> None:
    mine = client.get("/v1/webhooks/secret").json()["secret"]
    with server.client(server.create_key("other")) as other:
        theirs = other.get("/v1/webhooks/secret").json()["secret"]
    assert mine.startswith("whsec_") and mine != theirs
    assert client.get("/api/v3/webhook/secret").json()["data"]["secret"] == mine


def test_results_expire_with_their_urls(tmp_path) -> None:  # type: ignore[no-untyped-def]
    srv = Server(tmp_path, {"QEDIT_URL_TTL_SECONDS": "4", "QEDIT_AUTH": "none"}).start()
    try:
        with srv.client() as c:
            task = wait_status(c, _create(c)["id"])
            url = task["outputs"][0]["url"]
            assert httpx.get(url).status_code == 200
            tampered = url.replace("sig=", "sig=0")
            assert httpx.get(tampered).status_code == 403
            expires = int(httpx.URL(url).params["expires"])
            time.sleep(max(0.0, expires - time.time()) + 1.5)  # past the expiry, plus one sweep
            r = httpx.get(url)
            assert r.status_code == 410 and "expired" in r.json()["error"]["message"]
            assert not any((tmp_path / "outputs").rglob("*.png"))
            after = c.get(f"/v1/edits/{task['id']}").json()
            assert after["status"] == "completed" and after["outputs"] == []
    finally:
        srv.stop()


def test_a_result_url_of_this_server_is_an_input_without_a_request_to_itself(client: httpx.Client) -> None:
    """Production settings refuse http and loopback URLs, but our own signed result URLs are read locally."""
    first = wait_status(client, _create(client, prompt="one")["id"])
    r = client.post("/v1/edits", json={"prompt": "two", "images": [first["outputs"][0]["url"]]})
    assert r.status_code == 202, r.text
    second = wait_status(client, r.json()["id"])
    assert second["status"] == "completed" and second["parent_id"] == first["id"]
    tampered = first["outputs"][0]["url"].replace("sig=", "sig=1")
    r = client.post("/v1/edits", json={"prompt": "two", "images": [tampered]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "images[0]"
