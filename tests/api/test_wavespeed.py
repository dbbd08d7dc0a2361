"""WaveSpeed v3 compatibility: the official ``wavespeed`` SDK, unchanged, with its base URL pointed here."""

from __future__ import annotations

import base64
import io

import httpx
import wavespeed
from PIL import Image

from tests.support.images import b64, data_uri, png_bytes
from tests.support.server import Server, wait_status

RESULT_KEYS = {"id", "model", "outputs", "urls", "has_nsfw_contents", "status", "created_at", "error", "timings"}


def _sdk(server: Server, key: str) -> wavespeed.Client:
    return wavespeed.Client(api_key=key, base_url=server.url, max_connection_retries=0)


def test_sdk_run_polls_to_the_result(server: Server, key: str) -> None:
    out = _sdk(server, key).run(
        "wavespeed-ai/qwen-image/edit",
        {"prompt": "red wall", "image": data_uri(png_bytes()), "output_format": "png"},
        poll_interval=0.05,
        timeout=30,
    )
    assert len(out["outputs"]) == 1
    r = httpx.get(out["outputs"][0])
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).format == "PNG"


def test_sdk_sync_mode_with_base64_output(server: Server, key: str) -> None:
    out = _sdk(server, key).run(
        "wavespeed-ai/qwen-image/edit",
        {"prompt": "x", "image": b64(png_bytes()), "enable_base64_output": True, "size": "512*384"},
        enable_sync_mode=True,
        timeout=30,
    )
    uri = out["outputs"][0]
    assert uri.startswith("data:image/jpeg;base64,")  # output_format defaults to jpeg
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    assert (image.format, image.size) == ("JPEG", (512, 384))


def test_sdk_reports_a_failed_task(server: Server, key: str) -> None:
    inputs = {"prompt": "[fail]", "image": b64(png_bytes())}
    result = _sdk(server, key).run_no_throw("wavespeed-ai/qwen-image/edit", inputs, poll_interval=0.05, timeout=30)
    assert result["status"] == "failed" and "fail" in result["error"] and result["task_id"] != "unknown"


def test_edit_plus_takes_several_images(server: Server, key: str) -> None:
    out = _sdk(server, key).run(
        "wavespeed-ai/qwen-image/edit-plus",
        {
            "prompt": "the cat from picture 1 on the sofa of picture 2",
            "images": [b64(png_bytes()), b64(png_bytes((512, 512)))],
        },
        poll_interval=0.05,
        timeout=30,
    )
    assert Image.open(io.BytesIO(httpx.get(out["outputs"][0]).content)).size == (512, 512)  # the last is edited


def test_result_has_exactly_the_documented_shape(client: httpx.Client) -> None:
    r = client.post("/api/v3/wavespeed-ai/qwen-image/edit", json={"prompt": "x", "image": b64(png_bytes()), "seed": 42})
    assert r.status_code == 200
    submitted = r.json()
    assert (submitted["code"], submitted["message"]) == (200, "success")
    data = submitted["data"]
    assert set(data) == RESULT_KEYS and data["status"] in ("created", "processing", "completed")
    done = wait_status(client, data["id"], path="/api/v3/predictions/{id}/result")
    data = done["data"]
    assert set(data) == RESULT_KEYS
    assert data["status"] == "completed" and data["model"] == "wavespeed-ai/qwen-image/edit"
    assert data["urls"]["get"].endswith(f"/api/v3/predictions/{data['id']}/result")
    assert data["has_nsfw_contents"] == [False] and data["error"] == ""
    assert isinstance(data["timings"]["inference"], int) and data["timings"]["inference"] >= 0
    assert data["created_at"].endswith("Z") and len(data["created_at"]) == len("2023-04-01T12:34:56.789Z")
    assert data["outputs"][0].split("?")[0].endswith(".jpg")


def test_predictions_list_and_unknown_id(client: httpx.Client) -> None:
    ids = [
        client.post("/api/v3/wavespeed-ai/qwen-image/edit", json={"prompt": f"p{i}", "image": b64(png_bytes())}).json()[
            "data"
        ]["id"]
        for i in range(3)
    ]
    listing = client.get("/api/v3/predictions", params={"page_size": 2}).json()["data"]
    assert listing["total"] == 3 and [p["id"] for p in listing["items"]] == ids[::-1][:2]
    r = client.get("/api/v3/predictions/" + "f" * 32 + "/result")
    assert r.status_code == 404 and r.json()["code"] == 404


def test_sdk_upload_then_edit_the_uploaded_image(server: Server, key: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes((512, 448)))
    sdk = _sdk(server, key)
    url = sdk.upload(str(path))
    assert url.startswith(server.url + "/v1/files/")
    out = sdk.run("wavespeed-ai/qwen-image/edit", {"prompt": "x", "image": url}, poll_interval=0.05, timeout=30)
    assert Image.open(io.BytesIO(httpx.get(out["outputs"][0]).content)).size == (512, 448)
