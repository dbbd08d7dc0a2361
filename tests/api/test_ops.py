"""Health, readiness, metrics, OpenAPI docs, and the rule that the API never imports torch."""

from __future__ import annotations

import subprocess
import sys

import httpx

from tests.support.images import b64, png_bytes
from tests.support.server import Server, wait_status


def test_health_ready_and_docs(server: Server) -> None:
    assert httpx.get(server.url + "/healthz").json()["status"] == "ok"
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200 and ready.json()["model"] == "instant"
    assert httpx.get(server.url + "/docs").status_code == 200
    spec = httpx.get(server.url + "/openapi.json").json()
    for path in (
        "/api/v3/wavespeed-ai/qwen-image/edit",
        "/api/v3/wavespeed-ai/qwen-image/edit-plus",
        "/api/v3/wavespeed-ai/qwen-image/edit-lora",
        "/api/v3/wavespeed-ai/qwen-image/edit-plus-lora",
        "/api/v3/wavespeed-ai/qwen-image/edit-2511-lora",
        "/api/v3/predictions/{task_id}/result",
        "/api/v3/predictions",
        "/v1/images/generations",
        "/v1/images/edits",
        "/v1/edits",
        "/v1/edits/{task_id}",
        "/v1/edits/{task_id}/events",
        "/v1/usage",
    ):
        assert path in spec["paths"], path
    seed = spec["components"]["schemas"]["WaveSpeedEdit"]["properties"]["seed"]
    assert (seed["minimum"], seed["maximum"]) == (-1, 2147483647)
    steps = spec["components"]["schemas"]["EditCreate"]["properties"]["num_inference_steps"]
    assert "maximum" in str(steps)
    loras = spec["components"]["schemas"]["WaveSpeedEditLora"]["properties"]["loras"]
    assert loras["maxItems"] == 3 and "LoRA folder" in loras["description"]
    scale = spec["components"]["schemas"]["LoraSpec"]["properties"]["scale"]
    assert (scale["minimum"], scale["maximum"]) == (-4, 4)


def test_metrics_show_queue_latency_and_failures(server: Server, client: httpx.Client) -> None:
    wait_status(client, client.post("/v1/edits", json={"prompt": "x", "images": [b64(png_bytes())]}).json()["id"])
    wait_status(client, client.post("/v1/edits", json={"prompt": "[fail]", "images": [b64(png_bytes())]}).json()["id"])
    text = httpx.get(server.url + "/metrics").text
    assert 'qedit_queue_depth{status="created"}' in text
    assert 'qedit_task_seconds_bucket{le="0.5",status="completed"}' in text
    assert 'qedit_tasks_failed{reason="engine_error"}' in text
    assert 'qedit_task_failures_total{reason="engine_error"}' in text
    assert "qedit_engine_ready 1.0" in text


def test_the_api_layer_and_task_store_never_import_torch(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Submitting a task for the real model (workers off) goes through API, inputs, store: no torch."""
    image = b64(png_bytes())
    code = f"""
import sys
from qedit.config import Settings
from qedit.api.app import create_app
from fastapi.testclient import TestClient
app = create_app(Settings(model="tiny", data_dir={str(tmp_path)!r}, auth="none", workers=0))
with TestClient(app) as c:
    r = c.post("/v1/edits", json={{"prompt": "x", "images": [{image!r}]}})
    assert r.status_code == 202 and r.json()["status"] == "created", r.text
    assert c.get("/metrics").status_code == 200
assert "torch" not in sys.modules, "torch was imported"
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
