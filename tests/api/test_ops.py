"""Health, readiness, metrics, OpenAPI docs, and the rule that the API never imports torch."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from qedit.api.app import create_app
from qedit.config import Settings
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


def test_readyz_and_metrics_report_the_engine_options_and_batching(tmp_path: Path) -> None:
    settings = Settings(
        model="instant",
        data_dir=tmp_path,
        auth="none",
        quantize="int8",
        step_cache="dbcache",
        cache_threshold=0.12,
        batch_size=3,
        batch_wait=2.0,
        instant_step_delay=0.02,
    )
    with TestClient(create_app(settings)) as c:
        deadline = time.monotonic() + 20
        while (ready := c.get("/readyz")).status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        engine = ready.json()["engine"]
        assert engine["model"] == "instant" and (engine["batch_size"], engine["batch_wait"]) == (3, 2.0)
        assert engine["options"] == {
            "offload": "none",
            "quantize": "int8",
            "gguf_file": None,
            "cache": "dbcache",
            "cache_threshold": 0.12,
            "cache_warmup": 8,
            "compile": False,
            "cfg_batch": "auto",
            "text_cache": 16,
        }
        body = {"prompt": "x", "images": [b64(png_bytes())]}
        ids = [c.post("/v1/edits", json={**body, "seed": i}).json()["id"] for i in range(3)]
        assert [wait_status(c, i)["status"] for i in ids] == ["completed"] * 3
        text = c.get("/metrics").text
    info = next(line for line in text.splitlines() if line.startswith("qedit_engine_info{"))
    for label in ('model="instant"', 'quantize="int8"', 'cache="dbcache"', 'cache_threshold="0.12"', 'batch_size="3"'):
        assert label in info, info
    assert "qedit_batch_size_count 1.0" in text and "qedit_batch_size_sum 3.0" in text  # one run of 3 tasks
