"""End to end with the real engine on the tiny preset: the same server, ``QEDIT_MODEL=tiny``."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import wavespeed
from PIL import Image

from tests.support.images import b64, png_bytes
from tests.support.server import Server, wait_status


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory: pytest.TempPathFactory, tiny_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("tiny"), {"QEDIT_MODEL": "tiny", "QEDIT_DEVICE": "cpu"})
    srv.start(timeout=180)  # readyz waits for the model to load
    yield srv
    srv.stop()


@pytest.fixture
def tiny_key(tiny_server: Server) -> str:
    return tiny_server.create_key()


def test_native_edit_runs_the_model_with_progress_and_metadata(tiny_server: Server, tiny_key: str) -> None:
    with tiny_server.client(tiny_key) as c:
        created = c.post(
            "/v1/edits",
            json={
                "prompt": "make the sky purple",
                "images": [b64(png_bytes((448, 384)))],
                "num_inference_steps": 3,
                "seed": 11,
            },
        ).json()
        events = []
        with c.stream("GET", f"/v1/edits/{created['id']}/events", timeout=120) as r:
            events = [line[7:] for line in r.iter_lines() if line.startswith("event: ")]
        assert events[-1] == "completed", events
        task = c.get(f"/v1/edits/{created['id']}").json()
    out = task["outputs"][0]
    assert (out["width"], out["height"], out["seed"]) == (448, 384, 11)
    assert out["metadata"]["model"] == "tiny" and out["metadata"]["steps"] == "3"
    assert task["progress"] == {"step": 3, "total": 3}
    image = Image.open(io.BytesIO(httpx.get(out["url"]).content))
    assert image.size == (448, 384)


def test_chained_edit_carries_the_history(tiny_server: Server, tiny_key: str) -> None:
    with tiny_server.client(tiny_key) as c:
        body = {"prompt": "step one", "images": [b64(png_bytes())], "num_inference_steps": 1}
        first = wait_status(c, c.post("/v1/edits", json=body).json()["id"], timeout=120)
        second_id = c.post(
            "/v1/edits", json={**body, "prompt": "step two", "images": [f"task://{first['id']}/0"]}
        ).json()["id"]
        second = wait_status(c, second_id, timeout=120)
    assert second["status"] == "completed" and second["parent_id"] == first["id"]
    chain = json.loads(second["outputs"][0]["metadata"]["chain"])
    assert [s["prompt"] for s in chain] == ["step one", "step two"]
    assert second["outputs"][0]["metadata"]["parent"] == f"task://{first['id']}/0"


def test_sdks_work_against_the_real_engine(tiny_server: Server, tiny_key: str) -> None:
    ws = wavespeed.Client(api_key=tiny_key, base_url=tiny_server.url, max_connection_retries=0)
    out = ws.run(
        "wavespeed-ai/qwen-image/edit",
        {"prompt": "x", "image": b64(png_bytes()), "size": "512*512"},
        poll_interval=0.1,
        timeout=120,
    )
    assert Image.open(io.BytesIO(httpx.get(out["outputs"][0]).content)).size == (512, 512)
    client = openai.OpenAI(api_key=tiny_key, base_url=f"{tiny_server.url}/v1", max_retries=0, timeout=120)
    result = client.images.edit(image=("a.png", png_bytes(), "image/png"), prompt="x", response_format="b64_json")
    assert Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json))).size == (480, 400)


def test_more_images_than_the_model_takes_is_refused_at_submit(tiny_server: Server, tiny_key: str) -> None:
    with tiny_server.client(tiny_key) as c:
        r = c.post("/api/v3/wavespeed-ai/qwen-image/edit-plus", json={"prompt": "x", "images": [b64(png_bytes())] * 2})
        assert r.status_code == 400 and r.json()["field"] == "images" and "at most 1" in r.json()["message"]
        assert c.get("/v1/edits").json()["data"] == []
